"""Act as the caller: the daemon thread's fsuid/fsgid switched to the
caller's around the one syscall that makes a new inode (``run``), or around
the removal a vanish rule makes (``run_unprivileged``).

Why not create as root and chown afterwards: the chown has to find the new
inode again, and by name it finds whatever a user with write access to the
backing directory put there in between (a root-owned file, given away).
Created under the caller's fsuid/fsgid, the inode is born with the right
owner -- and a set-group-ID directory hands down its group and its bit
natively -- so nothing is ever chowned.

fsuid and fsgid are per thread in Linux (glibc's setfsuid/setfsgid are
plain syscalls, not broadcast to every thread like setuid), and pyfuse3 runs
every handler as a trio task on the one thread that called trio.run: the
switch is made and undone inside one synchronous call, with no ``await`` in
between, so no other request ever runs under the caller's ids.

Leaving fsuid 0 also clears the file-system capabilities (CAP_DAC_OVERRIDE,
CAP_MKNOD, CAP_FOWNER, CAP_FSETID, ...) from the thread's effective set. They
are put back at once (capset is per thread too): the kernel has already
checked the caller's own permissions on its side of the mount
(default_permissions, with the caller's supplementary groups and
capabilities, which the daemon cannot reproduce), so the backing side must
answer as root did before -- only the new inode's owner changes. The
supplementary groups of the daemon therefore play no part either.

A vanish is no request of the caller's, so the kernel checked nothing for
it: ``run_unprivileged`` leaves the effective set empty, and the backing
filesystem judges every unlink and rmdir as it would the caller's own (the
parent's write bit, the sticky bit), whatever a user moved or swapped into
the names it works on. There the daemon's supplementary groups would count
(the kernel consults the thread's group list beside its fsgid): a root
daemon drops them at start-up, as its capabilities never needed them, and
removes nothing as a caller if it could not.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
from collections.abc import Callable
from typing import Protocol, TypeVar

from probe._libc import function, raise_errno

__all__ = ["Caller", "Creds"]

T = TypeVar("T")

_CAP_V3 = 0x20080522  # _LINUX_CAPABILITY_VERSION_3: two 32-bit words
_QUERY = 0xFFFFFFFF  # an invalid id: setfsuid changes nothing, returns the current one


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


_Caps = _CapData * 2


class Caller(Protocol):
    """Who asked: a request's ``pyfuse3.RequestContext`` (or, for requests
    that carry none -- read, write, readdir -- the opener's)."""

    @property
    def pid(self) -> int: ...
    @property
    def uid(self) -> int: ...
    @property
    def gid(self) -> int: ...


class Creds:
    """Runs a call under the caller's fsuid/fsgid (root only: an
    unprivileged daemon cannot switch, and acts as itself, as before)."""

    def __init__(self) -> None:
        self._setfsuid = function("setfsuid", ctypes.c_int, ctypes.c_uint)
        self._setfsgid = function("setfsgid", ctypes.c_int, ctypes.c_uint)
        self._capset = function("capset", ctypes.c_int, ctypes.POINTER(_CapHeader),
                                ctypes.POINTER(_CapData))
        capget = function("capget", ctypes.c_int, ctypes.POINTER(_CapHeader),
                          ctypes.POINTER(_CapData))
        self.enabled = os.geteuid() == 0 and None not in (
            self._setfsuid, self._setfsgid, self._capset, capget)
        #: the thread's capabilities at start-up (pid 0: this thread)
        self._caps = _Caps()
        if self.enabled and capget(ctypes.byref(_CapHeader(_CAP_V3, 0)), self._caps) != 0:
            self.enabled = False
        self.uid, self.gid = os.geteuid(), os.getegid()
        if self.enabled and os.getgroups():
            with contextlib.suppress(OSError):
                os.setgroups([])
        #: the daemon's supplementary groups, which a caller must not borrow
        self._groups = os.getgroups() if self.enabled else []
        #: the capabilities to remove with: none in effect, the rest kept so
        #: that ours can be put back
        self._bare = _Caps()
        for word, caps in zip(self._bare, self._caps, strict=True):
            word.permitted, word.inheritable = caps.permitted, caps.inheritable

    def owner(self, uid: int) -> int:
        """The uid a new inode made for caller ``uid`` must have."""
        return uid if self.enabled else self.uid

    def run(self, uid: int, gid: int, call: Callable[[], T]) -> T:
        """``call()`` with fsuid ``uid`` and fsgid ``gid``, and the daemon's
        capabilities; its own ids are back when it returns or raises."""
        return self._as(uid, gid, call, self._caps)

    def run_unprivileged(self, uid: int, gid: int, call: Callable[[], T]) -> T:
        """``call()`` with fsuid ``uid`` and fsgid ``gid`` and no capability
        in effect: the kernel's permission checks apply to it as to the
        caller's own calls. A caller with the daemon's uid (root) keeps
        its power: there is nothing it may not remove anyway."""
        if not self.enabled or uid == self.uid:
            return call()
        if self._groups:
            raise OSError(errno.EPERM, "the daemon's supplementary groups could not be dropped")
        return self._as(uid, gid, call, self._bare)

    def _as(self, uid: int, gid: int, call: Callable[[], T], caps: ctypes.Array[_CapData]) -> T:
        if not self.enabled or (uid == self.uid and gid == self.gid):
            return call()
        try:
            self._setfsgid(gid)
            self._setfsuid(uid)
            # setfsuid/setfsgid never report failure (an id not mapped in our
            # user namespace is silently ignored): ask, or the call would run
            # as root after all.
            if self._setfsuid(_QUERY) != uid or self._setfsgid(_QUERY) != gid:
                raise OSError(errno.EPERM, "could not take on the caller's fsuid/fsgid")
            self._set_caps(caps)
            return call()
        finally:
            # Back to our own ids, and the effective set exactly as it was at
            # start-up (fsuid 0 raises every permitted file-system capability).
            self._setfsuid(self.uid)
            self._setfsgid(self.gid)
            self._set_caps(self._caps)

    def _set_caps(self, caps: ctypes.Array[_CapData]) -> None:
        if self._capset(ctypes.byref(_CapHeader(_CAP_V3, 0)), caps) != 0:
            raise_errno()
