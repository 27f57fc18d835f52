"""The plugin's fixtures: lab directories and fakefs (FUSE and syscall layer).

fakefs is imported inside the fixtures only: the plugin loads (and every
lab fixture works) without its FUSE extra.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from probe.lab import Lab, LabUnavailable

from ._state import REFLINK_KINDS, _missing, _session


@pytest.fixture(scope="session")
def cowprobe_lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    """The whole lab (btrfs, XFS reflink on/off, ext4, tmpfs), built once per session."""
    lab = Lab(sizes_mb=_session(request.config).sizes)
    try:
        lab.start()
    except LabUnavailable as err:
        _missing(f"cannot build the cowprobe lab: {err}")
    try:
        yield lab
    finally:
        lab.close()


def _scratch_name(request: pytest.FixtureRequest) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)[:40].strip("-") or "test"


def _kind_dir(request: pytest.FixtureRequest, kind: str) -> Path:
    lab = _session(request.config).lab_for(kind)
    return lab.scratch_dir(kind, _scratch_name(request))


def _dir_fixture(kind: str) -> Any:
    def fixture(request: pytest.FixtureRequest) -> Path:
        return _kind_dir(request, kind)

    fixture.__doc__ = f"A fresh directory on the lab's {kind} filesystem."
    fixture.__name__ = kind.replace("-", "_") + "_dir"
    return pytest.fixture(name=fixture.__name__)(fixture)


btrfs_dir = _dir_fixture("btrfs")
xfs_dir = _dir_fixture("xfs")
xfs_noreflink_dir = _dir_fixture("xfs-noreflink")
ext4_dir = _dir_fixture("ext4")
tmpfs_dir = _dir_fixture("tmpfs")


@pytest.fixture
def lab_dir(request: pytest.FixtureRequest) -> Path:
    """A fresh directory on each lab filesystem in turn (see ``cowprobe_fs``)."""
    kind = getattr(request, "param", None)
    if kind is None:  # requested indirectly, without pytest_generate_tests
        kind = "btrfs"
    if kind not in REFLINK_KINDS and request.node.get_closest_marker("needs_reflink"):
        # Only when every lane the test names cannot clone (otherwise
        # pytest_generate_tests leaves those out).
        _missing(f"needs reflink: the {kind} lab filesystem does not clone")
    return _kind_dir(request, str(kind))


class DirPair(NamedTuple):
    source: Path
    dest: Path


@pytest.fixture
def cross_fs_dirs(request: pytest.FixtureRequest) -> DirPair:
    """Source on btrfs, dest on XFS: both clone, but not across (EXDEV)."""
    return DirPair(_kind_dir(request, "btrfs"), _kind_dir(request, "xfs"))


@pytest.fixture
def fakefs(tmp_path: Path) -> Iterator[Any]:
    """A mounted fakefs (no rules armed) over ``tmp_path/backing`` at
    ``tmp_path/mnt``; unmounted after the test, also when it fails. A plain
    fixture (the daemon is another process), so trio tests can use it too."""
    import fakefs as _fakefs

    require_fakefs()
    backing, mnt = tmp_path / "backing", tmp_path / "mnt"
    backing.mkdir()
    mnt.mkdir()
    with _fakefs.mount(backing, mnt) as fs:
        yield fs


@pytest.fixture
def syscall_faults(tmp_path: Path) -> Iterator[Any]:
    """``arm(rules, root=tmp_path)``: syscall faults (seccomp) on the test's
    thread until the test ends; arming again replaces the rules. Returns
    the ``fakefs.SyscallFaults`` handle (counters, trace)."""
    import contextlib

    import fakefs as _fakefs

    for reason in _fakefs.syscall_missing():
        _missing(reason)
    stack = contextlib.ExitStack()

    def arm(rules: Any, root: str | os.PathLike[str] | None = None) -> Any:
        stack.close()
        return stack.enter_context(_fakefs.syscall_faults(rules, root=root or tmp_path))

    with stack:
        yield arm


def require_fakefs() -> None:
    """Skip (or, in strict mode, fail) naming what a fakefs mount lacks here."""
    import fakefs as _fakefs

    for reason in _fakefs.missing_prerequisites():
        _missing(reason)
