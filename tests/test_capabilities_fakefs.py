"""The capability probe on fakefs with faults armed: whatever fakefs makes
fail, the probe answers "unsupported" or "could not tell" for what it could
not establish -- never "yes", never a crash -- and leaves nothing behind."""

from __future__ import annotations

import errno
import importlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from probe.capabilities import (
    CAPABILITY_NAMES,
    CapabilityReport,
    ProbeContext,
    Status,
    probe_capabilities,
)
from probe.lab import Lab
from probe.pytest_plugin import require

S, U, C = Status.SUPPORTED, Status.UNSUPPORTED, Status.COULD_NOT_TELL


def _fakefs() -> Any:
    try:
        return importlib.import_module("fakefs")
    except ImportError as err:
        require(False, f"fakefs is not importable: {err}")
    raise AssertionError  # pragma: no cover - require() does not return here


@pytest.fixture
def fake(cowprobe_lab: Lab) -> Iterator[tuple[Any, Path, Path]]:
    """(handle, mountpoint, backing): fakefs over a btrfs scratch directory."""
    fakefs = _fakefs()
    backing = cowprobe_lab.scratch_dir("btrfs", "fakefs-data")
    mnt = cowprobe_lab.scratch_dir("tmpfs", "fakefs-mnt")
    try:
        cm = fakefs.mount(backing, mnt)
        fs = cm.__enter__()
    except Exception as err:
        require(False, f"cannot mount fakefs (needs /dev/fuse and pyfuse3): {err}")
        raise
    try:
        yield fs, mnt, backing
    finally:
        cm.__exit__(None, None, None)


def _never_yes_on_failure(rep: CapabilityReport, code: int) -> None:
    for cap in rep.capabilities:
        assert "crashed" not in (cap.reason or ""), cap
        if cap.errno == code:
            assert cap.status is not S, cap


def test_fuse_itself_answers_as_the_kernel_does(fake: tuple[Any, Path, Path]) -> None:
    _fs, mnt, backing = fake
    rep = probe_capabilities(mnt)
    assert rep.identity is not None and rep.identity.magic_name == "fuse"
    assert (rep.identity.fstype or "").startswith("fuse")
    got = {c.name: (c.status, c.errno) for c in rep.capabilities}
    # The kernel answers FICLONE for FUSE itself; fakefs implements neither
    # fallocate nor O_TMPFILE, and passes no birth time or hole map through.
    assert got["reflink"] == (U, errno.EOPNOTSUPP)
    assert got["fallocate"] == (U, errno.EOPNOTSUPP)
    assert got["o_tmpfile"] == (U, errno.EOPNOTSUPP)
    assert got["statx_btime"] == (U, None)
    assert got["sparse"] == (U, None)
    assert got["xattr"] == (S, None)
    assert got["hardlink"] == (S, None)
    assert got["rename_noreplace"][0] in (S, U)
    assert list(backing.iterdir()) == []


@pytest.mark.parametrize("rule", ["open:*:EIO", "setxattr:*:EIO", "write:*:EIO", "fsync:*:EIO",
                                  "create:*:ENOSPC", "link:*:EIO", "rename:*:EIO"])
def test_faults_armed_after_the_probe_dir_exists(fake: tuple[Any, Path, Path],
                                                 rule: str) -> None:
    fs, mnt, backing = fake
    armed: list[int] = []

    def arm(name: str, ctx: ProbeContext) -> None:
        if not armed:
            armed.append(fs.add_fault(rule))

    rep = probe_capabilities(mnt, hook=arm)
    code = getattr(errno, rule.rsplit(":", 1)[1])
    assert armed and len(rep.capabilities) == len(CAPABILITY_NAMES)
    _never_yes_on_failure(rep, code)
    # The fault really bit: some answer carries its errno.
    assert any(c.errno == code for c in rep.capabilities)
    if rule.startswith("setxattr"):
        assert (rep["xattr"].status, rep["xattr"].errno) == (C, errno.EIO)
    fs.clear_faults()
    assert rep.leftover is None
    assert list(mnt.iterdir()) == [] and list(backing.iterdir()) == []


def test_probe_dir_refused(fake: tuple[Any, Path, Path]) -> None:
    fs, mnt, backing = fake
    fs.add_fault("mkdir:*:EACCES")
    rep = probe_capabilities(mnt)
    assert rep.limitation is not None and "EACCES" in rep.limitation
    assert {(c.status, c.errno) for c in rep.capabilities} == {(C, errno.EACCES)}
    assert list(backing.iterdir()) == []


def test_cleanup_refused_is_reported_not_hidden(fake: tuple[Any, Path, Path]) -> None:
    fs, mnt, backing = fake
    rid: list[int] = []

    def arm(name: str, ctx: ProbeContext) -> None:
        if name == "fcntl_lock" and not rid:
            rid.append(fs.add_fault("unlink:*:EIO"))

    rep = probe_capabilities(mnt, hook=arm)
    assert rep.leftover is not None and "EIO" in rep.leftover
    fs.clear_faults()
    # What the report named is what is there, and it can be removed now.
    (left,) = list(mnt.iterdir())
    assert left.name in rep.leftover
    shutil.rmtree(left)
    assert list(backing.iterdir()) == []
