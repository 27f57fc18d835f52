"""Worker processes for a batch: the clone loop on several cores.

Threads do not pay here: ``run_unit`` is Python between syscalls, so two
threads hand the GIL back and forth (tens of thousands of futex calls for
10,000 files) and their user time never overlaps. Forked children each run
``run_unit`` in their own interpreter.

What keeps the batch's contracts across processes:

* Every destination directory the batch needs is opened (or staged, or its
  error recorded) in the parent *before* the fork, so the children inherit
  one ``DirCache`` and never create a directory: two children can never
  stage the same one, and the parent's cache is the one the publish uses.
* The first source runs in the parent before the fork too, so the pair
  policies it meets are settled once (an ext4 pair still costs one failed
  clone, not one per child).
* The stop flag is one byte of shared memory: a child's failure under
  ``stop_on_error`` stops the others at their next file.
* Each child reports through its own pipe: per unit, its results (a clone is
  its size, a copy its size and errno; only failures go whole), and at the
  end its counters, pair verdicts, used staged roots and debris. Publishing
  stays in the parent, after every child has exited.
* A child that dies without its final report (killed, crashed) leaves no
  job reported as what it is not: ``_dead`` settles every job nobody
  reported from the marks the child left and the files on disk.
* An exception in the parent (Ctrl-C, SIGTERM) stops and reaps the children
  before it goes on to the caller, who removes the staging. Each child has
  PR_SET_PDEATHSIG = SIGKILL: a parent killed outright leaves no child.

Fork is only safe in a single-threaded process (a lock held by another
thread stays held in the child forever), so ``fork_ok`` says no otherwise.
"""

from __future__ import annotations

import contextlib
import gc
import mmap
import os
import pickle
import select
import signal
import threading
from collections.abc import Callable

from .._records import TYPE_CHECKING
from .._tempname import owner_tag
from ._dead import death, settle_unreported
from ._procchild import HEADER, SIGNALS, SharedStop, all_dirs, child
from ._report import JobResult, JobStatus
from ._worker import Context, Dest, ThreadStats, run_unit

if TYPE_CHECKING:
    from typing import Any

__all__ = ["SharedStop", "fork_ok", "run_processes"]

Unit = list[tuple[str, list[Dest]]]

# Unit numbers travel through one pipe shared by all children (a read of 4
# bytes from a pipe is atomic), written in full before the fork: the pipe's
# default capacity bounds how many fit.
_QUEUE_MAX = 65536 // 4


def fork_ok() -> bool:
    """Can this process fork workers? Only with a single thread, and where
    os.fork exists."""
    return hasattr(os, "fork") and threading.active_count() == 1


def chunks(units: list[Unit]) -> list[Unit]:
    """``units`` merged (consecutive ones, so directory locality is kept)
    until they fit the unit queue."""
    if len(units) <= _QUEUE_MAX:
        return units
    per = -(-len(units) // _QUEUE_MAX)
    return [[s for u in units[i:i + per] for s in u] for i in range(0, len(units), per)]


class _Child:
    __slots__ = ("buf", "done", "error", "fd", "owner", "pid", "status", "summary")

    def __init__(self, pid: int, fd: int) -> None:
        self.pid = pid
        #: what its temporaries are named after (read before it is reaped)
        self.owner = owner_tag(pid)
        self.fd = fd
        self.buf = bytearray()
        self.summary: dict[str, Any] | None = None
        self.error: str | None = None
        self.status: int | None = None
        self.done = False


def run_processes(
    ctx: Context,
    units: list[Unit],
    nprocs: int,
    parent_stats: ThreadStats,
    errors: list[BaseException],
) -> tuple[list[ThreadStats], tuple[int, ...]]:
    """Run ``units`` in ``nprocs`` forked children (the caller checked
    ``fork_ok``); results land in ``ctx.results``. Returns every process's
    stats (the parent's first) and the children's pids. An exception in the
    parent is appended to ``errors`` after the children are reaped."""
    on_result, ctx.on_result = ctx.on_result, None
    children: list[_Child] = []
    stats = [parent_stats]
    try:
        ran = _prepare(ctx, units, parent_stats)
        # The parent's own results reach the caller's callback only after the
        # fork: the callback may start a thread (a progress bar) on first use.
        early = [r for d in ran if (r := ctx.results[d.job]) is not None]
        units = chunks([u for u in units if u])
        # Shared with every child, and still readable here after one died.
        marks = mmap.mmap(-1, 4 * max(1, len(ctx.results)))
        ctx.marks = memoryview(marks).cast("i")
        _fork_all(ctx, units, nprocs, children)
        if on_result is not None:
            for r in early:
                on_result(r)
        _collect(ctx, units, children, on_result)
        stats.extend(_merge(ctx, units, children, on_result))
    except BaseException as exc:
        # Ctrl-C, SIGTERM (as an exception) or a failing callback: nothing
        # may still write into the staging once the caller removes it. This
        # function never raises, so the caller always gets to remove it.
        ctx.stop.set()
        errors.append(exc)
        while True:
            try:
                _stop_children(children, errors)
                break
            except BaseException as again:  # a second Ctrl-C: reap them anyway
                errors.append(again)
    finally:
        ctx.on_result = on_result
        if ctx.marks is not None:
            ctx.marks.release()
            ctx.marks = None
            marks.close()
        gc.unfreeze()
        for c in children:
            with contextlib.suppress(OSError):
                os.close(c.fd)
    return stats, tuple(c.pid for c in children)


def _prepare(ctx: Context, units: list[Unit], parent_stats: ThreadStats) -> list[Dest]:
    """Open every destination directory, run the first source here; its
    dests."""
    # Every directory now, in plan order (the order staged roots would get
    # in-process): a child only ever finds it open, or its error recorded.
    # One comprehension for the 40,000 dests of a big batch, then one get
    # per directory (not per dest: that was a Python loop of get() calls).
    for parent in dict.fromkeys([d[2] for unit in units for _s, ds in unit for d in ds]):
        with contextlib.suppress(OSError):
            ctx.dirs.get(parent)
    first = units[0]
    units[0] = first[1:]
    run_unit(ctx, first[:1], parent_stats)
    return first[0][1]


def _fork_all(ctx: Context, units: list[Unit], nprocs: int, children: list[_Child]) -> None:
    """Fork the children into ``children`` (the caller's list, so a signal
    arriving part way still finds every child forked so far)."""
    queue_r, queue_w = os.pipe()
    try:
        os.write(queue_w, b"".join(k.to_bytes(4, "little") for k in range(len(units))))
    finally:
        os.close(queue_w)
    parent = os.getpid()
    # Objects made so far are never freed in a child: keep the collector
    # from touching (and so copying) their pages.
    gc.freeze()
    try:
        for _ in range(min(nprocs, len(units))):
            r, w = os.pipe()
            # Blocked across the fork: a signal landing between fork() and
            # the pid being recorded would otherwise orphan a child, and in
            # the child it waits until its own handlers are in place.
            old = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
            try:
                pid = os.fork()
                if pid == 0:  # pragma: no cover - the child never returns
                    child(ctx=ctx, units=units, queue=queue_r, r=r, w=w, parent=parent, mask=old,
                          siblings=[c.fd for c in children])
                os.close(w)
                children.append(_Child(pid, r))
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, old)
    finally:
        os.close(queue_r)


