"""Who owns a lab root: the owner record (pid + start time + boot id, the
rule of ``probe._liveness``), and reaping the labs of dead owners
(``cleanup_stale``)."""

from __future__ import annotations

import fcntl
import os
import re
import stat
import time
import warnings
from pathlib import Path

from .._liveness import owner_alive
from .._liveness import write_owner as _write_owner
from ._teardown import dismantle

DEFAULT_BASE = Path("/tmp")
ROOT_PREFIX = "cowprobe-lab-"
# The pid in the name is the fallback owner when owner.json is not written
# yet (the microseconds between mkdtemp and the write) or is unreadable.
_ROOT_RE = re.compile(r"^cowprobe-lab-(\d+)-[A-Za-z0-9_]+$")
_OWNER = "owner.json"
LOCK = "lock"


def _owner_alive(root: Path, name_pid: int) -> bool:
    # The pid in the name answers while the record is not written yet.
    return owner_alive(root / _OWNER, name_pid)


def write_owner(root: Path) -> None:
    _write_owner(root / _OWNER, created=time.time())


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
