"""probe.try_reflink on fakefs: the scenario matrix's simulated column."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from _fresh import fresh_thread

import fakefs
from fakefs import syscall_faults
from probe import ReflinkOutcome, leftovers, reflink, try_reflink


def _source(fs: fakefs.FakeFS, name: str = "src") -> Path:
    (fs.backing / name).write_bytes(b"s" * 100_000)
    return fs.mountpoint / name


@pytest.mark.parametrize("name", ["EXDEV", "EOPNOTSUPP", "EINVAL"])
def test_errno_on_source_open_is_unsupported(fakefs: fakefs.FakeFS, name: str) -> None:
    src = _source(fakefs)
    fakefs.add_fault(f"open:src:{name}")
    dest = fakefs.mountpoint / "dest"
    result = reflink(src, dest)
    assert result.outcome is ReflinkOutcome.UNSUPPORTED
    assert result.errno == getattr(errno, name)
    assert not dest.exists()
    assert not (fakefs.backing / "dest").exists()


def test_kernel_answers_eopnotsupp_on_the_same_mount(fakefs: fakefs.FakeFS) -> None:
    src = _source(fakefs)
    dest = fakefs.mountpoint / "dest"
    result = reflink(src, dest)
    assert result.outcome is ReflinkOutcome.UNSUPPORTED
    assert result.errno == errno.EOPNOTSUPP
    assert not dest.exists()
    # FICLONE never reached the daemon: no fault was needed for this.
    assert fakefs.counters()["injected"] == 0


def test_kernel_answers_exdev_from_fakefs_to_another_fs(fakefs: fakefs.FakeFS,
                                                       tmp_path: Path) -> None:
    src = _source(fakefs)
    dest = tmp_path / "elsewhere"
    assert try_reflink(src, dest) is ReflinkOutcome.UNSUPPORTED
    assert reflink(src, dest).errno == errno.EXDEV
    assert not dest.exists()


def test_vanish_after_lookup_is_source_vanished(fakefs: fakefs.FakeFS) -> None:
    src = _source(fakefs)
    fakefs.add_fault("lookup:src:vanish")
    dest = fakefs.mountpoint / "dest"
    assert try_reflink(src, dest) is ReflinkOutcome.SOURCE_VANISHED
    assert not dest.exists()
    assert not (fakefs.backing / "dest").exists()
    assert not (fakefs.backing / "src").exists()
    assert fakefs.faults()[0]["hits"] == 1


def test_enoent_on_open_while_the_file_stays_is_an_error(fakefs: fakefs.FakeFS) -> None:
    src = _source(fakefs)
    fakefs.add_fault("open:src:ENOENT")
    dest = fakefs.mountpoint / "dest"
    with pytest.raises(FileNotFoundError):
        try_reflink(src, dest)
    assert src.exists()
    assert not dest.exists()


@pytest.mark.parametrize("name", ["EIO", "EACCES"])
def test_other_errnos_on_open_are_errors(fakefs: fakefs.FakeFS, name: str) -> None:
    src = _source(fakefs)
    fakefs.add_fault(f"open:src:{name}")
    with pytest.raises(OSError) as info:
        try_reflink(src, fakefs.mountpoint / "dest")
    assert info.value.errno == getattr(errno, name)
    assert not (fakefs.backing / "dest").exists()


def test_a_failing_cleanup_never_replaces_the_clone_answer(fakefs: fakefs.FakeFS) -> None:
    # The kernel refuses FICLONE on FUSE (EOPNOTSUPP); removing the dest we
    # created then fails too (EIO). The answer is the clone's, not the
    # cleanup's: an unlink error used to escape and be read as the outcome.
    src = _source(fakefs)
    fakefs.add_fault("unlink:dest:EIO:times=1")
    dest = fakefs.mountpoint / "dest"
    result = reflink(src, dest)
    assert result.outcome is ReflinkOutcome.UNSUPPORTED
    assert result.errno == errno.EOPNOTSUPP
    assert fakefs.counters()["injected"] == 1  # the cleanup really failed
    # ... and the result says what it left: the empty file is still there.
    assert result.leftover == str(dest)
    assert (fakefs.backing / "dest").stat().st_size == 0
    # A refusal whose cleanup worked leaves nothing, and says so.
    again = reflink(src, fakefs.mountpoint / "other")
    assert again.outcome is ReflinkOutcome.UNSUPPORTED and again.leftover is None
    assert not (fakefs.backing / "other").exists()


@fresh_thread
def test_a_raised_clone_error_names_the_dest_it_left(fakefs: fakefs.FakeFS) -> None:
    # Both layers at once: the clone itself fails with EIO (the syscall
    # layer answers FICLONE before the kernel's FUSE refusal), and removing
    # the dest it created fails too (the FUSE side). The raised error is the
    # clone's and must say what stayed.
    src = _source(fakefs)
    fakefs.add_fault("unlink:dest:EIO:times=1")
    dest = fakefs.mountpoint / "dest"
    with syscall_faults(["FICLONE:dest:EIO"], root=fakefs.mountpoint), \
            pytest.raises(OSError) as info:
        reflink(src, dest)
    err = info.value
    assert err.errno == errno.EIO and (err.filename, err.filename2) == (str(src), str(dest))
    assert leftovers(err) == [str(dest)]
    assert f"left behind: {dest}" in err.__notes__
    assert (fakefs.backing / "dest").exists()
    # With the cleanup working, nothing stays and nothing is named.
    with syscall_faults(["FICLONE:other:EIO"], root=fakefs.mountpoint), \
            pytest.raises(OSError) as again:
        reflink(src, fakefs.mountpoint / "other")
    assert leftovers(again.value) == [] and not (fakefs.backing / "other").exists()
