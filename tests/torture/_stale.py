"""Torture working directories, and reaping the ones a killed run left.

Every family of replays lives in ``/tmp/cowprobe-torture-<pid>-<random>/``
with an owner file (pid and process start time). A run killed with SIGKILL
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

# One liveness rule for every "is the owner still alive" question: pid plus
# start time, and a zombie counts as dead (PID 1 may never reap it).
from probe.lab._owner import start_ticks

__all__ = ["PREFIX", "fakefs_mounts_under", "new_base", "reap_stale"]

PREFIX = "cowprobe-torture-"
_NAME = re.compile(rf"^{re.escape(PREFIX)}(\d+)-\w+$")
_OWNER = "owner"
_OCTAL = re.compile(r"\\([0-7]{3})")


def _owner_alive(root: Path, name_pid: int) -> bool:
    try:
        pid_text, ticks_text = (root / _OWNER).read_text().split()
        pid, ticks = int(pid_text), int(ticks_text)
    except (OSError, ValueError):
        # Not written yet (the instant after mkdtemp) or unreadable: trust
        # the pid in the name, so a live owner is never reaped.
        return start_ticks(name_pid) is not None
    # Same pid but another start time: a recycled pid, the owner is dead.
    return start_ticks(pid) == ticks


def _mounts() -> list[tuple[str, str]]:
    """(mountpoint, fstype) of every mount this process sees."""
    out = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            parts = line.split()
            sep = parts.index("-")
            out.append((_OCTAL.sub(lambda m: chr(int(m.group(1), 8)), parts[4]), parts[sep + 1]))
    return out


def mounts_under(root: Path) -> list[tuple[str, str]]:
    prefix = str(root).rstrip("/") + "/"
    return [(mp, fs) for mp, fs in _mounts() if mp == str(root) or mp.startswith(prefix)]


def fakefs_mounts_under(root: Path) -> list[str]:
    return [mp for mp, fs in mounts_under(root) if fs == "fuse.fakefs"]


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
    ticks = start_ticks(os.getpid())
    with contextlib.suppress(OSError):
        (root / _OWNER).write_text(f"{os.getpid()} {ticks}\n")
    return root
