"""The parent side of ``fakefs run``: start CMD under the filter and answer
its trapped calls until it exits.

The filter is installed in the forked child just before it execs CMD
(``preexec_fn``), and the child hands the listener back over a socketpair.
That runs Python between fork and exec, which is only safe in a process
with no other thread -- so the supervisor thread is started *after* the
child exists (``spawn`` refuses to run otherwise). CMD's trapped calls made
before the supervisor listens simply wait in the kernel for their answer.
A separate launcher interpreter did the same at the cost of one more
interpreter start (~25 ms on every run).
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from probe import _libc

from .._errors import SyscallLayerError
from .._rules import FaultRule
from ._filter import ARCH, build_program
from ._notify import install_program

if TYPE_CHECKING:
    from ._supervisor import Supervisor
    from ._table import RuleTable

__all__ = ["Filtered", "spawn"]


class Filtered:
    """A running filtered command: its process, the table, the supervisor."""

    def __init__(self, proc: subprocess.Popen[bytes], table: RuleTable,
                 supervisor: Supervisor) -> None:
        self.proc = proc
        self.table = table
        self._supervisor = supervisor

    def close(self) -> None:
        """Stop answering. Descendants of CMD still alive afterwards get
        ENOSYS from their trapped calls (the listener closes with us)."""
        self._supervisor.stop()


def _filter_then_exec(prog: bytes, seccomp_nr: int, sock: socket.socket, parent: int) -> None:
    # In the child, between fork and exec: no thread but this one exists.
    try:
        # CMD dies with fakefs. A supervisor gone (SIGKILLed, OOM-killed)
        # closes the listener, and from then on the kernel fails every call
        # the filter traps with ENOSYS: errors nobody injected, counted or
        # traced, in a command that would run on as if under the rules.
        # (CMD's own children do not inherit this; they end when they
        # notice CMD is gone, or never -- see NOTES.md.)
        if not _libc.die_with_parent(parent, signal.SIGKILL):
            raise OSError(errno.ESRCH, "fakefs exited before its command started")
        listener = install_program(prog, seccomp_nr)
    except Exception as err:
        why = err.strerror if isinstance(err, OSError) else f"{type(err).__name__}: {err}"
        sock.sendall(f"error:{why}".encode())
        raise
    socket.send_fds(sock, [b"ok"], [listener])
    os.close(listener)


def spawn(command: Sequence[str], rules: Sequence[FaultRule], root: str,
          env: Mapping[str, str] | None = None) -> Filtered:
    if ARCH is None:
        raise SyscallLayerError(f"the syscall layer supports x86-64 and aarch64, "
                                f"not {os.uname().machine}")
    if threading.active_count() != 1:
        raise SyscallLayerError("fakefs run must start its command before any other thread")
    ops = frozenset().union(*(r.ops for r in rules))
    prog = build_program(ops, ARCH)
    nr = ARCH.nr["seccomp"]
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    me = os.getpid()
    try:
        try:
            # Both ends are close-on-exec: CMD inherits neither.
            proc = subprocess.Popen(
                list(command), env=dict(os.environ if env is None else env),
                preexec_fn=lambda: _filter_then_exec(prog, nr, theirs, me),  # noqa: PLW1509 - no thread yet
            )
        finally:
            # Closed before any read below: with our copy of the child's end
            # open, a child that died without a word would never be EOF.
            theirs.close()
    except subprocess.SubprocessError:
        # preexec_fn raised: the child said why before it did (or nothing).
        why = ours.recv(256).decode(errors="replace").removeprefix("error:") or "unknown"
        ours.close()
        raise SyscallLayerError(f"cannot install the seccomp filter: {why}") from None
    except BaseException:
        ours.close()
        raise
    try:
        msg, fds, _flags, _addr = socket.recv_fds(ours, 256, 1)
        if msg != b"ok" or not fds:
            raise SyscallLayerError("cannot install the seccomp filter: no listener came back")
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        ours.close()
    # Loaded only now, while CMD is already starting on the other CPU: its
    # trapped calls wait in the kernel until the supervisor answers.
    from ._supervisor import Supervisor
    from ._table import RuleTable

    table = RuleTable(list(rules), root=os.path.realpath(root))
    supervisor = Supervisor(ARCH)
    supervisor.dedicate(fds[0], table)
    return Filtered(proc, table, supervisor)
