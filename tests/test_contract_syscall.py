"""Issue 14 through syscall-level faults (issue 13 §4): the clone call's own
ENOTTY/EPERM/EAGAIN and fsync's EIO, on real btrfs, for the library and for
whole `cowprobe` processes under `fakefs run`."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _fresh import fresh_thread

import fakefs
from probe import clone_or_copy

FAKEFS = [os.path.join(os.path.dirname(sys.executable), "fakefs")]
COWPROBE = [sys.executable, "-m", "probe.cli"]


def _under_fault(root: Path, rule: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FAKEFS, "run", "--root", str(root), "--fault", rule, "--", *COWPROBE, *cmd],
        capture_output=True, text=True, timeout=120, check=False,
    )


def _pair(d: Path) -> tuple[Path, Path]:
    src = d / "src"
    src.write_bytes(os.urandom(256 * 1024))
    return src, d / "dst"


def test_enotty_from_ficlone_copies_and_names_it(btrfs_dir: Path) -> None:
    src, dst = _pair(btrfs_dir)
    proc = _under_fault(btrfs_dir, "FICLONE:*:ENOTTY", "clone", "--json", str(src), str(dst))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert (doc["action"], doc["reflink"], doc["errno"]) == ("copied", "unsupported", "ENOTTY")
    assert dst.read_bytes() == src.read_bytes()


def test_fsync_eio_fails_and_keeps_dest(btrfs_dir: Path) -> None:
    src, dst = _pair(btrfs_dir)
    dst.write_bytes(b"old bytes")
    proc = _under_fault(btrfs_dir, "fsync:*:EIO", "clone", "--fsync", str(src), str(dst))
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert dst.read_bytes() == b"old bytes"
    assert sorted(os.listdir(btrfs_dir)) == ["dst", "src"], "no temporary may be left"


@fresh_thread
def test_eperm_from_ficlone_copies(btrfs_dir: Path) -> None:
    src, dst = _pair(btrfs_dir)
    with fakefs.syscall_faults(["FICLONE:*:EPERM"], root=btrfs_dir):
        res = clone_or_copy(src, dst)
    assert not res.cloned
    assert res.attempt is not None and res.attempt.errno == errno.EPERM
    assert dst.read_bytes() == src.read_bytes()


@fresh_thread
def test_eagain_is_retried_then_clones(btrfs_dir: Path) -> None:
    src, dst = _pair(btrfs_dir)
    with fakefs.syscall_faults(["FICLONE:*:EAGAIN:times=3"], root=btrfs_dir) as h:
        res = clone_or_copy(src, dst)
    assert [f["hits"] for f in h.faults()] == [3]  # the EAGAINs really arrived
    assert res.cloned and res.transient_errno is None
    assert dst.read_bytes() == src.read_bytes()


@fresh_thread
def test_eagain_past_the_window_copies_and_says_so(
    btrfs_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COWPROBE_EAGAIN_WINDOW", "0.02")
    src, dst = _pair(btrfs_dir)
    with fakefs.syscall_faults(["FICLONE:*:EAGAIN"], root=btrfs_dir):
        res = clone_or_copy(src, dst)
    assert not res.cloned and res.attempt is None
    assert res.transient_errno == errno.EAGAIN
    assert dst.read_bytes() == src.read_bytes()
