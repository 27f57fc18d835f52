"""Temporary names: built in bytes, carrying their owner, reaped when it died.

A temporary is ``.NAME.cowprobe-PID-TICKS-BOOT-RANDOMCOUNTER.tmp``: the
owner's pid, its start time (clock ticks after boot, from /proc) and a short
boot id. A process killed by SIGKILL runs no cleanup, so the next run that
touches the directory checks each temporary's owner and unlinks those whose
owner is gone (``reap_dead``). pid *and* start time: a recycled pid belongs
to someone else, and mistaking a live owner for dead would delete a file it
is still writing.
"""

from __future__ import annotations

import itertools
import os
import re
import stat
import threading
from collections.abc import Callable
from functools import cache

from ._liveness import boot_id, start_ticks

__all__ = ["OWNER_PATTERN", "forget_reaped", "is_ours", "my_owner", "owner_gone", "owner_tag",
           "reap_dead", "temp_name", "temp_prefix"]

# The final name's share of a temporary, in *bytes*: NAME_MAX is 255 bytes
# on every Linux filesystem, and a 255-byte name of 3-byte characters is 85
# characters -- cutting by characters made such names fail with
# ENAMETOOLONG. 100 bytes keeps the temporary well under any NAME_MAX seen
# in the field (eCryptfs: 143).
_NAME_BYTES = 100
#: ``my_owner()`` / ``owner_tag()`` as a pattern: pid, start ticks, boot
#: tag, in the groups ``owner_gone`` takes (the probe's private directories
#: carry it too).
OWNER_PATTERN = r"(\d+)-(\d+)-([0-9a-f]{8})"
_TEMP_RE = re.compile(r"\.cowprobe-" + OWNER_PATTERN + r"-[0-9a-f]+\.tmp\Z")


def _boot_tag() -> str:
    # The boot id is a random UUID: its first 8 hex digits are as good a
    # tag as any hash of it, and need no hashlib (OpenSSL's import is ~6 ms
    # of every command that writes a file).
    return boot_id().replace("-", "")[:8].lower().ljust(8, "0")


@cache
def _legacy_boot_tag() -> str:
    """The tag cowprobe 0.1 wrote (a hash of the boot id): a temporary
    carrying it was made in *this* boot, its owner may still be running."""
    import hashlib

    return hashlib.sha256(boot_id().encode()).hexdigest()[:8]


class _TempNames:
    """Unpredictable, unique temporary names without a getrandom() per file.

    A random part per process plus a counter: a batch replacing 10,000
    existing files would otherwise spend a syscall per file on names alone.
    The random part keeps names unguessable (a planted symlink or file can
    only make our exclusive, no-follow create fail, never redirect it); a
    forked child draws its own and records its own pid.
    """

    def __init__(self) -> None:
        self.boot = _boot_tag()
        self.reseed()

    def reseed(self) -> None:
        pid = os.getpid()
        self.owner = _owner(pid, start_ticks(pid) or 0, self.boot)
        self.prefix = os.urandom(4).hex()
        self.counter = itertools.count()

    def next(self, final_name: str) -> str:
        # next() on itertools.count is atomic under the GIL: threads of one
        # batch never draw the same number.
        return f"{temp_prefix(final_name, self.owner)}{self.prefix}{next(self.counter):04x}.tmp"


def owner_tag(pid: int) -> str | None:
    """The owner part of every temporary process ``pid`` names (its pid,
    start time and boot), also while it is an unreaped zombie; None once
    there is no such process."""
    ticks = start_ticks(pid, zombie=True)
    return None if ticks is None else _owner(pid, ticks, _TEMP_NAMES.boot)


def my_owner() -> str:
    """This process's owner part (pid, start time -- 0 where /proc cannot
    say --, boot), as its temporaries carry it; renewed after a fork."""
    return _TEMP_NAMES.owner


def _owner(pid: int, ticks: int, boot: str) -> str:
    return f"{pid}-{ticks}-{boot}"


