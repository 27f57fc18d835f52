"""``fakefs.syscall_faults()``: syscall rules for a block of this process.

How a block ends (a seccomp filter can never be removed): the filter is
installed once per thread, on the calling thread only (NEW_LISTENER, no
TSYNC), and stays; after the block its rule table is empty and the
supervisor answers every trapped call with CONTINUE, so the calls run as
before at the cost of one round trip each (see
tests/benchmarks/bench_syscall.py). A later block on the same thread
reuses the filter. The kernel allows one listener per task (a second
NEW_LISTENER filter fails with EBUSY), so the first block's filter traps
every call the layer knows, not only the ones its rules name: after it,
fsync, rename & co. on that thread pay the round trip too. The open
family (open, openat, ...) is never trapped in-process, and a rule naming
it is refused (see syscall_faults): ``fakefs run`` fails opens. For the same
reason a process already running under ``fakefs run`` cannot open a block
(a clear SyscallLayerError). Threads and processes started from a filtered thread inherit its
filter -- inside the block that is the point (they are covered); after it
they merely pay the round trip. A child that outlives this process gets
ENOSYS from its trapped calls once the listener closes with us: do not
start long-lived daemons from a thread that ran a block, nor ``fakefs run``
(its child cannot get a listener of its own: EBUSY). Library code that must
leave its thread clean runs the block in a fresh thread, whose filter ends
with it (the conformance runner does).

The supervisor thread is started before the filter exists (a thread
started by a filtered one would carry the filter), makes no trapped call
itself, so it can never wait on its own answer, and ends once the last
filtered thread has.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from .._errors import SyscallLayerError
from .._rules import OPEN_OPS, FaultRule
from ._filter import ARCH, parse_syscall_rules, supported_ops
from ._notify import install
from ._supervisor import Supervisor
from ._table import RuleTable

__all__ = ["SyscallFaults", "parse_syscall_rules", "syscall_faults"]


class SyscallFaults:
    """The handle a ``syscall_faults`` block yields: counters and trace."""

    def __init__(self, table: RuleTable) -> None:
        self._table: RuleTable | None = table
        self._final: tuple[list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]] = (
            [], {}, [])

    def freeze(self) -> None:
        """Keep what the block saw: the thread's table serves the next block."""
        if self._table is not None:
            t = self._table
            self._final = (t.listing(), t.counters(), t.records())
            self._table = None

    def faults(self) -> list[dict[str, Any]]:
        """Each rule with its hits (delivered faults), matches and absorbed."""
        return self._table.listing() if self._table else self._final[0]

    def counters(self) -> dict[str, Any]:
        return self._table.counters() if self._table else self._final[1]

    def trace(self) -> list[dict[str, Any]]:
        """Every trapped call in the block: op, paths, pid, rule, errno."""
        return self._table.records() if self._table else self._final[2]


class _ThreadState:
    def __init__(self) -> None:
        self.table = RuleTable()
        self.trapped: frozenset[str] = frozenset()
        self.active = False


_lock = threading.Lock()
_supervisor: Supervisor | None = None
#: per thread *object*, not per ident: an ident is reused by a new thread
#: once the old one exits, and the new one carries no filter.
_local = threading.local()


def _get_supervisor() -> Supervisor:
    global _supervisor
    with _lock:
        if _supervisor is None:
            if ARCH is None:
                raise SyscallLayerError(
                    f"the syscall layer supports x86-64 and aarch64, not {os.uname().machine}"
                )
            _supervisor = Supervisor(ARCH)
        return _supervisor


@contextlib.contextmanager
def syscall_faults(
    rules: Iterable[str | FaultRule], root: str | os.PathLike[str] | None = None
) -> Iterator[SyscallFaults]:
    """Apply syscall ``rules`` to the calling thread (and the threads and
    processes it starts) for the ``with`` block.

    Globs are relative to ``root`` (default: the current directory); a file
    outside it never matches. Unmatched calls run for real. Raises
    RuleError for a bad rule and SyscallLayerError where seccomp user
    notification is unavailable, both before anything is installed.
    """
    parsed = parse_syscall_rules(rules)
    opens = frozenset().union(*(r.ops for r in parsed)) & OPEN_OPS
    if opens:
        # The answering thread is Python: it needs the GIL. C code that
        # opens a file while holding it (dlopen for an extension import,
        # tzset in time.localtime, getpwnam) would wait for an answer that
        # can never come. Under fakefs run the supervisor is another process.
        raise SyscallLayerError(
            f"{', '.join(sorted(opens))} can be failed only in another process (fakefs run "
            f"-- CMD): in this one, C code that opens a file holding the GIL (an extension "
            f"import, tzset, getpwnam) would wait forever on the answering thread")
    base = os.path.realpath(os.fspath(root) if root is not None else os.getcwd())
    if not os.path.isdir(base):
        raise SyscallLayerError(f"root {base!r} is not a directory")
    sup = _get_supervisor()
    state: _ThreadState | None = getattr(_local, "state", None)
    if state is None:
        state = _local.state = _ThreadState()
    if state.active:
        raise SyscallLayerError("syscall_faults() blocks do not nest on one thread")
    if not state.trapped:
        assert ARCH is not None  # _get_supervisor checked
        trap = supported_ops(ARCH) - OPEN_OPS
        sup.reserve()  # the answering thread exists before our filter does
        try:
            fd = install(trap, ARCH)
        except OSError as err:
            sup.release()
            why = err.strerror
            if err.errno == errno.EBUSY:
                why = "this thread already has a seccomp listener (running under fakefs run?)"
            raise SyscallLayerError(f"cannot install the seccomp filter: {why}") from None
        except BaseException:
            sup.release()
            raise
        sup.add(fd, state.table, reserved=True)
        state.trapped = trap
    table = state.table
    table.clear()
    table.reset_observations()
    table.root = base
    for rule in parsed:
        table.add(rule)
    state.active = True
    handle = SyscallFaults(table)
    try:
        yield handle
    finally:
        handle.freeze()
        table.clear()
        state.active = False
