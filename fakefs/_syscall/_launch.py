"""The filtered child of ``fakefs run``, and the one filter installer.

Run as a script (``python -I -S .../_launch.py SOCKFD SECCOMP_NR -- CMD...``,
standard library only and no package import, so the child starts in tens of
milliseconds rather than importing fakefs and probe): it receives the BPF
program from the parent over the socketpair, installs it on itself, hands
the listener back (``socket.send_fds``), waits for the parent's go (so not
one trapped call of CMD can precede a supervisor able to answer it), and
execs CMD; the filter survives execve and every descendant inherits it. A
separate interpreter rather than ``preexec_fn``: Python code between fork
and exec in a threaded parent (the supervisor is a thread) can deadlock.
"""

from __future__ import annotations

import ctypes
import os
import socket
import sys

_SECCOMP_SET_MODE_FILTER = 1
_SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
_PR_SET_NO_NEW_PRIVS = 38
_CAP_SYS_ADMIN = 21
#: exit status when CMD cannot be started (as a shell says it)
_CANNOT_EXEC = 127


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


def _has_cap_sys_admin() -> bool:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("CapEff:"):
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
    # Not probe._libc: this file runs as `python -I -S` with no package on
    # the path. The interpreter's own namespace has libc, and no ldconfig.
    libc = ctypes.CDLL(None, use_errno=True)
    if not _has_cap_sys_admin() and libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    buf = ctypes.create_string_buffer(prog, len(prog))
    fprog = _SockFprog(len(prog) // 8, ctypes.cast(buf, ctypes.c_void_p))
    fd = libc.syscall(
        ctypes.c_long(seccomp_nr), ctypes.c_uint(_SECCOMP_SET_MODE_FILTER),
        ctypes.c_uint(_SECCOMP_FILTER_FLAG_NEW_LISTENER), ctypes.byref(fprog),
    )
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    os.set_inheritable(fd, False)
    return int(fd)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def main(argv: list[str]) -> int:
    sock_fd, seccomp_nr, sep, *command = argv
    if sep != "--" or not command:
        return 2
    sock = socket.socket(fileno=int(sock_fd))
    size = int.from_bytes(_recv_exact(sock, 4), "little")
    prog = _recv_exact(sock, size)
    try:
        listener = install_program(prog, int(seccomp_nr))
    except OSError as err:
        sock.sendall(f"error:{err.strerror}".encode())
        return 1
    socket.send_fds(sock, [b"ok"], [listener])
    os.close(listener)
    if _recv_exact(sock, 2) != b"go":
        return 1
    sock.close()
    try:
        os.execvp(command[0], command)  # noqa: S606 - the user's command, as given
    except OSError as err:
        print(f"fakefs: error: cannot run {command[0]!r}: {err.strerror}", file=sys.stderr)
    return _CANNOT_EXEC


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
