"""The policy behind the platform seam, for what this machine cannot make
the kernel say: macOS's clonefile(2) with Darwin's errno values, and ENOSYS
(which no Linux filesystem here returns from FICLONE and FUSE cannot carry).

The stand-ins replace only the clone primitive; the pre-check, the ENOENT
re-check and the dest bookkeeping are the real code on real files.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import probe
from probe import ReflinkOutcome, ReflinkResult, SpecialFileError, _linux, materialize
from probe._macos import MACOS_ERRNOS
from probe._outcome import HOST_ERRNOS, classify
from probe._platform import Platform, current, linux, macos, unsupported_platform
from probe._reflink import reflink_at
from probe.lab import Lab
from probe.materialize import _batch

DARWIN_AT_FDCWD = -2
# <sys/errno.h> on Darwin
D_ENOENT, D_EIO, D_EEXIST, D_EXDEV, D_EINVAL = 2, 5, 17, 18, 22
D_ENOTSUP, D_ENOSYS, D_EOPNOTSUPP = 45, 78, 102


@dataclass
class FakeClonefileat:
    """clonefileat(2) as macOS would answer: 0, or -1 with errno set.

    ``fail_with`` None means success (the dest is made as clonefile would:
    the bytes and the mode). ``before_fail`` runs before failing, e.g. to
    delete the source the way a concurrent prune would.
    """

    fail_with: int | None = None
    before_fail: Callable[[], None] | None = None
    calls: list[tuple[int, bytes, int, bytes, int]] = field(default_factory=list)
    errno_value: int = 0

    def __call__(self, src_dir: int, src: bytes, dst_dir: int, dst: bytes, flags: int) -> int:
        self.calls.append((src_dir, src, dst_dir, dst, flags))
        if self.fail_with is None:
            dest = os.fsdecode(dst)
            target = dest if dst_dir == DARWIN_AT_FDCWD else f"/proc/self/fd/{dst_dir}/{dest}"
            shutil.copy2(os.fsdecode(src), target)
            return 0
        if self.before_fail is not None:
            self.before_fail()
        self.errno_value = self.fail_with
        return -1

    def get_errno(self) -> int:
        return self.errno_value


@pytest.fixture
def d(cowprobe_lab: Lab) -> Path:
    return cowprobe_lab.scratch_dir("btrfs", "seam")


@pytest.fixture
def src(d: Path) -> Path:
    p = d / "src"
    p.write_bytes(os.urandom(64 * 1024))
    p.chmod(0o755)
    return p


def on_macos(fake: FakeClonefileat) -> Platform:
    return macos(fake, fake.get_errno)


# ------------------------------------------------------------------ macOS


def test_macos_success_is_cloned_and_calls_clonefileat_correctly(d: Path, src: Path) -> None:
    fake = FakeClonefileat()
    result = reflink_at(str(src), str(d / "dst"), None, platform=on_macos(fake))
    assert result == ReflinkResult(ReflinkOutcome.CLONED, None)
    assert fake.calls == [
        (DARWIN_AT_FDCWD, os.fsencode(src), DARWIN_AT_FDCWD, os.fsencode(d / "dst"), 0)
    ]
    assert (d / "dst").read_bytes() == src.read_bytes()


def test_macos_dest_relative_to_dir_fd(d: Path, src: Path) -> None:
    fake = FakeClonefileat()
    dir_fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        result = reflink_at(str(src), "rel-dst", dir_fd, platform=on_macos(fake))
    finally:
        os.close(dir_fd)
    assert result.outcome is ReflinkOutcome.CLONED
    assert fake.calls[0][2:] == (dir_fd, b"rel-dst", 0)
    assert (d / "rel-dst").exists()


@pytest.mark.parametrize(
    ("darwin_errno", "name"),
    [
        (D_ENOTSUP, "ENOTSUP"),
        (D_EOPNOTSUPP, "EOPNOTSUPP"),
        (D_EXDEV, "EXDEV"),
        (D_ENOSYS, "ENOSYS"),
        (D_EINVAL, "EINVAL"),
    ],
)
def test_macos_unsupported_errnos(d: Path, src: Path, darwin_errno: int, name: str) -> None:
    # ENOTSUP (45) and EOPNOTSUPP (102) are two values on Darwin; a
    # classifier that only knew Linux's single 95 would call 45 an error.
    fake = FakeClonefileat(fail_with=darwin_errno)
    result = reflink_at(str(src), str(d / "dst"), None, platform=on_macos(fake))
    assert result == ReflinkResult(ReflinkOutcome.UNSUPPORTED, darwin_errno), name
    assert not os.path.lexists(d / "dst")


def test_macos_classification_uses_darwin_values_not_the_hosts(d: Path, src: Path) -> None:
    # 95 is Linux's EOPNOTSUPP and means nothing on Darwin: reading macOS
    # errnos with the host's table would turn it into UNSUPPORTED.
    fake = FakeClonefileat(fail_with=95)
    with pytest.raises(OSError) as exc:
        reflink_at(str(src), str(d / "dst"), None, platform=on_macos(fake))
    assert exc.value.errno == 95
    assert MACOS_ERRNOS.unsupported == {45, 102, 18, 78, 22}


def test_macos_enoent_with_source_gone_is_vanished(d: Path, src: Path) -> None:
    fake = FakeClonefileat(fail_with=D_ENOENT, before_fail=src.unlink)
    result = reflink_at(str(src), str(d / "dst"), None, platform=on_macos(fake))
    assert result == ReflinkResult(ReflinkOutcome.SOURCE_VANISHED, D_ENOENT)
    assert not os.path.lexists(d / "dst")


def test_macos_enoent_with_source_present_is_an_error(d: Path, src: Path) -> None:
    fake = FakeClonefileat(fail_with=D_ENOENT)
    with pytest.raises(FileNotFoundError) as exc:
        reflink_at(str(src), str(d / "missing-dir" / "dst"), None, platform=on_macos(fake))
    assert exc.value.errno == D_ENOENT
    assert exc.value.filename == str(src)
    assert exc.value.filename2 == str(d / "missing-dir" / "dst")


@pytest.mark.parametrize("darwin_errno", [D_EIO, D_EEXIST, 13, 28])  # EACCES, ENOSPC
def test_macos_other_errnos_are_errors(d: Path, src: Path, darwin_errno: int) -> None:
    fake = FakeClonefileat(fail_with=darwin_errno)
    with pytest.raises(OSError) as exc:
        reflink_at(str(src), str(d / "dst"), None, platform=on_macos(fake))
    assert exc.value.errno == darwin_errno


def test_macos_missing_source_never_calls_clonefileat(d: Path) -> None:
    fake = FakeClonefileat()
    result = reflink_at(str(d / "gone"), str(d / "dst"), None, platform=on_macos(fake))
    assert result == ReflinkResult(ReflinkOutcome.SOURCE_VANISHED, None)
    assert fake.calls == []


def test_macos_fifo_source_is_refused_before_clonefileat(d: Path) -> None:
    os.mkfifo(d / "fifo")
    fake = FakeClonefileat()
    with pytest.raises(SpecialFileError):
        reflink_at(str(d / "fifo"), str(d / "dst"), None, platform=on_macos(fake))
    assert fake.calls == []


def test_classify_with_the_macos_table() -> None:
    never = pytest.fail  # the re-check must not run for non-ENOENT errnos
    for e in (45, 102, 18, 78, 22):
        assert classify(e, lambda: never("re-check"), MACOS_ERRNOS) is ReflinkOutcome.UNSUPPORTED
    assert classify(2, lambda: True, MACOS_ERRNOS) is ReflinkOutcome.SOURCE_VANISHED
    assert classify(2, lambda: False, MACOS_ERRNOS) is None
    assert classify(5, lambda: True, MACOS_ERRNOS) is None
    assert classify(None, lambda: True, MACOS_ERRNOS) is None


# ------------------------------------------------------------------ Linux


def _raising(err: int) -> Callable[[int, int], None]:
    def ficlone(dst_fd: int, src_fd: int) -> None:
        # Prove the seam hands over real descriptors: the dest exists now.
        assert stat.S_ISREG(os.fstat(dst_fd).st_mode)
        raise OSError(err, os.strerror(err))

    return ficlone


def test_linux_enosys_is_unsupported_and_leaves_no_dest(d: Path, src: Path) -> None:
    plat = linux(ficlone=_raising(errno.ENOSYS))
    result = reflink_at(str(src), str(d / "dst"), None, platform=plat)
    assert result == ReflinkResult(ReflinkOutcome.UNSUPPORTED, errno.ENOSYS)
    assert sorted(os.listdir(d)) == ["src"], "the dest created for FICLONE must be removed"


def test_linux_eio_from_ficlone_is_an_error_naming_both_paths(d: Path, src: Path) -> None:
    plat = linux(ficlone=_raising(errno.EIO))
    with pytest.raises(OSError) as exc:
        reflink_at(str(src), str(d / "dst"), None, platform=plat)
    assert exc.value.errno == errno.EIO
    assert (exc.value.filename, exc.value.filename2) == (str(src), str(d / "dst"))
    assert sorted(os.listdir(d)) == ["src"]


def test_unsupported_platform_says_unsupported(d: Path, src: Path) -> None:
    result = reflink_at(str(src), str(d / "dst"), None, platform=unsupported_platform())
    assert result.outcome is ReflinkOutcome.UNSUPPORTED
    assert not os.path.lexists(d / "dst")


def test_this_machine_uses_the_linux_platform() -> None:
    plat = current()
    assert plat.name == "linux"
    assert plat.errnos is HOST_ERRNOS


# ------------------------------------------------------- the fd-level clone


def test_linux_platform_offers_the_fd_clone(d: Path, src: Path) -> None:
    clone_fd = current().clone_fd
    assert clone_fd is not None
    with open(src, "rb") as s, open(d / "dst", "wb") as t:
        clone_fd(t.fileno(), s.fileno())
        t.flush()
        assert _linux.shared_bytes(t.fileno()) == src.stat().st_size
    assert (d / "dst").read_bytes() == src.read_bytes()


def test_platforms_without_an_fd_clone_say_none() -> None:
    fake = FakeClonefileat()
    assert on_macos(fake).clone_fd is None
    assert unsupported_platform().clone_fd is None


def test_batch_on_a_platform_without_an_fd_clone_copies(
    d: Path, src: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The batch asks the seam, not sys.platform: given a platform with no
    # descriptor clone (macOS), it spends one call on the pair and copies.
    monkeypatch.setattr(_batch, "current", lambda: on_macos(FakeClonefileat()))
    jobs = [(str(src), str(d / "wt" / f"f{i}")) for i in range(3)]
    report = materialize(jobs)
    assert report.ok and (report.cloned, report.copied) == (0, 3)
    (pair,) = report.pairs
    assert pair.disabled_errno == errno.ENOTSUP and pair.failed_clone_calls == 1
    for _s, dest in jobs:
        assert Path(dest).read_bytes() == src.read_bytes()


def test_only_the_seam_asks_which_os_this_is() -> None:
    root = Path(probe.__file__).parent
    askers = sorted(
        str(p.relative_to(root)) for p in root.rglob("*.py")
        if "sys.platform" in p.read_text(encoding="utf-8")
    )
    assert askers == ["_platform.py"]
