"""What a worker process that died leaves behind, settled: every job it
never reported gets the result that is true of the files on disk.

The child marks each job in shared memory (``Context.marks``) before its
file goes into place, and the mark survives the child. A mark alone is not
proof -- the child may have died between marking and renaming -- so it is
believed only where the file is provably in place: under its final name
in a staged directory (written there directly), or, in a directory that
existed, once the child's temporary for that name is gone (the rename is
what removes it). Every other unreported job is FAILED: its file unlinked
from a staged directory, so no torn file is published, and the dead
child's temporaries unlinked from the others, not left for the next run.

The jobs settled as done count in the pair counters as the child would
have counted them: a clone call that cloned, or one that failed before a
copy (a mark keeps that errno). Retries the child made (EAGAIN) are not
known and not counted.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

from .._copy import discard
from .._fd import names_now
from .._tempname import temp_prefix
from ._dirs import DestDir
from ._report import JobResult, JobStatus, unmark
from ._worker import Context, Dest, ThreadStats, drop

__all__ = ["death", "settle_unreported"]

Unit = list[tuple[str, list[Dest]]]


def death(pid: int, status: int | None, error: str | None) -> str:
    """Why a child's unreported jobs failed, in words."""
    status = status or 0
    if error is not None:
        how = f"failed ({error})"
    elif os.WIFSIGNALED(status):
        how = f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
    else:
        how = f"exited with status {os.waitstatus_to_exitcode(status)}"
    return f"worker process {pid} {how} before reporting this job"


def settle_unreported(
    ctx: Context,
    units: list[Unit],
    why: str,
    owners: list[str],
    on_result: Callable[[JobResult], None] | None,
) -> ThreadStats:
    """Jobs a dead child never reported: done where its mark says so and
    the file is provably in place, else FAILED (see the module's text).
    Returns the staged roots those done jobs put a file in (to publish) and
    their pair counters."""
    results, marks = ctx.results, ctx.marks
    assert marks is not None
    temps: dict[str, list[str]] = {}
    # Its FIEMAP share is unknown, and so is the total.
    stats = ThreadStats(shared_unknown=True)
    used = stats.used_roots
    source_devs: dict[str, int] = {}
    for unit in units:
        for source, dests in unit:
            for d in dests:
                if results[d.job] is not None:
                    continue
                ddir = ctx.dirs.lookup(d.parent)
                res = None
                if ddir is not None:
                    if not ddir.fresh and ddir.path not in temps:
                        temps[ddir.path] = _temporaries(ddir, owners)
                    if marks[d.job] and (ddir.fresh or not _pending(d.name, owners,
                                                                     temps[ddir.path])):
                        res = _done(source, d, ddir, marks[d.job])
                    if res is not None:
                        _count(stats, res, _source_dev(source, source_devs), ddir.dev)
                        if ddir.root is not None:
                            used.add(ddir.root)
                    elif res is None and ddir.fresh:
                        drop(ddir, d.name)
                if res is None:
                    res = JobResult(source, d.dest, JobStatus.FAILED, path=d.dest, error=why)
                results[d.job] = res
                if on_result is not None:
                    on_result(res)
    for path, names in temps.items():
        ddir = ctx.dirs.lookup(path)
        if ddir is not None:
            discard(names, ddir.fd)
    return stats


def _source_dev(source: str, known: dict[str, int]) -> int:
    # One stat per source directory: a unit's sources share theirs.
    sdir = source.rpartition("/")[0]
    dev = known.get(sdir)
    if dev is None:
        try:
            dev = known[sdir] = os.stat(source).st_dev
        except OSError:
            dev = -1  # gone since: counted under no real pair
    return dev


def _count(stats: ThreadStats, res: JobResult, source_dev: int, dest_dev: int) -> None:
    # [clone calls, failed calls, cloned, copied], as the worker keeps them.
    c = stats.pairs.setdefault((source_dev, dest_dev), [0, 0, 0, 0])
    if res.status is JobStatus.CLONED:
        c[0] += 1
        c[2] += 1
    else:
        if res.reflink_errno is not None:
            c[0] += 1
            c[1] += 1
        c[3] += 1


def _temporaries(ddir: DestDir, owners: list[str]) -> list[str]:
    """The temporaries the dead children left in ``ddir`` (made after its
    descriptor was opened: ``names_now``)."""
    tags = tuple(f".cowprobe-{o}-" for o in owners)
    try:
        names = names_now(ddir.fd)
    except OSError:
        return []
    return [n for n in names if n.startswith(".") and any(t in n for t in tags)]


def _pending(name: str, owners: list[str], temps: list[str]) -> bool:
    """Is a dead child's temporary for ``name`` still there (the rename
    into place never happened)? A child has one in flight at a time."""
    prefixes = tuple(temp_prefix(name, o) for o in owners)
    return any(t.startswith(prefixes) for t in temps)


def _done(source: str, d: Dest, ddir: DestDir, value: int) -> JobResult | None:
    """The result a marked job would have been sent with; None if its file
    is not there after all."""
    try:
        size = os.stat(d.name, dir_fd=ddir.fd, follow_symlinks=False).st_size
    except OSError:
        return None
    cloned, reflink_errno = unmark(value)
    if cloned:
        return JobResult(source, d.dest, JobStatus.CLONED, size)
    return JobResult(source, d.dest, JobStatus.COPIED, size, reflink_errno=reflink_errno)
