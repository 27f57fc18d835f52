"""The one owner-liveness rule: is the process that made this still alive?

Used by everything that leaves a directory behind for a later run to reap
when its maker was killed (lab roots, the torture harness's work dirs, and
anything else that records an owner). The rule:

* an owner is its pid **and** that process's start time **and** the boot
  id: pids are recycled, so a pid alone would make a stranger the owner,
  and after a reboot both pid and start time can repeat;
* a zombie counts as dead: it holds nothing and will do nothing, and as
  PID 1 of a container nobody may ever reap it;
* a record that cannot be read says nothing: callers fall back to a pid
  they know otherwise (one in a directory name) and treat it as alive if it
  is, because mistaking a dead owner for a live one only delays a cleanup,
  while the reverse destroys someone's running work.

Standard library only.
"""

from __future__ import annotations

import os

from ._records import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from pathlib import Path

# Plain open() and json imported where used: every temporary name carries
# its owner (probe._tempname), so this module is on the start-up path of
# every command that writes a file.

__all__ = [
    "Owner",
    "boot_id",
    "owner_alive",
    "pid_alive",
    "read_owner",
    "start_ticks",
    "write_owner",
]


def boot_id() -> str:
    """This boot's id ("" where the kernel does not say)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return ""


def start_ticks(pid: int, *, zombie: bool = False) -> int | None:
    """The start time of live process ``pid`` (clock ticks after boot);
    None if there is no such process or only its zombie is left (unless
    ``zombie``: a parent naming the child it has yet to reap)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except OSError:  # ENOENT/ESRCH: no such process
        return None
    # comm (field 2) may contain spaces and parentheses; fields after the
    # last ')' are fixed. State is field 3, starttime field 22.
    rest = text[text.rindex(")") + 2 :].split()
    if not zombie and rest[0] in ("Z", "X", "x"):
        return None
    return int(rest[19])


def pid_alive(pid: int) -> bool:
    """A live (non-zombie) process has ``pid`` -- which one, this cannot say."""
    return start_ticks(pid) is not None


class Owner(NamedTuple):
    pid: int
    start_ticks: int | None
    boot_id: str

    @classmethod
    def me(cls) -> Owner:
        pid = os.getpid()
        return cls(pid, start_ticks(pid), boot_id())

    def alive(self) -> bool:
        if self.boot_id != boot_id():
            return False
        # pid AND start time: a recycled pid belongs to a different process.
        return self.start_ticks is not None and start_ticks(self.pid) == self.start_ticks

    def as_dict(self) -> dict[str, object]:
        return {"pid": self.pid, "start_ticks": self.start_ticks, "boot_id": self.boot_id}


def write_owner(path: Path, **extra: object) -> Owner:
    """Record this process as the owner in ``path`` (JSON), atomically: a
    reader sees the whole record or none."""
    import json

    owner = Owner.me()
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({**owner.as_dict(), **extra}))
    tmp.replace(path)
    return owner


def read_owner(path: Path) -> Owner | None:
    """The owner recorded in ``path``; None if it is missing or unreadable."""
    import json

    try:
        doc = json.loads(path.read_text())
        return Owner(int(doc["pid"]), int(doc["start_ticks"]), str(doc["boot_id"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def owner_alive(record: Path, fallback_pid: int | None = None) -> bool:
    """Is the owner recorded in ``record`` alive?

    Without a readable record (not written yet -- the instant after the
    directory was made -- or torn) only ``fallback_pid`` can answer, and a
    live process with that pid counts as the owner; with neither, the owner
    is taken to be alive: an unprovable death is never a licence to reap.
    """
    owner = read_owner(record)
    if owner is not None:
        return owner.alive()
    return pid_alive(fallback_pid) if fallback_pid is not None else True
