"""The ``fakefs`` pytest fixture: a fresh fakefs mount per test.

The project's plugin imports :func:`fakefs` from here. It is a plain
(synchronous) fixture, so plain and trio tests alike can request it; the
daemon is another process, so a trio test doing blocking I/O on the mount
cannot deadlock it.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._client import FakeFS, mount

__all__ = ["fakefs", "fakefs_prerequisites", "require_fakefs"]


def fakefs_prerequisites() -> list[str]:
    """What this machine lacks to run a fakefs mount (empty: nothing)."""
    missing = []
    if not os.path.exists("/dev/fuse"):
        missing.append("/dev/fuse is missing (no FUSE in this kernel/container)")
    if importlib.util.find_spec("pyfuse3") is None:
        missing.append("pyfuse3 is not installed (pip install 'cowprobe[fakefs]')")
    if importlib.util.find_spec("trio") is None:
        missing.append("trio is not installed (pip install 'cowprobe[fakefs]')")
    if os.geteuid() != 0:
        missing.append("fakefs tests need root (allow_other, chown passthrough)")
    return missing


def require_fakefs() -> None:
    """Skip (or, with CI=true, fail) naming what fakefs lacks here."""
    from probe.pytest_plugin import require

    for reason in fakefs_prerequisites():
        require(False, reason)


@pytest.fixture
def fakefs(tmp_path: Path) -> Iterator[FakeFS]:
    """A mounted fakefs (no rules armed) over ``tmp_path/backing`` at
    ``tmp_path/mnt``; unmounted after the test, also when it fails."""
    require_fakefs()
    backing = tmp_path / "backing"
    mnt = tmp_path / "mnt"
    backing.mkdir()
    mnt.mkdir()
    with mount(backing, mnt) as fs:
        yield fs
