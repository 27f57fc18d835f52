"""Create as the caller: the daemon thread's fsuid/fsgid switched to the
caller's around the one syscall that makes a new inode.

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
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Callable
from typing import TypeVar

from probe._libc import function, raise_errno

__all__ = ["Creds"]

T = TypeVar("T")

_CAP_V3 = 0x20080522  # _LINUX_CAPABILITY_VERSION_3: two 32-bit words
_QUERY = 0xFFFFFFFF  # an invalid id: setfsuid changes nothing, returns the current one


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


_Caps = _CapData * 2


class Creds:
    """Runs a creating call under the caller's fsuid/fsgid (root only: an
    unprivileged daemon cannot switch, and creates as itself, as before)."""

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

    def owner(self, uid: int) -> int:
        """The uid a new inode made for caller ``uid`` must have."""
        return uid if self.enabled else self.uid

    def run(self, uid: int, gid: int, call: Callable[[], T]) -> T:
        """``call()`` with fsuid ``uid`` and fsgid ``gid``; the daemon's own
        ids (and capabilities) are back when it returns or raises."""
        if not self.enabled or (uid == self.uid and gid == self.gid):
            return call()
        try:
            self._setfsgid(gid)
            self._setfsuid(uid)
            # setfsuid/setfsgid never report failure (an id not mapped in our
            # user namespace is silently ignored): ask, or the inode would be
            # made as root after all.
            if self._setfsuid(_QUERY) != uid or self._setfsgid(_QUERY) != gid:
                raise OSError(errno.EPERM, "could not take on the caller's fsuid/fsgid")
            self._restore_caps()
            return call()
        finally:
            # Back to our own ids, and the effective set exactly as it was at
            # start-up (fsuid 0 raises every permitted file-system capability).
            self._setfsuid(self.uid)
            self._setfsgid(self.gid)
            self._restore_caps()

    def _restore_caps(self) -> None:
        if self._capset(ctypes.byref(_CapHeader(_CAP_V3, 0)), self._caps) != 0:
            raise_errno()
