"""Who owns a lab root: the owner record (pid + start time + boot id), the
liveness check, and reaping the labs of dead owners (``cleanup_stale``)."""

from __future__ import annotations

import fcntl
import json
import os
import re
import stat
import time
import warnings
from pathlib import Path

from ._teardown import dismantle

DEFAULT_BASE = Path("/tmp")
ROOT_PREFIX = "cowprobe-lab-"
# The pid in the name is the fallback owner when owner.json is not written
# yet (the microseconds between mkdtemp and the write) or is unreadable.
_ROOT_RE = re.compile(r"^cowprobe-lab-(\d+)-[A-Za-z0-9_]+$")
_OWNER = "owner.json"
LOCK = "lock"


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def start_ticks(pid: int) -> int | None:
    """The start time of live process ``pid`` (clock ticks after boot);
    None if there is no such process or only its zombie is left."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm (field 2) may contain spaces and parentheses; fields after the
    # last ')' are fixed. State is field 3, starttime field 22.
    rest = text[text.rindex(")") + 2 :].split()
    if rest[0] in ("Z", "X", "x"):  # a zombie holds nothing and will do nothing
        return None
    return int(rest[19])


def _owner_alive(root: Path, name_pid: int) -> bool:
    try:
        owner = json.loads((root / _OWNER).read_text())
        pid, ticks, boot = int(owner["pid"]), int(owner["start_ticks"]), str(owner["boot_id"])
    except FileNotFoundError:
        return start_ticks(name_pid) is not None
    except (OSError, ValueError, KeyError, TypeError):
        # Unreadable or torn: all we know is the pid in the name. Treat a
        # live pid as the owner; mistaking a dead lab for live only delays
        # its cleanup, the reverse would destroy someone's running tests.
        return start_ticks(name_pid) is not None
    if boot != _boot_id():
        return False
    # pid AND start time: a recycled pid belongs to a different process.
    return start_ticks(pid) == ticks


def write_owner(root: Path) -> None:
    pid = os.getpid()
    doc = {
        "pid": pid,
        "start_ticks": start_ticks(pid),
        "boot_id": _boot_id(),
        "created": time.time(),
    }
    tmp = root / f".{_OWNER}.tmp"
    tmp.write_text(json.dumps(doc))
    # A reader sees the whole file or none (then it falls back to the pid).
    tmp.replace(root / _OWNER)


def _is_lab_root(entry: Path) -> int | None:
    """The pid from the name if ``entry`` is a lab root we may reap."""
    m = _ROOT_RE.match(entry.name)
    if not m:
        return None
    try:
        st = entry.lstat()
    except OSError:
        return None
    # /tmp is world-writable: only a real directory owned by us counts, never
    # a symlink someone planted to aim the reaper at something else. The
    # lstat alone answers that: a second lookup by path could be raced.
    if not (stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()):
        return None
    return int(m.group(1))


def cleanup_stale(base_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Tear down labs under ``base_dir`` whose owner process is dead.

    A lab is stale only if its recorded owner (pid *and* process start time,
    same boot) is gone; a live lab of any process is never touched. Two
    reapers never work on one lab: each takes the lab's lock exclusively,
    which also fails while the live owner holds it shared. Returns the roots
    that were removed.
    """
    base = Path(base_dir) if base_dir is not None else DEFAULT_BASE
    reaped: list[Path] = []
    try:
        entries = sorted(base.iterdir())
    except FileNotFoundError:
        return reaped
    for entry in entries:
        name_pid = _is_lab_root(entry)
        if name_pid is None or _owner_alive(entry, name_pid):
            continue
        try:
            lock_fd = os.open(entry / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            continue  # vanished meanwhile (another reaper finished it)
        try:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            if not entry.exists():
                continue
            errors = dismantle(entry)
            if errors:
                warnings.warn(
                    f"cowprobe lab: stale lab {entry} not fully removed: {'; '.join(errors)}",
                    RuntimeWarning,
                    stacklevel=2,
                )
            else:
                reaped.append(entry)
        finally:
            os.close(lock_fd)
    return reaped
