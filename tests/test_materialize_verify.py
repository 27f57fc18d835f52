"""Sharing verification (FIEMAP) happens only on request (issue 15 §1): the
default path issues exactly the syscalls cp does, and the report says
whether the sharing was verified."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from probe.materialize import materialize
from probe.pytest_plugin import require

_FILES = 6


def _tree(root: Path) -> list[tuple[str, str]]:
    jobs = []
    for i in range(_FILES):
        p = root / "src" / f"d{i % 2}" / f"f{i}"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(64 * 1024))
        jobs.append((str(p), str(root / "wt" / f"d{i % 2}" / f"f{i}")))
    return jobs


@pytest.mark.parametrize("fs", ["btrfs", "xfs"])
def test_verify_reports_shared_bytes(fs: str, request: pytest.FixtureRequest) -> None:
    root: Path = request.getfixturevalue(f"{fs}_dir")
    report = materialize(_tree(root), measure_sharing=True)
    assert report.ok and report.cloned == _FILES
    assert report.sharing_verified
    assert report.bytes_shared is not None and report.bytes_shared >= _FILES * 64 * 1024
    assert report.to_dict()["totals"]["sharing_verified"] is True


def test_default_does_not_verify(xfs_dir: Path) -> None:
    report = materialize(_tree(xfs_dir))
    assert report.ok and report.cloned == _FILES
    assert not report.sharing_verified and report.bytes_shared is None
    totals = report.to_dict()["totals"]
    assert totals["sharing_verified"] is False and totals["bytes_shared"] is None


def _ioctls(argv: list[str]) -> tuple[dict[str, object], list[str]]:
    """Run `cowprobe` under strace; the JSON report and the ioctl lines."""
    require(shutil.which("strace") is not None, "strace not installed (scripts/bootstrap)")
    log = subprocess.run(
        ["strace", "-f", "-qq", "-e", "trace=ioctl", "-o", "/dev/stderr",
         sys.executable, "-m", "probe.cli", *argv],
        capture_output=True, text=True, check=True,
    )
    return json.loads(log.stdout), [ln for ln in log.stderr.splitlines() if "ioctl(" in ln]


@pytest.mark.parametrize("verify", [False, True])
def test_cli_issues_fiemap_only_with_verify(btrfs_dir: Path, verify: bool) -> None:
    _tree(btrfs_dir)
    argv = ["materialize", "--json", str(btrfs_dir / "src"), str(btrfs_dir / "wt")]
    doc, ioctls = _ioctls(argv[:1] + ["--verify"] * verify + argv[1:])
    totals = doc["totals"]
    assert isinstance(totals, dict) and totals["cloned"] == _FILES
    fiemaps = [ln for ln in ioctls if re.search(r"FS_IOC_FIEMAP|0xc020660b", ln, re.I)]
    clones = [ln for ln in ioctls if re.search(r"FICLONE\b|0x40049409", ln, re.I)]
    assert len(clones) == _FILES
    if verify:
        # one per cloned source (a 64 KiB file has one extent: one call)
        assert len(fiemaps) >= _FILES
        assert totals["sharing_verified"] is True and totals["bytes_shared"] > 0
    else:
        assert fiemaps == []
        assert totals["sharing_verified"] is False and totals["bytes_shared"] is None