def _collect(
    ctx: Context,
    units: list[Unit],
    children: list[_Child],
    on_result: Callable[[JobResult], None] | None,
) -> None:
    by_fd = {c.fd: c for c in children}
    # poll, not select: the batch holds a descriptor per destination
    # directory, so the pipes' numbers can be far above select's 1024.
    poller = select.poll()
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    while by_fd:
        for fd, _event in poller.poll():
            c = by_fd[fd]
            data = os.read(fd, 1 << 20)
            if not data:
                poller.unregister(fd)
                del by_fd[fd]
                continue
            c.buf += data
            for msg in _frames(c.buf):
                _handle(ctx, units, c, msg, on_result)
    for c in children:
        c.status = _wait(c.pid)


def _frames(buf: bytearray) -> list[Any]:
    msgs = []
    while len(buf) >= HEADER:
        size = int.from_bytes(buf[:HEADER], "little")
        if len(buf) < HEADER + size:
            break
        # Our own child, over a pipe nobody else holds.
        msgs.append(pickle.loads(buf[HEADER:HEADER + size]))  # noqa: S301
        del buf[:HEADER + size]
    return msgs


def _handle(
    ctx: Context,
    units: list[Unit],
    c: _Child,
    msg: tuple[Any, ...],
    on_result: Callable[[JobResult], None] | None,
) -> None:
    kind = msg[0]
    if kind == "unit":
        failed = _decode(ctx.results, units[msg[1]], msg[2], on_result)
        if failed and ctx.stop_on_error:
            ctx.stop.set()
    elif kind == "done":
        c.summary = msg[1]
    else:
        c.error = msg[1]


def _decode(
    results: list[JobResult | None],
    unit: Unit,
    items: list[Any],
    on_result: Callable[[JobResult], None] | None,
) -> bool:
    it = iter(items)
    failed = False
    new = tuple.__new__
    cloned, copied = JobStatus.CLONED, JobStatus.COPIED
    for source, dests in unit:
        for d in dests:
            item = next(it)
            if item is None:
                continue
            if type(item) is int:
                r = new(JobResult, (source, d.dest, cloned, item, None, None, None,
                                    None))
            elif type(item) is tuple:
                r = new(JobResult, (source, d.dest, copied, item[0], None, None, None,
                                    item[1]))
            else:
                r = item
                failed = True
            results[d.job] = r
            if on_result is not None:
                on_result(r)
    return failed


def _stop_children(children: list[_Child], errors: list[BaseException]) -> None:
    """SIGTERM every child (its handler drops the file it was making) and
    reap them all, through further signals."""
    for c in children:
        if c.status is None:  # a reaped pid may already be someone else's
            with contextlib.suppress(OSError):
                os.kill(c.pid, signal.SIGTERM)
    for c in children:
        while c.status is None:
            try:
                c.status = _wait(c.pid)
            except ChildProcessError:
                c.status = -1
            except BaseException as exc:
                errors.append(exc)


def _wait(pid: int) -> int:
    return os.waitpid(pid, 0)[1]


def _merge(
    ctx: Context,
    units: list[Unit],
    children: list[_Child],
    on_result: Callable[[JobResult], None] | None,
) -> list[ThreadStats]:
    stats = []
    dead: list[str] = []
    roots = {r.path: r for r in ctx.dirs.roots}
    dirs = {r.path: r for r in all_dirs(ctx)}
    for c in children:
        s = c.summary
        if s is None or c.status != 0:
            dead.append(death(c.pid, c.status, c.error))
            continue
        stats.append(ThreadStats(pairs=s["pairs"], used_roots={roots[p] for p in s["used"]},
                                 shared=s["shared"], shared_unknown=s["shared_unknown"]))
        for key, err in s["disabled"].items():
            ctx.pair(key).note_disabled(err)
        for path, names in s["debris"].items():
            dirs[path].debris.extend(names)
    if dead:
        owners = [c.owner for c in children if c.owner is not None]
        stats.append(settle_unreported(ctx, units, "; ".join(dead), owners, on_result))
    return stats
