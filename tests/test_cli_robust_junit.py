"""`cowprobe conformance --junit FILE` writes FILE and nothing else: a
device, FIFO or directory at FILE is refused before the suite runs, and a
symlink planted at a temporary name is never written through."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from probe.pytest_plugin import require

COWPROBE = [sys.executable, "-m", "probe.cli"]


def _dirs(tmp_path: Path) -> list[str]:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    # One scenario: the case is quick wherever tmp_path lives.
    return ["conformance", "--no-progress", "--source-dir", str(src), "--dest-dir", str(dst),
            "--scenario", "clone-on-cow"]


def _conformance(tmp_path: Path, junit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COWPROBE, *_dirs(tmp_path), "--junit", str(junit)],
                          capture_output=True, text=True, check=False, timeout=120)


def _refused(out: subprocess.CompletedProcess[str], junit: Path, why: str) -> None:
    assert "Traceback" not in out.stderr
    assert out.stderr == f"cowprobe conformance: --junit {junit}: {why}\n"
    assert out.returncode == 2
    assert out.stdout == ""  # refused before the suite ran: no table


def _special(path: Path, kind: str) -> None:
    require(os.geteuid() == 0, "root (mknod)")
    if kind == "fifo":
        os.mkfifo(path, 0o600)
    else:
        # Our own node with /dev/null's numbers, in tmp_path: never a real /dev node.
        os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))


@pytest.mark.parametrize(("kind", "what"), [("fifo", "a FIFO"), ("chr", "a character device")])
def test_a_special_file_at_the_junit_path_is_refused_before_the_run(
        tmp_path: Path, kind: str, what: str) -> None:
    junit = tmp_path / "junit.xml"
    _special(junit, kind)
    before = os.lstat(junit)
    out = _conformance(tmp_path, junit)
    _refused(out, junit, f"destination is {what}, not a regular file: not replaced")
    after = os.lstat(junit)
    assert (after.st_ino, after.st_mode, after.st_rdev) == (before.st_ino, before.st_mode,
                                                            before.st_rdev)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst", "junit.xml", "src"]


def test_a_directory_at_the_junit_path_is_refused_before_the_run(tmp_path: Path) -> None:
    junit = tmp_path / "reports"
    junit.mkdir()
    out = _conformance(tmp_path, junit)
    _refused(out, junit, "destination is a directory")
    assert list(junit.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst", "reports", "src"]


def test_a_missing_junit_directory_is_one_line(tmp_path: Path) -> None:
    junit = tmp_path / "absent" / "junit.xml"
    _refused(_conformance(tmp_path, junit), junit, "No such file or directory")


def test_a_symlink_at_the_old_temporary_name_is_not_followed(tmp_path: Path) -> None:
    # The old temporary was `.NAME.tmp-PID`. The process's pid is known
    # before it runs cowprobe: it waits on stdin until the symlink is
    # planted, then execs (same pid) the real CLI.
    victim = tmp_path / "outside"
    victim.write_bytes(b"precious")
    junit = tmp_path / "out" / "junit.xml"
    junit.parent.mkdir()
    argv = [*COWPROBE, *_dirs(tmp_path), "--junit", str(junit)]
    code = f"import os, sys\nsys.stdin.read(1)\nos.execv(sys.executable, {argv!r})"
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        planted = junit.parent / f".junit.xml.tmp-{proc.pid}"
        planted.symlink_to(victim)
        _, err = proc.communicate("go", timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in err
    assert proc.returncode == 3, err  # every case n/a here; the file is written anyway
    assert victim.read_bytes() == b"precious"
    assert stat.S_ISREG(os.lstat(junit).st_mode)
    assert junit.read_bytes().startswith(b"<?xml")
    # Ours gone, the planted link left alone: nothing else in the directory.
    assert sorted(p.name for p in junit.parent.iterdir()) == [planted.name, "junit.xml"]
    assert planted.is_symlink()


def test_a_symlink_at_the_junit_path_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "outside"
    victim.write_bytes(b"precious")
    junit = tmp_path / "junit.xml"
    junit.symlink_to(victim)
    out = _conformance(tmp_path, junit)
    assert "Traceback" not in out.stderr
    assert out.returncode == 3, out.stderr
    assert victim.read_bytes() == b"precious"
    assert stat.S_ISREG(os.lstat(junit).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst", "junit.xml", "outside", "src"]


def test_an_existing_report_is_replaced_and_no_temporary_is_left(tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    junit.write_bytes(b"old")
    out = _conformance(tmp_path, junit)
    assert out.returncode == 3, out.stderr
    assert out.stderr.splitlines()[0] == f"JUnit XML written to {junit}"
    assert junit.read_bytes().startswith(b"<?xml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst", "junit.xml", "src"]
