"""Torture working directories, and reaping the ones a killed run left.

Every family of replays lives in ``/tmp/cowprobe-torture-<pid>-<random>/``
with an owner file (pid, process start time and boot id: the one liveness
rule, ``probe._liveness``). A run killed with SIGKILL
-- or whose fakefs daemon was SIGKILLed first, so the daemon's own lifeline
could not unmount -- leaves a dead FUSE mount there ("Transport endpoint is
not connected") that nothing else would ever remove. The next run reaps
every such directory whose owner is gone, touching only ``fuse.fakefs``
mounts inside it: other engineers' mounts are never ours to remove.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from probe._liveness import owner_alive, write_owner
from probe._mounttable import mounts_under as _mounts_under

__all__ = ["PREFIX", "fakefs_mounts_under", "mounts_under", "new_base", "reap_stale"]

PREFIX = "cowprobe-torture-"
_NAME = re.compile(rf"^{re.escape(PREFIX)}(\d+)-\w+$")
OWNER = "owner"


def _owner_alive(root: Path, name_pid: int) -> bool:
    # The pid in the name answers while the record is not written yet.
    return owner_alive(root / OWNER, name_pid)


def mounts_under(root: Path) -> list[tuple[str, str]]:
    """(mountpoint, fstype) of every mount at or below ``root``."""
    return [(e.mount_point, e.fstype) for e in _mounts_under(root)]


def fakefs_mounts_under(root: Path) -> list[str]:
    return [e.mount_point for e in _mounts_under(root) if e.fstype == "fuse.fakefs"]


def _unmount_fuse(mountpoint: str) -> None:
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    if tool is None:
        return
    # A dead daemon's mount cannot be busy in a useful way; -z detaches it
    # even if some orphan still has a file open in it.
    res = subprocess.run([tool, "-u", mountpoint], capture_output=True, check=False)
    if res.returncode != 0:
        subprocess.run([tool, "-u", "-z", mountpoint], capture_output=True, check=False)


def reap_stale(parent: Path) -> list[Path]:
    """Remove torture directories under ``parent`` whose owner is dead."""
    reaped: list[Path] = []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return reaped
    for entry in entries:
        m = _NAME.match(entry.name)
        if m is None or entry.is_symlink() or not entry.is_dir():
            continue
        if _owner_alive(entry, int(m.group(1))):
            continue
        for mp in sorted(fakefs_mounts_under(entry), key=len, reverse=True):
            _unmount_fuse(mp)
        if mounts_under(entry):
            continue  # something not ours is mounted there: leave it all alone
        shutil.rmtree(entry, ignore_errors=True)
        if not entry.exists():
            reaped.append(entry)
    return reaped


def new_base(parent: Path | None = None) -> Path:
    """A fresh torture directory owned by this process (stale ones reaped)."""
    parent = Path(tempfile.gettempdir()) if parent is None else parent
    reap_stale(parent)
    root = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=parent))
    with contextlib.suppress(OSError):
        write_owner(root / OWNER)
    return root
