"""A bad place the user named -- a file for a directory, a read-only mount,
a directory not ours to write -- is one "OPTION PATH: strerror" line and
exit 2 from `cowprobe lab` and `cowprobe conformance`, never a traceback,
and nothing is written anywhere."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _kernel_view import mounts_under

from probe.lab import KINDS, missing_prerequisites
from probe.pytest_plugin import require

COWPROBE = [sys.executable, "-m", "probe.cli"]


def _cowprobe(*argv: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([*COWPROBE, *argv], capture_output=True, text=True, check=False,
                         timeout=300, **kwargs)
    assert "Traceback" not in out.stderr
    return out


@pytest.fixture
def readonly(tmp_path: Path) -> Iterator[Path]:
    """A read-only bind mount of an empty directory (EROFS for every write)."""
    require(os.geteuid() == 0, "root (a read-only bind mount)")
    require(shutil.which("mount") is not None, "mount(8)")
    backing, ro = tmp_path / "backing", tmp_path / "ro"
    backing.mkdir()
    ro.mkdir()
    subprocess.run(["mount", "--bind", str(backing), str(ro)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True)
        yield ro
    finally:
        subprocess.run(["umount", str(ro)], check=True)
    assert mounts_under(tmp_path) == []
    assert list(backing.iterdir()) == []  # nothing was written through the mount


def test_lab_clean_on_a_file_base_dir(tmp_path: Path) -> None:
    base = tmp_path / "file"
    base.write_bytes(b"x")
    out = _cowprobe("lab", "--base-dir", str(base), "clean")
    assert out.stderr == f"cowprobe lab clean: --base-dir {base}: Not a directory\n"
    assert out.returncode == 2
    assert base.read_bytes() == b"x"


def test_lab_up_on_a_read_only_base_dir(readonly: Path) -> None:
    require(not missing_prerequisites(["tmpfs"]), "the lab's tmpfs lane")
    out = _cowprobe("lab", "--base-dir", str(readonly), "up", "--kinds", "tmpfs")
    assert out.stderr == f"cowprobe lab up: --base-dir {readonly}: Read-only file system\n"
    assert out.returncode == 2
    assert out.stdout == ""


def test_lab_matrix_on_a_read_only_base_dir(readonly: Path) -> None:
    why = missing_prerequisites(KINDS)
    require(not why, "; ".join(why))
    out = _cowprobe("lab", "--base-dir", str(readonly), "matrix")
    assert out.stderr == f"cowprobe lab matrix: --base-dir {readonly}: Read-only file system\n"
    assert out.returncode == 2
    assert out.stdout == ""


def _conformance(src: Path, dst: Path, *extra: str,
                 **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return _cowprobe("conformance", "--no-progress", "--source-dir", str(src),
                     "--dest-dir", str(dst), *extra, **kwargs)


def test_conformance_into_a_read_only_dest_dir(tmp_path: Path, readonly: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    out = _conformance(src, readonly)
    assert out.stderr == f"cowprobe conformance: --dest-dir {readonly}: Read-only file system\n"
    assert out.returncode == 2
    assert list(src.iterdir()) == []  # the source's work directory is gone again


def test_conformance_junit_on_a_read_only_mount(tmp_path: Path, readonly: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    junit = readonly / "j.xml"
    out = _conformance(src, dst, "--junit", str(junit))
    assert out.stderr == f"cowprobe conformance: --junit {junit}: Read-only file system\n"
    assert out.returncode == 2
    assert out.stdout == ""  # refused before the suite ran


@pytest.fixture
def world_dir() -> Iterator[Path]:
    # Not under tmp_path: pytest's base is root-only, and the user below
    # must reach these directories.
    d = Path(tempfile.mkdtemp(prefix="cowprobe-robust-"))
    try:
        d.chmod(0o755)
        yield d
    finally:
        shutil.rmtree(d)


def test_conformance_as_another_user_from_an_unwritable_source_dir(world_dir: Path) -> None:
    require(os.geteuid() == 0, "root (to run as uid 65534)")
    src, dst = world_dir / "src", world_dir / "dst"
    src.mkdir(mode=0o755)  # root's: not writable for uid 65534
    dst.mkdir()
    os.chown(dst, 65534, 65534)
    out = _conformance(src, dst, user=65534, group=65534, extra_groups=[],
                       env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert out.stderr == f"cowprobe conformance: --source-dir {src}: Permission denied\n"
    assert out.returncode == 2
    assert list(src.iterdir()) == [] and list(dst.iterdir()) == []
