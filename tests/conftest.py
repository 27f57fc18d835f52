"""Fixtures shared across the test modules."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from _files import write_file
from _kernel_view import immutable, mounts_under

from probe.lab import Lab
from probe.pytest_plugin import require


@pytest.fixture
def lab(cowprobe_lab: Lab) -> Lab:
    """The session's real-filesystem lab (the plugin's ``cowprobe_lab``)."""
    return cowprobe_lab


@pytest.fixture
def immutable_dir(lab: Lab) -> Iterator[Path]:
    """A btrfs directory holding ``dst`` (b"old bytes"), made immutable
    (``chattr +i``) for the test: every change in it is EPERM, even for root."""
    d = lab.scratch_dir("btrfs", "immutable")
    write_file(d / "dst", b"old bytes")
    with immutable(d):
        yield d


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
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


@pytest.fixture
def mount_dirs(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(backing holding ``f``, an empty mountpoint); whatever mount a
    failing test left there, live or dead, is removed."""
    from fakefs._mounts import find_mount, unmount
    from probe.pytest_plugin import require_fakefs

    require_fakefs()
    backing, mnt = tmp_path / "backing", tmp_path / "mnt"
    backing.mkdir()
    mnt.mkdir()
    (backing / "f").write_text("file\n")
    try:
        yield backing, mnt
    finally:
        info = find_mount(mnt)
        if info is not None and info.control is not None:
            unmount(mnt, info.mount_id)
