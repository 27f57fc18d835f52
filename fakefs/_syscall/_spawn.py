"""The parent side of ``fakefs run``: start CMD under the filter and answer
its trapped calls until it exits."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from .._errors import SyscallLayerError
from .._rules import FaultRule
from . import _launch
from ._filter import ARCH, build_program
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


def spawn(command: Sequence[str], rules: Sequence[FaultRule], root: str,
          env: Mapping[str, str] | None = None) -> Filtered:
    if ARCH is None:
        raise SyscallLayerError(f"the syscall layer supports x86-64 and aarch64, "
                                f"not {os.uname().machine}")
    table = RuleTable(list(rules), root=os.path.realpath(root))
    ops = frozenset().union(*(r.ops for r in rules))
    prog = build_program(ops, ARCH)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    child_env = dict(os.environ if env is None else env)
    supervisor = Supervisor(ARCH)
    try:
        # -I -S: the launcher is a stand-alone stdlib script; CMD gets the
        # environment unchanged (execvp passes os.environ on).
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", str(Path(_launch.__file__)), str(theirs.fileno()),
             str(ARCH.nr["seccomp"]), "--", *command],
            pass_fds=[theirs.fileno()], env=child_env,
        )
    except BaseException:
        supervisor.stop()
        ours.close()
        raise
    finally:
        theirs.close()
    try:
        ours.sendall(len(prog).to_bytes(4, "little") + prog)
        msg, fds, _flags, _addr = socket.recv_fds(ours, 256, 1)
        if msg != b"ok" or not fds:
            proc.wait()
            why = msg.decode(errors="replace").removeprefix("error:") or "launcher died"
            raise SyscallLayerError(f"cannot install the seccomp filter: {why}")
        supervisor.add(fds[0], table)
        ours.sendall(b"go")
    except BaseException:
        supervisor.stop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        raise
    finally:
        ours.close()
    return Filtered(proc, table, supervisor)
