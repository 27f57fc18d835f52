"""The worker process's side of ``_procs``: run units from the shared queue,
report each, then a summary; never return into the caller's stack."""

from __future__ import annotations

import contextlib
import gc
import mmap
import os
import pickle
import signal
from collections.abc import Iterable

from .. import _libc
from .._records import TYPE_CHECKING
from ._dirs import DestDir
from ._report import JobResult, JobStatus
from ._worker import Context, Dest, ThreadStats, run_unit

if TYPE_CHECKING:
    from typing import Any

__all__ = ["HEADER", "SIGNALS", "SharedStop", "all_dirs", "child"]

Unit = list[tuple[str, list[Dest]]]

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# A child's exit codes: 0 after its final report; _EXIT_BUG after a Python
# exception (its text is sent first); 128+n when a signal stopped it.
_EXIT_BUG = 70
#: bytes of the length before each pickled message
HEADER = 8


class SharedStop:
    """``threading.Event``'s ``is_set``/``set`` over one byte of anonymous
    shared memory, so a flag set in one process is seen by all forked ones."""

    __slots__ = ("_flag",)

    def __init__(self) -> None:
        self._flag = mmap.mmap(-1, 1)

    def is_set(self) -> bool:
        return self._flag[0] != 0

    def set(self) -> None:
        self._flag[0] = 1


def _encode(results: list[JobResult | None], unit: Unit) -> list[Any]:
    """A unit's results, compact: the parent knows each job's source and
    dest, so a clone is just its size and a copy its size and clone errno."""
    out: list[Any] = []
    add = out.append
    cloned, copied = JobStatus.CLONED, JobStatus.COPIED
    for _source, dests in unit:
        for d in dests:
            r = results[d.job]
            if r is None:
                add(None)
            elif r.status is cloned:
                add(r.bytes)
            elif r.status is copied:
                add((r.bytes, r.reflink_errno))
            else:
                add(r)
    return out


def _send(fd: int, msg: tuple[Any, ...]) -> None:
    data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(len(data).to_bytes(HEADER, "little") + data)
    while view:
        view = view[os.write(fd, view):]


class _Stopped(BaseException):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_stopped(signum: int, _frame: object) -> None:
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise _Stopped(signum)


def child(
    *,
    ctx: Context,
    units: list[Unit],
    queue: int,
    r: int,
    w: int,
    parent: int,
    mask: Iterable[int],
    siblings: list[int],
) -> None:  # pragma: no cover - runs in the child
    code = _EXIT_BUG
    try:
        try:
            os.close(r)
            for fd in siblings:
                os.close(fd)
            if not _libc.die_with_parent(parent, signal.SIGKILL):
                os._exit(128 + signal.SIGKILL)
            for sig in SIGNALS:
                signal.signal(sig, _raise_stopped)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            # Short-lived, and everything it allocates dies with it.
            gc.disable()
            mine = ThreadStats()
            stopped = ctx.stop.is_set
            while not stopped():
                b = os.read(queue, 4)
                if len(b) < 4:
                    break
                k = int.from_bytes(b, "little")
                run_unit(ctx, units[k], mine)
                _send(w, ("unit", k, _encode(ctx.results, units[k])))
            _send(w, ("done", _summary(ctx, mine)))
            code = 0
        except _Stopped as stop:
            code = 128 + stop.signum
        except BaseException as exc:
            with contextlib.suppress(BaseException):
                _send(w, ("error", f"{type(exc).__name__}: {exc}"))
    finally:
        # Never back into the caller's stack (its finally blocks would
        # publish or remove the staging a second time), and no atexit or
        # stdio flush of the parent's buffers.
        os._exit(code)


def _summary(ctx: Context, mine: ThreadStats) -> dict[str, Any]:
    debris = {}
    for d in all_dirs(ctx):
        if d.debris:
            debris[d.path] = list(d.debris)
    return {
        "pairs": mine.pairs,
        "disabled": {k: p.disabled_errno for k, p in ctx.policies().items()
                     if p.disabled_errno is not None},
        "used": [root.path for root in mine.used_roots],
        "shared": mine.shared,
        "shared_unknown": mine.shared_unknown,
        "debris": debris,
    }


def all_dirs(ctx: Context) -> list[DestDir]:
    return [d for r in ctx.dirs.roots for d in (r, *r.created)]
