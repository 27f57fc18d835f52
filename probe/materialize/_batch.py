"""materialize(): many blobs into many worktrees, cloned where the filesystem
pair can, copied where it cannot, with one failure never deciding for the
rest of the batch.

The moving parts, one module each:

* ``_policy`` -- per (source fs, dest fs) pair: when to stop
  trying to clone (UNSUPPORTED, repeated EINVAL) and when not to (a vanished
  source, one NOCOW file, EAGAIN).
* ``_dirs`` -- destination directories opened once (never through a
  symlink below a worktree root), missing ones staged under a hidden name.
* ``_publish`` -- the staged directories renamed into place at the end, or
  removed if the batch ends in an exception.
* ``_worker`` -- one source opened once, cloned or copied into all
  of its destinations.
* ``_report`` -- the results.

Work is split into units of consecutive sources from one source directory,
handed to worker threads (the clone and copy syscalls release the GIL).
Whole directories per thread, rather than alternate files, keep two threads
out of each other's directory locks.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable, Iterable

from .. import _linux
from .._copy import check_mode
from .._paths import PathArg, as_count, as_path, as_paths
from .._platform import current
from ._dirs import (
    DestDir,
    DirCache,
    beneath,
    dir_key,
    refuse_aliases,
    refuse_read_writes,
    worktree_roots,
)
from ._publish import discard_roots, fail_unpublished, publish_roots, sync_dirs
from ._report import JobResult, JobStatus, MaterializeReport, PairStats
from ._threads import run_threads
from ._worker import Context, Dest, ThreadStats

__all__ = [
    "DEFAULT_MAX_PROCESSES", "DEFAULT_MAX_WORKERS", "BeforePublish", "default_processes",
    "default_workers", "materialize", "run_batch",
]

#: Measured on 2-core VMs (tests/benchmarks/bench_materialize.py): a second
#: thread gave 1.2-1.9x on XFS and 1.1-1.3x on btrfs; a third was slower on
#: both (btrfs serialises on its tree locks, and the GIL hand-offs grow).
DEFAULT_MAX_WORKERS = 2
# Below this many dest files a thread costs more to start than it saves
# (~0.1 ms, against ~25 us of syscalls per file). Measured with 200 files of
# 8 MiB into one worktree: a second thread took XFS from 6.1 to 4.4 ms and
# ext4 (copying) from 0.38 to 0.24 s, and cost btrfs nothing.
_MIN_JOBS_PER_EXTRA_WORKER = 64
#: Worker processes when the batch chooses (see default_processes). Measured
#: on a 2-core VM, whole `cowprobe materialize` processes, 10,000 x 4 KiB,
#: 1 worktree: XFS 0.66 s with 2 processes against 0.94 s with 2 threads
#: and 0.93 s with 1 (cp: 0.64 s); btrfs 0.91 s against 0.91 s and 1.01 s
#: (btrfs's own tree locks serialise the clones: no gain, and no loss).
DEFAULT_MAX_PROCESSES = 2
# Below this many dest files a second process costs more (fork, the
# children's copy-on-write page faults, the report pipe) than it saves:
# 200 files +0.02 s, 1,000 and 3,000 files even (XFS, 4 KiB files).
_MIN_JOBS_PER_PROCESS = 2000
# Work unit cap, in dest files: big enough that threads rarely meet in one
# directory, small enough to balance a flat tree.
_UNIT_JOBS = 512

Plan = list[tuple[str, list[Dest]]]


def _cpus() -> int:
    """CPUs this process may run on."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return n or 1


