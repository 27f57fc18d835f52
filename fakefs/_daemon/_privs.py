"""What a caller may do beyond its ids, and the two kernel rules that
depend on it which fakefs must apply itself.

The daemon does the work as root, so the backing filesystem judges root,
not the caller, wherever the kernel's answer depends on capabilities the
FUSE side does not check for us:

* Changing a regular file's data (write, truncation) removes its
  set-user-ID bit, and its set-group-ID bit under the conditions below,
  unless the changer has CAP_FSETID (fs/attr.c setattr_should_drop_suidgid
  and setattr_should_drop_sgid). Root's pwrite keeps them, and the FUSE
  kernel side does not make up for it on a direct-I/O write (no
  file_remove_privs there) nor on open(O_TRUNC) (atomic_o_trunc: the kill
  it computes is never sent) -- an unprivileged writer could put any
  program into a set-user-ID root file and run it as root.
* ``trusted.*`` names are listed only to callers with CAP_SYS_ADMIN
  (trusted_xattr_list); root's listxattr shows them to everyone. getxattr
  and setxattr of such a name are refused by the VFS before FUSE is asked.

FUSE tells the daemon the caller's thread id, fsuid and fsgid, nothing
more: the effective capabilities and the supplementary groups are read from
/proc/TID/status while the caller is blocked in its syscall (so the id
cannot have been reused). Capabilities count only for a caller in the
daemon's own user namespace: a process that made itself "root" in a user
namespace of its own holds no capability over our files (``capable()``
asks the initial namespace). Whatever cannot be read gives nothing.

A WRITE names no caller in pyfuse3, and by the time it comes the opener may
be gone and its id taken by a root process: a handle keeps what its opener
could do at open (``at_open``), as the judge of its writes.
"""

from __future__ import annotations

import contextlib
import os
import stat
from typing import NamedTuple

import pyfuse3

from ._creds import Caller

__all__ = ["CAP_FSETID", "CAP_SYS_ADMIN", "NOTHING", "Privileges", "Privs", "carries_privs"]

CAP_FSETID = 4
CAP_SYS_ADMIN = 21
_IDS = stat.S_ISUID | stat.S_ISGID


class Privs(NamedTuple):
    """A caller's effective capabilities and groups at one moment."""

    #: the CapEff mask; 0 for a caller outside the daemon's user namespace
    caps: int
    #: the fsgid and the supplementary groups (in_group_p() looks at both)
    groups: frozenset[int]

    def can(self, cap: int) -> bool:
        return bool(self.caps >> cap & 1)


#: an unknown caller (pid 0, gone, unreadable): no capability, no group
NOTHING = Privs(0, frozenset())


def carries_privs(st: os.stat_result) -> bool:
    """Could a change of this file's data remove mode bits? (The cheap test
    before anything is read from /proc.)"""
    return stat.S_ISREG(st.st_mode) and bool(st.st_mode & _IDS)


def _userns(pid: int | str) -> tuple[int, int] | None:
    try:
        st = os.stat(f"/proc/{pid}/ns/user")
    except OSError:
        return None
    return st.st_dev, st.st_ino


class Privileges:
    """Reads callers' privileges; applies the set-ID rule for the daemon."""

    def __init__(self) -> None:
        self._userns = _userns("self")
        #: Only a daemon whose own write keeps the set-ID bits must remove
        #: them itself; without CAP_FSETID the backing filesystem applies the
        #: rule to our write already (and our fchmod of a file we do not own
        #: would fail the write).
        self.enforce = self._read("self").can(CAP_FSETID)

    def of(self, caller: Caller) -> Privs:
        """The caller's privileges now (pid 0: the kernel could not name it
        in our pid namespace)."""
        return self._read(caller.pid) if caller.pid > 0 else NOTHING

    def at_open(self, fd: int, caller: Caller) -> Privs:
        """The opener's privileges, kept with the handle for its writes:
        FUSE sends a WRITE without naming the writer, and by then the opener
        may be gone and its id reused. Read only when the file carries a
        set-ID bit now (one fstat per open); NOTHING otherwise, so a bit set
        while the handle is open is removed by any write through it."""
        if not self.enforce or not carries_privs(os.fstat(fd)):
            return NOTHING
        return self.of(caller)

    def _read(self, pid: int | str) -> Privs:
        caps, groups = 0, set[int]()
        try:
            with open(f"/proc/{pid}/status", "rb") as f:
                text = f.read()
            for line in text.splitlines():
                key, _, value = line.partition(b":")
                if key == b"CapEff":
                    caps = int(value, 16)
                elif key == b"Gid":
                    groups.add(int(value.split()[3]))  # real, effective, saved, fs
                elif key == b"Groups":
                    groups.update(int(g) for g in value.split())
        except (OSError, ValueError, IndexError):
            # A handler must never raise anything but OSError/FUSEError (it
            # would end the daemon); an unreadable caller gets nothing.
            return NOTHING
        ns = _userns(pid)
        if ns is None or ns != self._userns:
            caps = 0
        return Privs(caps, frozenset(groups))

    def killed(self, st: os.stat_result, privs: Privs) -> int:
        """The set-ID bits removed from the file of ``st`` when a caller with
        ``privs`` changes its data (0: none)."""
        mode = st.st_mode
        if not self.enforce or not carries_privs(st) or privs.can(CAP_FSETID):
            return 0
        kill = mode & stat.S_ISUID  # always, for a regular file
        # S_IXGRP set: a real set-group-ID program. Without it the bit marks
        # mandatory locking, which only a member of the file's group may
        # keep set.
        if mode & stat.S_ISGID and (mode & stat.S_IXGRP or st.st_gid not in privs.groups):
            kill |= stat.S_ISGID
        return kill

    def drop(self, fd: int, ino: int, privs: Privs) -> None:
        """Apply the rule to the open file ``fd`` (node ``ino``) before (or
        as) its data changes, as file_remove_privs() does: through the
        descriptor, so it is exactly the inode being written, whatever its
        names are now."""
        if not self.enforce:
            return
        st = os.fstat(fd)
        # The hot path (every write): one fstat, one test.
        if not st.st_mode & _IDS:
            return
        kill = self.killed(st, privs)
        if not kill:
            return
        os.fchmod(fd, stat.S_IMODE(st.st_mode) & ~kill)
        # The kernel still caches the old mode (60 s for a file no rule
        # names), and a WRITE or OPEN reply carries no attributes: `stat -c
        # %A` would show the bits we just removed. Attributes only, so no
        # lock is taken that the request being answered holds.
        with contextlib.suppress(OSError):  # ENOENT: nothing cached
            pyfuse3.invalidate_inode(ino, attr_only=True)

    def listable(self, names: list[str], caller: Caller) -> list[str]:
        """The xattr names ``caller`` may see listed."""
        if not any(n.startswith("trusted.") for n in names) or \
                self.of(caller).can(CAP_SYS_ADMIN):
            return names
        return [n for n in names if not n.startswith("trusted.")]
