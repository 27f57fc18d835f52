"""seccomp user notification: install a filter, receive a trapped call,
answer it (fcntl.ioctl; ctypes only for the one seccomp() call).

Kernel interface (linux/seccomp.h, seccomp_unotify(2)):
``seccomp(SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, prog)``
returns the listener descriptor; ``SECCOMP_IOCTL_NOTIF_RECV`` blocks until
a filtered task makes a trapped call; ``SECCOMP_IOCTL_NOTIF_SEND`` answers
with an errno or ``SECCOMP_USER_NOTIF_FLAG_CONTINUE`` (run the call for
real); ``SECCOMP_IOCTL_NOTIF_ID_VALID`` says whether the task is still
waiting on that very notification (so what we read from /proc in between
belonged to it, not to a recycled pid).
"""

from __future__ import annotations

import ctypes
import errno as _errno
import fcntl
import os
import struct

from probe import _libc

from ._filter import Arch, build_program

__all__ = ["install", "install_program", "notif_id_valid", "recv",
           "send_continue", "send_errno"]

_SECCOMP_SET_MODE_FILTER = 1
_SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
#: Linux >= 5.19: once the supervisor has received a notification, the
#: trapped task waits for the answer killable, not interruptible.
_SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV = 1 << 5
_PR_SET_NO_NEW_PRIVS = 38
_CAP_SYS_ADMIN = 21
_USER_NOTIF_FLAG_CONTINUE = 1

# struct seccomp_notif { u64 id; u32 pid; u32 flags; struct seccomp_data data; }
_NOTIF = struct.Struct("=QIIiIQ6Q")
# struct seccomp_notif_resp { u64 id; s64 val; s32 error; u32 flags; }
_RESP = struct.Struct("=QqiI")


def _iowr(nr: int, size: int, direction: int) -> int:
    return (direction << 30) | (size << 16) | (ord("!") << 8) | nr


_NOTIF_RECV = _iowr(0, _NOTIF.size, 3)  # _IOWR('!', 0, struct seccomp_notif)
_NOTIF_SEND = _iowr(1, _RESP.size, 3)  # _IOWR('!', 1, struct seccomp_notif_resp)
_NOTIF_ID_VALID = _iowr(2, 8, 1)  # _IOW('!', 2, __u64)


_ZERO_NOTIF = bytes(_NOTIF.size)  # the kernel refuses a RECV buffer not zeroed (EINVAL)



class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


def _has_cap_sys_admin() -> bool:
    # Bytes: this runs in a forked child just before exec, where a codec
    # not yet imported may not be importable (a dropped uid, a chroot).
    with open("/proc/self/status", "rb") as f:
        for line in f:
            if line.startswith(b"CapEff:"):
                return bool(int(line.split()[1], 16) >> _CAP_SYS_ADMIN & 1)
    return False


def install_program(prog: bytes, seccomp_nr: int) -> int:
    """Install ``prog`` (packed sock_filter) on the calling thread; the
    listener fd.

    Only this thread (and threads and processes it creates from now on) is
    filtered: no TSYNC, so a supervisor thread started earlier stays free.
    Without CAP_SYS_ADMIN the kernel demands no_new_privs first; with it we
    leave no_new_privs alone, because it would also stop setuid programs
    (sudo) the command runs from gaining their privileges.
    """
    if not _has_cap_sys_admin() and _PRCTL(
        ctypes.c_int(_PR_SET_NO_NEW_PRIVS), ctypes.c_ulong(1), ctypes.c_ulong(0),
        ctypes.c_ulong(0), ctypes.c_ulong(0),
    ) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    buf = ctypes.create_string_buffer(prog, len(prog))
    fprog = _SockFprog(len(prog) // 8, ctypes.cast(buf, ctypes.c_void_p))
    # WAIT_KILLABLE_RECV: a task whose call we received is no longer woken
    # by a caught signal. Without it, a signal arriving while we decide (or
    # while a delay= answer waits) ends the wait with ERESTARTSYS: EINTR
    # from fsync/rename/FICLONE, which the kernel never gives there, or a
    # restart the rules see as a second call -- and, since the kernel does
    # not look at a reply that raced the signal, a fault SEND called
    # delivered that the task never got. A signal before our RECV still
    # interrupts (no flag helps there; the call never reached us).
    err = 0
    for flags in (_SECCOMP_FILTER_FLAG_NEW_LISTENER | _SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
                  _SECCOMP_FILTER_FLAG_NEW_LISTENER):
        fd = _SYSCALL(
            ctypes.c_long(seccomp_nr), ctypes.c_uint(_SECCOMP_SET_MODE_FILTER),
            ctypes.c_uint(flags), ctypes.byref(fprog),
        )
        if fd >= 0:
            break
        err = ctypes.get_errno()
        if err != _errno.EINVAL:
            break  # EINVAL: a kernel before 5.19, which lacks the flag
    if fd < 0:
        raise OSError(err, os.strerror(err))
    os.set_inheritable(fd, False)
    return int(fd)


# Both are variadic in C: no argtypes, every argument passed as its C type.
_PRCTL = _libc.function("prctl", ctypes.c_int)
_SYSCALL = _libc.function("syscall", ctypes.c_long)


def install(ops: frozenset[str], a: Arch) -> int:
    """Install the filter for ``ops`` on the calling thread; the listener fd."""
    return install_program(build_program(ops, a), a.nr["seccomp"])


# fcntl.ioctl, not ctypes, on the per-call path: it copies the struct in
# and out of a stack buffer with the GIL released (the supervisor must never
# stall the threads it serves: in-process they are this interpreter's), at
# a third of a ctypes call's cost.


def recv(fd: int) -> tuple[int, ...] | None:
    """The next trapped call as ``struct seccomp_notif`` unpacked: (id,
    pid -- the calling thread, in our pid namespace --, flags, nr, arch,
    instruction pointer, six arguments); None if it was withdrawn before
    we got it (the caller was killed or interrupted: ENOENT). A bare tuple:
    one is made per trapped call."""
    try:
        raw = fcntl.ioctl(fd, _NOTIF_RECV, _ZERO_NOTIF)
    except OSError as err:
        if err.errno in (_errno.ENOENT, _errno.EINTR):
            return None
        raise OSError(err.errno, f"SECCOMP_IOCTL_NOTIF_RECV: {err.strerror}") from None
    return _NOTIF.unpack(raw)


def _send(fd: int, nid: int, error: int, flags: int) -> bool:
    try:
        fcntl.ioctl(fd, _NOTIF_SEND, _RESP.pack(nid, 0, error, flags))
    except OSError as err:
        if err.errno == _errno.ENOENT:
            return False  # the caller is gone (killed, or interrupted by a signal)
        raise OSError(err.errno, f"SECCOMP_IOCTL_NOTIF_SEND: {err.strerror}") from None
    return True


def send_errno(fd: int, nid: int, errno: int) -> bool:
    """Fail the call with ``errno``; False if the caller no longer waits
    (the fault then reached nobody and must count as absorbed)."""
    return _send(fd, nid, -errno, 0)


def send_continue(fd: int, nid: int) -> bool:
    """Let the call run for real in the kernel."""
    return _send(fd, nid, 0, _USER_NOTIF_FLAG_CONTINUE)


def notif_id_valid(fd: int, nid: int) -> bool:
    try:
        fcntl.ioctl(fd, _NOTIF_ID_VALID, struct.pack("=Q", nid))
    except OSError:
        return False
    return True

