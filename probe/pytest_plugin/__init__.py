"""cowprobe's pytest plugin (entry point ``pytest11``).

Gives tests real filesystems from the lab and fault-injecting fakefs mounts.
Where a prerequisite is missing the test is skipped with a reason naming it --
unless strict mode is on (``--cowprobe-strict`` or ``CI=true``), where a
missing prerequisite is a failure: a CI job whose filesystem tests all
skipped must not read as green.

Fixtures
  ``cowprobe_lab``            the whole lab (session; all kinds or skip)
  ``btrfs_dir`` ``xfs_dir`` ``xfs_noreflink_dir`` ``ext4_dir`` ``tmpfs_dir``
                              a fresh directory on that lab filesystem
  ``lab_dir``                 parametrized over every plain lab kind (``cowprobe_fs(...)``
                              chooses others, overlay lanes included; ``needs_reflink``
                              narrows to the ones that clone)
  ``cross_fs_dirs``           a (source, dest) pair on two different filesystems
  ``fakefs``                  a mounted fault-injecting FUSE filesystem
  ``syscall_faults``          ``arm(rules, root=tmp_path)``: faults at FICLONE & co.
                              on real filesystems (seccomp) for the rest of the test
Markers
  ``cowprobe_fs(*kinds)``     needs these lab filesystems or overlay lanes
                              (``overlay-xfs`` ...; and runs ``lab_dir`` on them)
  ``needs_reflink``           needs a directory that clones (``lab_dir`` on btrfs/XFS,
                              ``btrfs_dir``/``xfs_dir``, otherwise the session's
                              temporary directory)
  ``needs_fuse``, ``needs_root``
Options
  ``--cowprobe-strict``       missing prerequisites fail (default on when CI=true)
  ``--cowprobe-tmp-fs=KIND``  put tmp_path's basetemp and TMPDIR on a lab filesystem,
                              so an existing suite runs on btrfs or XFS unchanged -- or
                              on an overlay lane, as in a container (``overlay-xfs``)
  ``--cowprobe-lab-size=SIZE`` lab filesystem sizes (``64G``, ``btrfs=32G,tmpfs=2G``)
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

from probe.lab import KINDS as _KINDS
from probe.lab import LANES as _LANES
from probe.lab import SIZE_HELP, enospc_hints, missing_prerequisites
from probe.lab import parse_sizes as _parse_sizes

from . import _state
from ._fixtures import (
    DirPair,
    btrfs_dir,
    cowprobe_lab,
    cross_fs_dirs,
    ext4_dir,
    fakefs,
    lab_dir,
    require_fakefs,
    syscall_faults,
    tmpfs_dir,
    xfs_dir,
    xfs_noreflink_dir,
)
from ._state import _SESSION_KEY, _missing, _session, require, strict_mode

__all__ = [
    "DirPair",
    "btrfs_dir",
    "cowprobe_lab",
    "cross_fs_dirs",
    "ext4_dir",
    "fakefs",
    "lab_dir",
    "require",
    "require_fakefs",
    "strict_mode",
    "syscall_faults",
    "tmpfs_dir",
    "xfs_dir",
    "xfs_noreflink_dir",
]

_REFLINK_KINDS = _state.REFLINK_KINDS

_MARKERS = (
    f"cowprobe_fs(*kinds): needs these cowprobe lab filesystems ({', '.join(_LANES)}); "
    "the lab_dir fixture runs on each",
    "needs_reflink: needs a directory whose filesystem clones (reflink); lab_dir "
    "narrows to btrfs/XFS, btrfs_dir/xfs_dir clone, otherwise the session's temporary "
    "directory must clone",
    "needs_fuse: needs a usable FUSE (/dev/fuse, pyfuse3) for fakefs",
    "needs_root: needs to run as root",
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cowprobe")
    group.addoption(
        "--cowprobe-strict",
        action="store_true",
        default=None,
        help="fail (instead of skip) tests whose filesystem prerequisites are missing; "
        "on by default when CI=true",
    )
    group.addoption(
        "--cowprobe-tmp-fs",
        choices=_LANES,
        default=None,
        metavar="KIND",
        help="put the session's temporary directories (tmp_path's basetemp and TMPDIR) on "
        f"this lab filesystem or overlay lane ({', '.join(_LANES)}); needs root",
    )
    group.addoption("--cowprobe-lab-size", default=None, metavar="SIZE",
                    help=f"size of the lab filesystems: {SIZE_HELP}")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    state = _session(config)
    # An in-process inner session (pytester) must not leave its mode behind.
    state.saved_strict = _state.STRICT
    opt = config.getoption("--cowprobe-strict")
    _state.STRICT = bool(opt) if opt is not None else os.environ.get("CI", "").lower() == "true"
    for line in _MARKERS:
        config.addinivalue_line("markers", line)
    size = config.getoption("--cowprobe-lab-size")
    try:
        state.sizes = _parse_sizes(size) if size else {}
    except ValueError as err:
        raise pytest.UsageError(f"--cowprobe-lab-size={size}: {err}") from None
    kind = config.getoption("--cowprobe-tmp-fs")
    if kind:
        _redirect_tmp(config, kind)


def _redirect_tmp(config: pytest.Config, kind: str) -> None:
    # tryfirst: pytest's own tmp_path plugin reads --basetemp in its
    # pytest_configure; ours must have set it by then.
    state = _session(config)
    try:
        lab = state.lab_for(kind)
    except (pytest.skip.Exception, pytest.fail.Exception) as err:
        # lab_for turns LabUnavailable into a skip/fail naming what is missing.
        raise pytest.UsageError(f"--cowprobe-tmp-fs={kind}: {err.msg}") from None
    root = lab.scratch_dir(kind, "session")
    state.tmp_fs = kind
    state.tmp_dir = root
    config.option.basetemp = str(root / "basetemp")
    tmp = root / "tmp"
    tmp.mkdir()
    for var in ("TMPDIR", "TEMP", "TMP"):
        state.saved_env[var] = os.environ.get(var)
        os.environ[var] = str(tmp)
    # tempfile caches its directory on first use; point it there directly.
    state.saved_tempdir = tempfile.tempdir
    tempfile.tempdir = str(tmp)


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(_SESSION_KEY, None)
    if state is None:
        return
    _state.STRICT = state.saved_strict
    for var, value in state.saved_env.items():
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value
    if state.tmp_fs:
        tempfile.tempdir = state.saved_tempdir
    state.close()


# -------------------------------------------------------------- header


def _fs_line(path: Path) -> str:
    from probe.conformance._mounts import mount_of

    info = mount_of(path)
    return f"{info.fstype} ({info.options})" if info else "unknown filesystem"


def pytest_report_header(config: pytest.Config) -> list[str]:
    from probe.conformance import fuse_missing

    lines = []
    state = _session(config)
    if state.tmp_dir is not None:
        lines.append(
            f"cowprobe: tmp_path and TMPDIR on {state.tmp_fs}: {state.tmp_dir} "
            f"[{_fs_line(state.tmp_dir)}]"
        )
    ok: list[str] = []
    missing: dict[str, str] = {}
    for kind in _KINDS:
        why = missing_prerequisites((kind,))
        if why:
            missing[kind] = "; ".join(why)
        else:
            ok.append(kind)
    line = f"cowprobe: lab filesystems {', '.join(ok) or 'none'}"
    if missing:
        reasons = dict.fromkeys(missing.values())
        line += f"; unavailable {', '.join(missing)} ({' / '.join(reasons)})"
    fuse = fuse_missing()
    line += f"; fakefs {'available' if fuse is None else 'unavailable: ' + fuse}"
    line += f"; strict {'on' if _state.STRICT else 'off'}"
    lines.append(line)
    return lines


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    state = config.stash.get(_SESSION_KEY, None)
    if state is None or not state.labs:
        return
    used = ", ".join(
        f"{kind} at {lab.path(kind)} [{lab[kind].fstype}: {lab[kind].options}]"
        for kind, lab in state.labs.items()
    )
    terminalreporter.write_line(f"cowprobe: filesystems used: {used}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    # A test that ran out of room on a lab filesystem gets a section naming
    # the setting that would have given it more.
    outcome = yield
    state = item.config.stash.get(_SESSION_KEY, None)
    used = [(k, lab[k].size_mb) for k, lab in state.labs.items()] if state else []
    exc = call.excinfo.value if call.excinfo is not None else None
    for hint in enospc_hints(exc, used, "--cowprobe-lab-size"):
        outcome.get_result().sections.append(("cowprobe", hint))


# -------------------------------------------------------------- markers


def _marker_kinds(item: pytest.Item | Any) -> tuple[str, ...] | None:
    kinds: list[str] = []
    found = False
    for mark in item.iter_markers("cowprobe_fs"):
        found = True
        for k in mark.args:
            if k not in _LANES:
                raise pytest.UsageError(
                    f"cowprobe_fs({k!r}): unknown filesystem; known: {', '.join(_LANES)}"
                )
            kinds.append(k)
    return tuple(dict.fromkeys(kinds)) if found else None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "lab_dir" not in metafunc.fixturenames:
        return
    kinds = _marker_kinds(metafunc.definition) or _KINDS
    if metafunc.definition.get_closest_marker("needs_reflink"):
        # None of the lanes named clones: keep them, so that lab_dir says so
        # (a skip, or a failure in strict mode). An empty parameter set is
        # pytest's own skip, even under CI=true: a test that can never run
        # would have read as green.
        kinds = tuple(k for k in kinds if k in _REFLINK_KINDS) or kinds
    metafunc.parametrize("lab_dir", kinds, indirect=True, ids=kinds)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("needs_root") and os.geteuid() != 0:
        _missing(f"needs root (running as uid {os.geteuid()})")
    if item.get_closest_marker("needs_fuse"):
        from probe.conformance import fuse_missing

        why = fuse_missing()
        if why:
            _missing(f"needs FUSE: {why}")
    kinds = _marker_kinds(item)
    if kinds and "lab_dir" not in getattr(item, "fixturenames", ()):
        for kind in kinds:
            lacking = missing_prerequisites((kind,))
            if lacking:
                _missing(f"needs {kind}: {'; '.join(lacking)}")


#: the session's temporary directory -> why it cannot clone (None: it can);
#: asked once, not with a real clone per test
_REFLINK_TMP: dict[Path, str | None] = {}


@pytest.fixture(autouse=True)
def _cowprobe_needs_reflink(request: pytest.FixtureRequest) -> None:
    """``needs_reflink`` on a test without ``lab_dir``, ``btrfs_dir`` or
    ``xfs_dir``: the session's temporary directory must clone. A fixture, not the setup hook: the
    session's base temporary directory is public only through the
    ``tmp_path_factory`` fixture (asked only for a marked test)."""
    if request.node.get_closest_marker("needs_reflink") is None:
        return
    if "lab_dir" in request.fixturenames:
        return
    if any(f"{k.replace('-', '_')}_dir" in request.fixturenames for k in _REFLINK_KINDS):
        # It clones in btrfs_dir or xfs_dir (or cross_fs_dirs' pair, which
        # pulls neither): its own directory does, whatever tmp_path is on.
        return
    factory: pytest.TempPathFactory = request.getfixturevalue("tmp_path_factory")
    base = factory.getbasetemp()
    if base not in _REFLINK_TMP:
        _REFLINK_TMP[base] = _reflink_tmp_problem(base)
    problem = _REFLINK_TMP[base]
    if problem is not None:
        _missing(problem)


def _reflink_tmp_problem(base: Path) -> str | None:
    from probe import ReflinkOutcome, probe_reflink

    try:
        res = probe_reflink(base)
    except OSError as err:
        return f"needs reflink: cannot probe {base}: {err.strerror}"
    if res.outcome is not ReflinkOutcome.CLONED:
        return (
            f"needs reflink: the session's temporary directory {base} is on "
            f"{_fs_line(base)}, which does not clone ({res.errno_name}); "
            "run with --cowprobe-tmp-fs=btrfs or use the lab_dir fixture"
        )
    return None


