"""The filtered child of ``fakefs run``: ``python -m fakefs._syscall._launch
SOCKFD OPS -- CMD...``.

It installs the filter on itself, hands the listener to the parent over the
socketpair (``socket.send_fds``), waits for the parent's go (so not one
trapped call of CMD can precede a supervisor able to answer it), and execs
CMD; the filter survives execve and is inherited by every descendant. A
separate interpreter rather than ``preexec_fn``: Python code between fork
and exec in a threaded parent (the supervisor is a thread) can deadlock.
"""

from __future__ import annotations

import os
import socket
import sys

from ._filter import ARCH
from ._notify import install

#: exit status when CMD cannot be started (as a shell says it)
_CANNOT_EXEC = 127


def main(argv: list[str]) -> int:
    sock_fd, ops_text, sep, *command = argv
    if sep != "--" or not command or ARCH is None:
        return 2
    sock = socket.socket(fileno=int(sock_fd))
    try:
        listener = install(frozenset(ops_text.split(",")), ARCH)
    except OSError as err:
        sock.sendall(f"error:{err.strerror}".encode())
        return 1
    socket.send_fds(sock, [b"ok"], [listener])
    os.close(listener)
    if sock.recv(2) != b"go":
        return 1
    sock.close()
    try:
        os.execvp(command[0], command)  # noqa: S606 - the user's command, as given
    except OSError as err:
        print(f"fakefs: error: cannot run {command[0]!r}: {err.strerror}", file=sys.stderr)
    return _CANNOT_EXEC


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
