"""`cowprobe lab up | clean | matrix`, run as a user would: a subprocess."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _kernel_view import loops_under, mounts_under

from probe.cli.lab import Expect, deviation
from probe.lab import cleanup_stale

COWPROBE = [sys.executable, "-m", "probe.cli"]




@pytest.fixture
def base() -> Iterator[Path]:
    # Private to this test: no other engineer's reaper races the checks.
    b = Path(tempfile.mkdtemp(prefix="cowprobe-test-cli-", dir="/tmp"))
    try:
        yield b
    finally:
        cleanup_stale(b)
        assert mounts_under(b) == []
        assert list(b.iterdir()) == [], "a lab root was left behind"
        b.rmdir()


def start_up(base: Path, *kinds: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    proc = subprocess.Popen(
        [*COWPROBE, "lab", "--base-dir", str(base), "up", "--json", "--kinds", *kinds],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:  # blocks until the lab is up and printed
        lines.append(line)
        if line == "}\n":
            break
    assert lines, f"lab up printed nothing (exit {proc.wait()})"
    return proc, json.loads("".join(lines))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_up_keeps_the_lab_until_a_signal_then_tears_down(base: Path, sig: signal.Signals) -> None:
    proc, doc = start_up(base, "btrfs", "xfs", "tmpfs")
    root = Path(doc["root"])
    try:
        assert [fs["kind"] for fs in doc["filesystems"]] == ["btrfs", "xfs", "tmpfs"]
        assert sorted(mounts_under(root)) == sorted(fs["mountpoint"] for fs in doc["filesystems"])
        assert len(loops_under(root)) == 2
        # While it runs it is a live lab: nobody's cleanup may touch it.
        assert cleanup_stale(base) == []
        assert len(mounts_under(root)) == 3
    finally:
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "torn down" in err
    assert mounts_under(root) == [] and loops_under(root) == [] and not root.exists()


def test_clean_removes_a_killed_lab(base: Path) -> None:
    proc, doc = start_up(base, "ext4", "tmpfs")
    root = Path(doc["root"])
    proc.kill()
    proc.communicate(timeout=120)
    assert len(mounts_under(root)) == 2  # SIGKILL: nothing was torn down

    out = subprocess.run(
        [*COWPROBE, "lab", "--base-dir", str(base), "clean", "--json"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"removed": [str(root)]}
    assert mounts_under(root) == [] and loops_under(root) == [] and not root.exists()


def test_up_names_the_missing_prerequisite(base: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        [*COWPROBE, "lab", "--base-dir", str(base), "up", "--kinds", "btrfs"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PATH": str(tmp_path)},  # no mkfs, no losetup
    )
    assert out.returncode == 1
    assert "mkfs.btrfs missing (install btrfs-progs)" in out.stderr
    assert "losetup missing" in out.stderr


def test_matrix_matches_design(base: Path) -> None:
    out = subprocess.run(
        [*COWPROBE, "lab", "--base-dir", str(base), "matrix", "--json"],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    doc = json.loads(out.stdout)
    assert doc["ok"] is True
    cells = {c["scenario"]: (c["outcome"], c["errno"]) for c in doc["cells"]}
    assert all(c["ok"] for c in doc["cells"]), [c for c in doc["cells"] if not c["ok"]]
    assert cells == {
        "same fs (btrfs)": ("cloned", None),
        "same fs (xfs)": ("cloned", None),
        "same fs (xfs-noreflink)": ("unsupported", "EOPNOTSUPP"),
        "same fs (ext4)": ("unsupported", "EOPNOTSUPP"),
        "same fs (tmpfs)": ("unsupported", "EOPNOTSUPP"),
        "cross-fs btrfs->xfs": ("unsupported", "EXDEV"),
        "cross-fs xfs->btrfs": ("unsupported", "EXDEV"),
        "cross-fs btrfs->tmpfs": ("unsupported", "EXDEV"),
        "cross-fs ext4->btrfs": ("unsupported", "EXDEV"),
        "bind mount of btrfs": ("cloned", None),
        "NOCOW dest dir": ("unsupported", "EINVAL"),
        "read-only bind": ("error", "EROFS"),
        "dest parent missing": ("error", "ENOENT"),
        "source missing": ("source_vanished", None),
    }


def test_matrix_table_for_people(base: Path) -> None:
    out = subprocess.run(
        [*COWPROBE, "lab", "--base-dir", str(base), "matrix"],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "NOCOW dest dir" in out.stdout and "EINVAL" in out.stdout
    assert "fail" not in out.stdout


def test_deviation_names_what_differs() -> None:
    assert deviation(Expect("cloned", None), "cloned", None) is None
    assert deviation(Expect("unsupported", errno.EXDEV), "unsupported", errno.EXDEV) is None
    assert deviation(Expect("cloned", None), "unsupported", errno.EXDEV) == (
        "expected cloned, got unsupported"
    )
    assert deviation(Expect("unsupported", errno.EINVAL), "unsupported", errno.EOPNOTSUPP) == (
        "expected EINVAL, got EOPNOTSUPP"
    )
    assert deviation(Expect("error", errno.EROFS), "error", None) == (
        "expected EROFS, got no errno"
    )
