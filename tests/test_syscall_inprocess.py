"""``fakefs.syscall_faults()`` and the ``syscall_faults`` fixture: library
code under syscall faults in this very process, on real lab filesystems.

Each test body runs in a fresh thread (``fresh_thread``): a seccomp filter
outlives its block, and one left on pytest's main thread would make every
later ``fakefs run`` in the session fail (one listener per task: EBUSY).
The fixture test runs in its own pytest process for the same reason.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from _fresh import fresh_thread

import fakefs
import probe
from probe import ReflinkOutcome

pytest_plugins = ("pytester",)

_DATA = os.urandom(64 * 1024)

def _source(d: Path) -> Path:
    (d / "a").write_bytes(_DATA)
    return d / "a"


@pytest.mark.cowprobe_fs("btrfs")
@fresh_thread
def test_try_reflink_unsupported_inside_cloned_after(btrfs_dir: Path) -> None:
    a = _source(btrfs_dir)
    b = btrfs_dir / "b"
    with fakefs.syscall_faults(["FICLONE:b:EXDEV"], root=btrfs_dir) as h:
        assert probe.try_reflink(a, b) is ReflinkOutcome.UNSUPPORTED
        assert not b.exists()
        assert probe.reflink(a, b).errno_name == "EXDEV"
        # Another name in the same block clones for real.
        assert probe.try_reflink(a, btrfs_dir / "c") is ReflinkOutcome.CLONED
    assert [f["hits"] for f in h.faults()] == [2]
    assert probe.try_reflink(a, b) is ReflinkOutcome.CLONED


@pytest.mark.cowprobe_fs("btrfs")
@fresh_thread
def test_threads_started_inside_the_block_are_covered(btrfs_dir: Path) -> None:
    a = _source(btrfs_dir)
    seen: list[Any] = []
    with fakefs.syscall_faults(["FICLONE:*:EOPNOTSUPP"], root=btrfs_dir):
        t = threading.Thread(target=lambda: seen.append(probe.reflink(a, btrfs_dir / "t")))
        t.start()
        t.join()
    assert seen[0].outcome is ReflinkOutcome.UNSUPPORTED and seen[0].errno_name == "EOPNOTSUPP"


@pytest.mark.cowprobe_fs("btrfs")
@fresh_thread
def test_children_started_inside_the_block_are_covered(btrfs_dir: Path) -> None:
    _source(btrfs_dir)
    with fakefs.syscall_faults(["FICLONE:*:EXDEV"], root=btrfs_dir) as h:
        res = subprocess.run(["cp", "--reflink=always", "a", "b"], cwd=btrfs_dir,
                             capture_output=True, text=True, check=False)
    assert res.returncode == 1 and "Invalid cross-device link" in res.stderr
    assert [f["hits"] for f in h.faults()] == [1]


@fresh_thread
def test_a_file_outside_the_root_never_matches(tmp_path: Path) -> None:
    root, other = tmp_path / "root", tmp_path / "other"
    root.mkdir()
    other.mkdir()
    with fakefs.syscall_faults(["fdatasync:*:EIO"], root=root) as h:
        fd = os.open(other / "f", os.O_CREAT | os.O_WRONLY, 0o600)
        try:
            os.fdatasync(fd)  # outside: runs for real
        finally:
            os.close(fd)
        fd = os.open(root / "f", os.O_CREAT | os.O_WRONLY, 0o600)
        try:
            with pytest.raises(OSError) as err:
                os.fdatasync(fd)
        finally:
            os.close(fd)
    assert err.value.errno == 5
    trace = h.trace()
    assert [(r["path"], r["result"]) for r in trace] == [(None, "continued"), ("f", "EIO")]


@fresh_thread
def test_rename_rules_match_both_names_relative_to_cwd(tmp_path: Path) -> None:
    (tmp_path / "old").write_text("x")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with fakefs.syscall_faults(["rename,renameat,renameat2:new*:EXDEV:src=old"],
                                   root=tmp_path) as h:
            with pytest.raises(OSError) as err:
                os.rename("old", "newname")
            os.rename("old", "other")  # the dest glob does not match
    finally:
        os.chdir(cwd)
    assert err.value.errno == 18
    assert (tmp_path / "other").exists()
    assert [f["hits"] for f in h.faults()] == [1]


@fresh_thread
def test_bad_rules_and_nesting_are_refused_before_anything(tmp_path: Path) -> None:
    with (pytest.raises(fakefs.RuleError, match="unknown syscall 'read'"),
          fakefs.syscall_faults(["read:*:EIO"], root=tmp_path)):
        pass
    with (fakefs.syscall_faults(["fsync:*:EIO"], root=tmp_path),
          pytest.raises(fakefs.SyscallLayerError, match="do not nest"),
          fakefs.syscall_faults(["fsync:*:EIO"], root=tmp_path)):
        pass


def test_fixture_arms_rules_for_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_downstream="""
        import pytest

        def test_truncate(syscall_faults, tmp_path):
            h = syscall_faults(["ftruncate:t:EFBIG:times=1"])
            with open(tmp_path / "t", "wb") as fh:
                with pytest.raises(OSError) as err:
                    fh.truncate(10)
                fh.truncate(10)  # times=1: the second call runs
            assert err.value.errno == 27
            assert h.faults()[0]["hits"] == 1
    """)
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    res.assert_outcomes(passed=1)


def test_profiles_parse_and_cite_a_source() -> None:
    for prof in fakefs.PROFILES.values():
        assert prof.source
        for text in prof.rules:
            assert fakefs.parse_rule(text, layer="syscall").syscall


def test_fakefs_imports_no_pytest() -> None:
    code = "import sys, fakefs, fakefs.cli; print('pytest' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.cowprobe_fs("btrfs")
@fresh_thread
def test_range_ioctls_match_dest_and_source_read_from_memory(btrfs_dir: Path) -> None:
    from probe import _linux

    a = _source(btrfs_dir)
    (btrfs_dir / "d").write_bytes(_DATA)  # identical bytes: dedupe has work to do
    rules = ["FICLONERANGE:r*:EXDEV:src=a", "FIDEDUPERANGE:d:EPERM:src=a"]
    with fakefs.syscall_faults(rules, root=btrfs_dir) as h:
        src = os.open(a, os.O_RDONLY)
        r = os.open(btrfs_dir / "r", os.O_CREAT | os.O_RDWR, 0o600)
        other = os.open(btrfs_dir / "o", os.O_CREAT | os.O_RDWR, 0o600)
        d = os.open(btrfs_dir / "d", os.O_RDWR)
        try:
            with pytest.raises(OSError) as clone_err:
                _linux.ficlonerange(r, src, 0, 0, 0)
            _linux.ficlonerange(other, src, 0, 0, 0)  # dest glob does not match: real
            with pytest.raises(OSError) as dedupe_err:
                _linux.fideduperange(src, 0, len(_DATA), d, 0)
        finally:
            for fd in (src, r, other, d):
                os.close(fd)
    assert clone_err.value.errno == 18 and dedupe_err.value.errno == 1
    assert (btrfs_dir / "o").read_bytes() == _DATA
    assert [f["hits"] for f in h.faults()] == [1, 1]
    srcs = {(t["op"], t["path"], t["src"]) for t in h.trace()}
    assert ("FICLONERANGE", "r", "a") in srcs and ("FIDEDUPERANGE", "d", "a") in srcs


def _answering_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "fakefs-seccomp"]


def test_the_answering_thread_ends_with_the_last_filtered_thread(tmp_path: Path) -> None:
    # Once no filtered thread is left, the process is back to its own
    # threads (it may fork workers again); a later block starts it anew.
    def block() -> None:
        with fakefs.syscall_faults(["fsync:*:EIO"], root=tmp_path) as h:
            fd = os.open(tmp_path / "f", os.O_CREAT | os.O_WRONLY, 0o600)
            try:
                with pytest.raises(OSError):
                    os.fsync(fd)
            finally:
                os.close(fd)
        assert h.faults()[0]["hits"] == 1

    for _ in range(2):
        fresh_thread(block)()
        for t in _answering_threads():
            t.join(timeout=60)
        assert _answering_threads() == []


def _blocked_signals(tid: int) -> int:
    with open(f"/proc/self/task/{tid}/status", encoding="ascii") as f:
        return next(int(line.split()[1], 16) for line in f if line.startswith("SigBlk:"))


@fresh_thread
def test_the_answering_thread_leaves_signals_to_the_main_thread(tmp_path: Path) -> None:
    # A signal delivered to the answering thread would never interrupt the
    # main thread's blocking wait (see _supervisor._deaf).
    with fakefs.syscall_faults(["fsync:nothing:EIO"], root=tmp_path):
        fd = os.open(tmp_path / "f", os.O_CREAT | os.O_WRONLY, 0o600)
        try:
            os.fsync(fd)  # answered: the thread exists now
        finally:
            os.close(fd)
        masks = [_blocked_signals(t.native_id) for t in _answering_threads()
                 if t.native_id is not None]
    assert masks
    for mask in masks:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            assert mask >> (sig - 1) & 1, (sig, hex(mask))


def _fdatasync_each(d: Path, names: list[str]) -> list[int]:
    errors = []
    for name in names:
        fd = os.open(d / name, os.O_CREAT | os.O_WRONLY, 0o600)
        try:
            os.fdatasync(fd)
            errors.append(0)
        except OSError as err:
            errors.append(err.errno or 0)
        finally:
            os.close(fd)
    return errors


@pytest.mark.parametrize("trigger", ["", ":pid=PID"])
@fresh_thread
def test_each_call_is_counted_and_traced_once_as_it_was_decided(tmp_path: Path,
                                                                 trigger: str) -> None:
    # Calls no glob matches are answered the short way (one readlink);
    # the others are decided in full. Either way one count and one record,
    # and the record a pid= rule needs names the process, not the thread
    # (this body runs in a thread of its own: the two differ).
    rule = "fdatasync:b:EIO" + trigger.replace("PID", str(os.getpid()))
    with fakefs.syscall_faults([rule], root=tmp_path) as h:
        assert _fdatasync_each(tmp_path, ["a", "b", "a"]) == [0, 5, 0]
    assert h.counters()["syscalls"] == {"fdatasync": 3}
    trace = h.trace()
    assert [(r["path"], r["result"]) for r in trace] == [
        ("a", "continued"), ("b", "EIO"), ("a", "continued")]
    assert {r["tgid"] for r in trace} == {os.getpid()} if trigger.startswith(":pid") \
        else {r["pid"] for r in trace} == {threading.get_native_id()}
    assert [f["hits"] for f in h.faults()] == [1]


@fresh_thread
def test_a_source_rule_records_the_source_of_calls_it_does_not_match(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(_DATA)
    with fakefs.syscall_faults(["copy_file_range:b:EIO:src=a"], root=tmp_path) as h:
        src = os.open(tmp_path / "a", os.O_RDONLY)
        try:
            for name in ("x", "b"):
                dst = os.open(tmp_path / name, os.O_CREAT | os.O_WRONLY, 0o600)
                try:
                    os.copy_file_range(src, dst, len(_DATA), 0, 0)
                except OSError as err:
                    assert (name, err.errno) == ("b", 5)
                finally:
                    os.close(dst)
        finally:
            os.close(src)
    assert [(r["path"], r["src"], r["result"]) for r in h.trace()] == [
        ("x", "a", "continued"), ("b", "a", "EIO")]