def default_workers(jobs: int, units: int) -> int:
    n = min(DEFAULT_MAX_WORKERS, _cpus(), units, 1 + jobs // _MIN_JOBS_PER_EXTRA_WORKER)
    return max(1, n)


def default_processes(jobs: int) -> int:
    """Worker processes for a batch of ``jobs`` dest files, when the caller
    lets the batch choose (``cowprobe materialize``)."""
    if jobs < _MIN_JOBS_PER_PROCESS:
        return 1
    return max(1, min(DEFAULT_MAX_PROCESSES, _cpus()))


def materialize(
    jobs: Iterable[tuple[PathArg, PathArg]],
    *,
    workers: int | None = None,
    stop_on_error: bool = False,
    mode: int | None = None,
    measure_sharing: bool = False,
    on_result: Callable[[JobResult], None] | None = None,
    fsync: bool = False,
    worktrees: Iterable[PathArg] = (),
    processes: int = 1,
) -> MaterializeReport:
    """Make each ``dest`` a copy of its ``source``: a reflink where the pair
    of filesystems can clone, a byte copy where it cannot.

    * Reflinks are given up per (source filesystem, dest filesystem) pair,
      after its first UNSUPPORTED (exactly one failed syscall for, say, an
      ext4 pair), or after several EINVALs in a row with no success (btrfs
      says EINVAL per file for NOCOW files). A vanished source or an EAGAIN
      never switches them off.
    * A source that is gone fails its jobs as VANISHED, naming the source.
      ENOSPC, EDQUOT, EIO and other errors fail the job (FAILED, errno and
      path in the result); never a silent fallback.
    * Destinations appear atomically: a file is built under a temporary
      name and renamed over its final one, or -- in a directory this batch
      creates -- built in a directory that itself appears, by one rename,
      only at the end of the batch. Parents are created. An existing dest is
      replaced only by a complete new file and is untouched if its job fails.
    * Interrupted (KeyboardInterrupt, a signal turned into an exception, any
      BaseException): the exception is raised after the directories this
      batch was building are removed; none is published half full.
    * ``worktrees``: every dest must lie below one of these directories, and
      below it no symlink is followed -- a symlink where a directory should
      be fails the jobs under it (FAILED, ELOOP), so nothing is written
      outside the worktree.
    * ``fsync``: each file is fsynced before it is renamed into place (or its
      staged directory is), and each directory after; an fsync error fails
      the job and, for the file's own fsync, keeps the old dest.
    * Permission bits follow the source unless ``mode`` is given.
    * ``stop_on_error``: stop at the first failure (the jobs not started are
      SKIPPED); otherwise every job is attempted and every failure reported.
    * ``measure_sharing``: verify the sharing -- ask the filesystem (FIEMAP,
      once per cloned source, after its clones) how many bytes really share
      blocks -> ``bytes_shared``, ``sharing_verified``. Off by default: it is
      one more ioctl per file than cp issues, and with FIEMAP_FLAG_SYNC a
      forced write-back of the source.
    * ``on_result`` is called with each JobResult as it finishes, from the
      worker threads (with ``processes``, from the calling thread, as each
      worker process reports a unit of work).
    * ``processes``: above 1, the work runs in that many forked worker
      processes (one thread each; ``workers`` must then be 1 or None),
      which pays on several cores where threads do not (the GIL). For
      single-threaded callers: fork is only safe in a process with one
      thread, so with other threads running the batch stays in-process
      (``MaterializeReport.processes`` says which ran). Every contract
      above holds; a worker process that dies fails the jobs it had not
      reported, and the caller's SIGKILL takes the workers with it.

    Bad arguments (not a pair, an empty path, a dest naming a directory, the
    same dest twice -- also by two paths to one directory, through a
    symlink, ".." or a second mount --, a dest outside ``worktrees``) raise
    before anything is touched. ``workers`` defaults to a measured choice (``default_workers``).
    """
    return run_batch(jobs, workers=workers, stop_on_error=stop_on_error, mode=mode,
                     measure_sharing=measure_sharing, on_result=on_result, fsync=fsync,
                     worktrees=as_paths(worktrees, "worktree"),
                     processes=processes)


#: before_publish(dirs, stopped): the caller's own entries, made in the
#: batch's directories after the files and before the publish; returns the
#: staged roots it put something in
BeforePublish = Callable[[DirCache, bool], set[DestDir]]


def run_batch(
    jobs: Iterable[tuple[PathArg, PathArg]],
    *,
    workers: int | None,
    stop_on_error: bool,
    mode: int | None,
    measure_sharing: bool,
    on_result: Callable[[JobResult], None] | None,
    fsync: bool,
    worktrees: list[str],
    before_publish: BeforePublish | None = None,
    processes: int | None = 1,
    planned: tuple[Plan, int] | None = None,
) -> MaterializeReport:
    """``materialize``, with a hook for ``mirror``'s directories and symlinks;
    ``processes=None``: ``default_processes``. ``planned``: (plan, jobs)
    built by a caller whose jobs cannot fail ``_plan``'s checks (``mirror``'s
    walk), instead of ``jobs``."""
    started = time.perf_counter()
    workers = None if workers is None else as_count(workers, "workers")
    processes = None if processes is None else as_count(processes, "processes")
    if processes is not None and processes > 1 and workers is not None and workers > 1:
        raise ValueError("workers and processes cannot both be above 1: each worker "
                         "process runs one thread")
    mode = check_mode(mode)  # clone_or_copy's rule: never a set-id bit
    if planned is not None:
        plan, njobs = planned
    else:
        plan, njobs = _plan(jobs)
        if worktrees:
            _check_beneath(plan, worktrees)
    units = _units(plan)
    nworkers = min(workers, max(1, len(units))) if workers else default_workers(njobs, len(units))
    results: list[JobResult | None] = [None] * njobs
    ctx = Context(
        dirs=DirCache(worktrees),
        results=results,
        clone=current().clone_fd or _no_clone_fd,
        mode=mode,
        umask=_read_umask(),
        stop_on_error=stop_on_error,
        stop=threading.Event(),
        measure_sharing=measure_sharing,
        on_result=on_result,
        shared_bytes=_linux.shared_bytes,
        fsync=fsync,
    )
    if processes is None:
        processes = 1 if workers is not None else default_processes(njobs)
    nprocs = 1
    if processes > 1 and len(units) > 1:
        # Imported only for a forking batch: pickle, mmap and the children's
        # machinery are no part of an in-process one's start-up.
        from . import _procs

        nprocs = processes if _procs.fork_ok() else 1
    if nprocs > 1:
        ctx.stop = _procs.SharedStop()
        nworkers = 1
    stats = [ThreadStats() for _ in range(nworkers)]
    errors: list[BaseException] = []
    pids: tuple[int, ...] = ()
    try:
        if nprocs > 1:
            stats, pids = _procs.run_processes(ctx, units, nprocs, stats[0], errors)
        else:
            run_threads(ctx, units, stats, errors)
        used: set[DestDir] = set().union(*(s.used_roots for s in stats))
        if before_publish is not None and not errors:
            try:
                used |= before_publish(ctx.dirs, ctx.stop.is_set())
            except BaseException as exc:
                errors.append(exc)
        if errors:
            # Interrupted or broken: nothing staged may appear under a final
            # name, since the batch is not finished.
            discard_roots(ctx.dirs.roots)
            raise errors[0]
        failures = publish_roots(ctx.dirs.roots, used, fsync=fsync, umask=ctx.umask)
        if fsync:
            failures.update(sync_dirs(ctx.dirs.existing()))
        if failures:
            fail_unpublished(ctx.dirs, plan, results, failures)
    finally:
        ctx.dirs.close()
    if any(r is None for r in results):
        for source, dests in plan:
            for d in dests:
                if results[d.job] is None:
                    results[d.job] = JobResult(source, d.dest, JobStatus.SKIPPED)
    final = tuple(r for r in results if r is not None)
    shared: int | None = None
    if measure_sharing and not any(s.shared_unknown for s in stats):
        shared = sum(s.shared for s in stats)
    return MaterializeReport(
        results=final,
        pairs=_pair_stats(ctx, stats),
        seconds=time.perf_counter() - started,
        workers=nworkers,
        bytes_shared=shared,
        processes=max(1, len(pids)),
        worker_pids=pids,
    )


def _check_beneath(plan: Plan, worktrees: list[str]) -> None:
    roots = worktree_roots(worktrees)
    parents = {d.parent: d.dest for _source, dests in plan for d in dests}
    for parent, dest in parents.items():
        if beneath(parent, roots) is None:
            raise ValueError(f"destination {dest!r} is not inside any of the worktrees")


def _plan(jobs: Iterable[tuple[PathArg, PathArg]]) -> tuple[Plan, int]:
    """Jobs grouped by source, in first-appearance order; raises on bad input."""
    # Runs once per job before any syscall, so every lookup it can skip is
    # measurable in a 40 000-job batch: locals for the dicts' methods, one
    # setdefault for the duplicate check, the last source's list reused
    # (a source's jobs are usually adjacent: one per worktree).
    by_source: dict[str, list[Dest]] = {}
    #: the dest, spelled canonically (see _dirs.dir_key) -> the job that writes it
    seen: dict[str, int] = {}
    #: a parent as spelled -> as the directory cache keys it; the very same
    #: string where the spelling is already tidy (the common case)
    tidy: dict[str, str] = {}
    first = seen.setdefault
    group = by_source.setdefault
    new_dest = tuple.__new__
    last_src: str | None = None
    last: list[Dest] = []
    i = -1
    for i, job in enumerate(jobs):
        try:
            source, dest = () if isinstance(job, str) else job  # "ab" is no pair: a -> b
        except (TypeError, ValueError):
            raise TypeError(f"job {i}: expected a (source, dest) pair, got {job!r}") from None
        # as_path per job is measurable in a 40 000-job batch; a plain str
        # needs only its two checks, done inline.
        src = source if type(source) is str and source and "\0" not in source else as_path(
            source, f"job {i}: source")
        dst = dest if type(dest) is str and dest and "\0" not in dest else as_path(
            dest, f"job {i}: destination")
        # rpartition, not os.path.split: this runs once per job, and split's
        # generality (bytes, other separators) costs more than the clone's
        # Python side. The parent is the directory cache's key: dir_key gives
        # every spelling of a directory one (tidied once per spelling).
        parent, _sep, name = dst.rpartition("/")
        if not name or name in {".", ".."}:
            raise ValueError(f"job {i}: destination {dst!r} names a directory, not a file")
        spelled = parent if parent else ("/" if _sep else ".")
        canon = tidy.get(spelled)
        if canon is None:
            tidied = dir_key(spelled)
            canon = tidy[spelled] = spelled if tidied == spelled else tidied
        parent = canon
        if canon is spelled and canon not in {".", "/"}:
            key = dst  # already "parent/name": no new string per job
        else:
            key = name if canon == "." else (canon.rstrip("/") + "/" + name)
        if first(key, i) != i:
            raise ValueError(f"job {i}: destination {dst!r} is already the destination of job "
                             f"{seen[key]}")
        if src != last_src:
            last = group(src, [])
            last_src = src
        # tuple.__new__, not Dest(...): the NamedTuple's own __new__ is one
        # more Python frame per job for the same object.
        last.append(new_dest(Dest, (i, dst, parent, name)))
    refuse_read_writes(by_source, seen)
    refuse_aliases([d for ds in by_source.values() for d in ds])
    return list(by_source.items()), i + 1


def _units(plan: Plan) -> list[Plan]:
    units: list[Plan] = []
    cur: Plan = []
    cur_dir: str | None = None
    cur_jobs = 0
    for source, dests in plan:
        sdir = source.rpartition("/")[0]
        if cur and (sdir != cur_dir or cur_jobs >= _UNIT_JOBS):
            units.append(cur)
            cur, cur_jobs = [], 0
        cur.append((source, dests))
        cur_dir = sdir
        cur_jobs += len(dests)
    if cur:
        units.append(cur)
    return units


def _pair_stats(ctx: Context, stats: list[ThreadStats]) -> tuple[PairStats, ...]:
    merged: dict[tuple[int, int], list[int]] = {}
    for s in stats:
        for key, c in s.pairs.items():
            m = merged.setdefault(key, [0, 0, 0, 0])
            for i, v in enumerate(c):
                m[i] += v
    policies = ctx.policies()
    return tuple(
        PairStats(key[0], key[1], c[0], c[1], c[2], c[3],
                  policies[key].disabled_errno if key in policies else None)
        for key, c in sorted(merged.items())
    )


def _read_umask() -> int | None:
    """The umask without changing it (os.umask can only be read by setting
    it, which races every other thread creating files meanwhile)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _no_clone_fd(dst_fd: int, src_fd: int) -> None:
    # The pair policy reads ENOTSUP as "this pair cannot clone": one call,
    # then copies, as on any filesystem without reflinks.
    raise OSError(errno.ENOTSUP, "no descriptor-level clone on this platform")