def temp_prefix(final_name: str, owner: str) -> str:
    """How every temporary that ``owner`` makes for ``final_name`` starts."""
    return f".{_cut(final_name)}.cowprobe-{owner}-"


def _cut(name: str) -> str:
    """At most ``_NAME_BYTES`` bytes of ``name``, never half a character.

    Names are bytes to the kernel; a str here may carry surrogate escapes
    for bytes that are not UTF-8, and those survive the round trip.
    """
    raw = os.fsencode(name)
    if len(raw) <= _NAME_BYTES:
        return name
    raw = raw[:_NAME_BYTES]
    # Back off over a UTF-8 sequence the cut split (at most 3 bytes), so the
    # temporary prints as the name the user knows.
    for back in range(4):
        try:
            return raw[: len(raw) - back].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return os.fsdecode(raw)


_TEMP_NAMES = _TempNames()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_TEMP_NAMES.reseed)


def temp_name(final_name: str) -> str:
    """A hidden, unique sibling name for building ``final_name``."""
    return _TEMP_NAMES.next(final_name)


def is_ours(name: str) -> bool:
    """Is ``name`` a cowprobe temporary (of any owner)?"""
    return name.startswith(".") and _TEMP_RE.search(name) is not None


def _owner_dead(name: str, cache: dict[tuple[int, int, str], bool]) -> bool:
    m = _TEMP_RE.search(name)
    if m is None:
        return False
    key = (int(m.group(1)), int(m.group(2)), m.group(3))
    dead = cache.get(key)
    if dead is None:
        dead = cache[key] = owner_gone(*key)
    return dead


def owner_gone(pid: int, ticks: int, boot: str) -> bool:
    """Is the owner a name carries (``owner_tag``'s parts) gone?"""
    if boot not in (_TEMP_NAMES.boot, _legacy_boot_tag()):
        return True  # made before the last reboot: its owner is gone
    if ticks == 0:
        return False  # owner had no /proc: liveness unknown, keep it
    return start_ticks(pid) != ticks


_REAPED: set[tuple[int, int, bool]] = set()
_REAPED_LOCK = threading.Lock()


def reap_dead(dir_fd: int, *,
              remove_dir: Callable[[int, str], list[OSError]] | None = None) -> list[str]:
    """Unlink the temporaries of dead owners in the directory ``dir_fd``;
    the names that could not be removed (never silently left).

    Cheap by design: once per directory per process, a names-only scan (no
    stat unless a name matches), one /proc read per distinct owner. Only
    entries owned by our uid are touched, and directories only when the
    caller brings ``remove_dir`` (the materializer, whose staged
    directories these are: a dead owner's was never published, and never
    will be).
    """
    try:
        st = os.fstat(dir_fd)
    except OSError:
        return []
    key = (st.st_dev, st.st_ino, remove_dir is not None)
    with _REAPED_LOCK:
        if key in _REAPED:
            return []
        _REAPED.add(key)
    left: list[str] = []
    cache: dict[tuple[int, int, str], bool] = {}
    try:
        with os.scandir(dir_fd) as it:
            names = [e.name for e in it if e.name.startswith(".") and ".cowprobe-" in e.name]
    except OSError:
        return []
    for name in names:
        if not (is_ours(name) and _owner_dead(name, cache)):
            continue
        try:
            there = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            continue
        if there.st_uid != os.geteuid():
            continue
        if stat.S_ISDIR(there.st_mode):
            if remove_dir is not None and remove_dir(dir_fd, name):
                left.append(name)
            continue
        try:
            os.unlink(name, dir_fd=dir_fd)
        except FileNotFoundError:
            pass  # another reaper got there first
        except OSError:
            left.append(name)
    return left


def forget_reaped() -> None:
    """Let ``reap_dead`` scan every directory again (tests; long-lived
    processes that want a fresh sweep)."""
    with _REAPED_LOCK:
        _REAPED.clear()
