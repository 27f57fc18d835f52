"""The materializer's inner loop: one source, all of its destinations.

Syscalls are what a batch pays for, so each source is opened (and fstat'ed)
once for all of its worktrees and every dest is made relative to an already
open directory: per dest, a clone costs create + FICLONE + close, plus a
rename only where the directory already existed, plus an fchmod only where
the umask or a default ACL would spoil the mode given to open().
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable
from functools import partial

from .._copy import discard
from .._datacopy import copy_whole, looks_sparse
from .._outcome import ReflinkOutcome, classify
from .._platform import CloneFd, check_replaceable, close_quietly, create_dest, open_source
from .._records import TYPE_CHECKING, NamedTuple
from .._reflink import source_gone
from .._tempname import temp_name
from ._dirs import DestDir, DirCache
from ._policy import Attempt, PairPolicy
from ._report import JobResult, JobStatus, mark

__all__ = ["Context", "Dest", "ThreadStats", "drop", "run_unit"]

if TYPE_CHECKING:  # a Protocol at run time would import typing (probe._records)
    from typing import Protocol

    class Stop(Protocol):
        """The stop flag: a threading.Event, or ``_procs.SharedStop``."""

        def is_set(self) -> bool: ...

        def set(self) -> None: ...


class Dest(NamedTuple):
    # A NamedTuple, not a frozen dataclass: one is built per job, and a
    # frozen dataclass's __init__ costs several times as much.
    job: int
    dest: str
    parent: str
    name: str


class ThreadStats:
    # A slotted class, not a dataclass: importing dataclasses would cost
    # every materialize run ~12 ms.
    __slots__ = ("pairs", "route", "shared", "shared_unknown", "used_roots")

    def __init__(
        self,
        pairs: dict[tuple[int, int], list[int]] | None = None,
        used_roots: set[DestDir] | None = None,
        shared: int = 0,
        shared_unknown: bool = False,
    ) -> None:
        #: (source dev, dest dev) -> [clone calls, failed calls, cloned, copied]
        self.pairs = {} if pairs is None else pairs
        #: dest directory path -> (its DestDir, the pair's counters, the pair's
        #: policy, the source dev they are for): one lookup per dest, not four
        self.route: dict[str, tuple[DestDir, list[int], PairPolicy, int]] = {}
        #: staged roots that received at least one finished file
        self.used_roots = set() if used_roots is None else used_roots
        #: FIEMAP-shared bytes summed over cloned dests (if measuring)
        self.shared = shared
        #: a FIEMAP failed, so ``shared`` is not the whole truth
        self.shared_unknown = shared_unknown


class Context:
    # Slotted, not a dataclass, like ThreadStats.
    __slots__ = ("_pairs", "_pairs_lock", "clone", "dirs", "fsync", "marks", "measure_sharing",
                 "mode", "on_result", "results", "shared_bytes", "stop", "stop_on_error", "umask")

    def __init__(
        self,
        *,
        dirs: DirCache,
        results: list[JobResult | None],
        clone: CloneFd,
        mode: int | None,
        umask: int | None,
        stop_on_error: bool,
        stop: Stop,
        measure_sharing: bool,
        on_result: Callable[[JobResult], None] | None,
        shared_bytes: Callable[[int], int],
        fsync: bool = False,
    ) -> None:
        self.dirs = dirs
        self.results = results
        self.clone = clone
        self.mode = mode
        #: the process umask, or None if it could not be read (then: fchmod always)
        self.umask = umask
        self.stop_on_error = stop_on_error
        self.stop = stop
        self.measure_sharing = measure_sharing
        self.on_result = on_result
        self.shared_bytes = shared_bytes
        #: fsync each file before it is closed and renamed into place
        self.fsync = fsync
        #: worker processes only: per job, what may already be in place (see
        #: ``mark``), in memory the parent still reads if the worker dies
        self.marks: memoryview | None = None
        self._pairs: dict[tuple[int, int], PairPolicy] = {}
        self._pairs_lock = threading.Lock()

    def pair(self, key: tuple[int, int]) -> PairPolicy:
        p = self._pairs.get(key)
        if p is None:
            with self._pairs_lock:
                p = self._pairs.setdefault(key, PairPolicy())
        return p

    def policies(self) -> dict[tuple[int, int], PairPolicy]:
        return dict(self._pairs)

    def finish(self, res: JobResult, index: int) -> None:
        self.results[index] = res
        if self.stop_on_error and not res.ok:
            self.stop.set()
        if self.on_result is not None:
            self.on_result(res)


_CLONED = Attempt(cloned=True, calls=1)


def _fail(source: str, d: Dest, status: JobStatus, err: OSError, path: str) -> JobResult:
    return JobResult(
        source, d.dest, status, errno=err.errno, path=path, error=_message(err, path)
    )


def _message(err: OSError, path: str) -> str:
    text = err.strerror or str(err)
    where = err.filename if err.filename is not None else path
    if err.filename2 is not None:
        return f"{text}: {where!s} -> {err.filename2!s}"
    return f"{text}: {where!s}"


def _source_failed(ctx: Context, source: str, dests: list[Dest], err: OSError) -> None:
    vanished = classify(err.errno, lambda: source_gone(source)) is (
        ReflinkOutcome.SOURCE_VANISHED
    )
    status = JobStatus.VANISHED if vanished else JobStatus.FAILED
    for d in dests:
        if ctx.stop.is_set():
            return
        ctx.finish(_fail(source, d, status, err, source), d.job)


_new = tuple.__new__


def run_unit(ctx: Context, unit: list[tuple[str, list[Dest]]], stats: ThreadStats) -> None:
    """Materialize each source of ``unit`` into each of its dests.

    One function for the whole unit, not one call per source: the loops
    below run once per file, and with one worktree a source has one dest,
    so per-source set-up (bound methods, the batch's constants) cost as much
    as the dest itself. What does not change per file is looked up once per
    unit; what does not change per dest, once per source.
    """
    clone = ctx.clone
    stopped = ctx.stop.is_set
    route = stats.route
    results = ctx.results
    # Context.finish's extra work applies only to failures (stop_on_error)
    # and to callers with a callback; without a callback a success is one
    # list store.
    on_result = ctx.on_result
    used_roots = stats.used_roots
    close = os.close
    mode = ctx.mode
    umask = ctx.umask
    fsync = ctx.fsync
    marks = ctx.marks
    for source, dests in unit:
        if stopped():
            return
        try:
            try:
                src_fd, st = open_source(source)
            except FileNotFoundError:
                # The copy fallback for a source that vanished before its
                # open: one more look (it may have been replaced by rename
                # meanwhile). If this fails too, the bytes are really gone
                # and the job says so.
                src_fd, st = open_source(source)
        except OSError as err:
            _source_failed(ctx, source, dests, err)
            continue
        try:
            want = st.st_mode & 0o777 if mode is None else mode
            # The umask only ever removes bits: if it removes none of ours,
            # open()'s mode argument is already exact and the fchmod can be
            # skipped.
            umask_ok = umask is not None and not (want & umask) and want <= 0o777
            size = st.st_size
            dev = st.st_dev
            # partial, not a lambda: made once per source, and it must bind
            # this iteration's source.
            gone = partial(source_gone, source)
            cloned_count = 0
            for d in dests:
                if stopped():
                    return
                parent = d[2]
                hit = route.get(parent)
                if hit is None or hit[3] != dev:
                    try:
                        ddir = ctx.dirs.get(parent)
                    except OSError as err:
                        ctx.finish(_fail(source, d, JobStatus.FAILED, err, parent), d.job)
                        continue
                    key = (dev, ddir.dev)
                    counters = stats.pairs.get(key)
                    if counters is None:
                        counters = stats.pairs[key] = [0, 0, 0, 0]
                    hit = route[parent] = (ddir, counters, ctx.pair(key), dev)
                ddir, counters, policy, _dev = hit
                fresh = ddir.fresh
                name = d.name if fresh else temp_name(d.name)
                try:
                    dst_fd = create_dest(name, want, dir_fd=ddir.fd)
                except OSError as err:
                    if err.errno != errno.EEXIST:
                        # open(O_CREAT|O_EXCL) can fail after the file was made: on
                        # FUSE the kernel sends CREATE, then a GETATTR whose error
                        # fails the open. Not for EEXIST: then the file there is
                        # not one we made.
                        drop(ddir, name)
                    failure = _renamed(err, name, d)
                    ctx.finish(_fail(source, d, JobStatus.FAILED, failure, d.dest), d.job)
                    continue
                except BaseException:
                    # Ctrl-C as the create returned: its fd is lost, its file must not be.
                    drop(ddir, name)
                    raise
                step = "clone"
                try:
                    if policy.proven:
                        # The common case, kept lean: one clone call, no lock, no
                        # Attempt unless it fails.
                        try:
                            clone(dst_fd, src_fd)
                            att = _CLONED
                        except OSError as err:
                            att = policy.failed(err, clone, dst_fd, src_fd, gone)
                    else:
                        att = policy.clone(clone, dst_fd, src_fd, gone)
                    counters[0] += att.calls
                    if att.failures:
                        counters[1] += att.failures
                        if att.error is not None:
                            raise att.error  # counted above: it cost a clone call
                    if att.cloned:
                        written = size
                    else:
                        step = "copy"
                        # Asked only here: most sources clone.
                        written = copy_whole(src_fd, dst_fd, size, looks_sparse(st))
                    step = "finish"
                    if not umask_ok or ddir.has_default_acl:
                        os.fchmod(dst_fd, want)
                    if fsync:
                        os.fsync(dst_fd)
                except BaseException as exc:
                    drop(ddir, name)
                    close_quietly(dst_fd)
                    if not isinstance(exc, OSError):
                        raise
                    failure = _renamed(exc, name, d)
                    if step != "finish" and failure.filename is None:
                        failure = OSError(failure.errno, failure.strerror, source, None, d.dest)
                    path = d.dest if step == "finish" else source
                    ctx.finish(_fail(source, d, JobStatus.FAILED, failure, path), d.job)
                    continue
                try:
                    # Before the rename, and checked: NFS and FUSE report a failed
                    # write-back only here, and such a file must not replace a good
                    # dest (nor stay under its final name in a staged directory).
                    close(dst_fd)
                    if marks is not None:
                        # Set before the rename, so a worker killed at any point
                        # after it cannot leave a published file reported FAILED.
                        marks[d[0]] = mark(att.cloned, att.errno)
                    if not fresh:
                        # In a directory that existed: never over a device,
                        # FIFO or socket (a staged one holds only ours).
                        check_replaceable(d.name, ddir.fd, d.dest)
                        os.replace(name, d.name, src_dir_fd=ddir.fd, dst_dir_fd=ddir.fd)
                except OSError as exc:
                    if marks is not None:
                        marks[d[0]] = 0
                    drop(ddir, name)
                    failure = _renamed(exc, name, d)
                    ctx.finish(_fail(source, d, JobStatus.FAILED, failure, d.dest), d.job)
                    continue
                except BaseException:
                    # Ctrl-C (a worker process: SIGTERM) after the close: no run
                    # reaps a live owner's temporary, so it would outlive the batch.
                    _abandon(ddir, name, marks, d[0])
                    raise
                root = ddir.root
                if root is not None:
                    used_roots.add(root)
                # tuple.__new__, not JobResult(...): the NamedTuple's __new__ is one
                # more Python frame per dest for the same object.
                if att.cloned:
                    counters[2] += 1
                    cloned_count += 1
                    res = _new(JobResult, (source, d[1], _CLONED_STATUS, size,
                                           None, None, None, None))
                else:
                    counters[3] += 1
                    res = _new(JobResult, (source, d[1], _COPIED_STATUS, written, None, None, None,
                                           att.errno))
                results[d[0]] = res
                if on_result is not None:
                    on_result(res)
            if cloned_count and ctx.measure_sharing:
                # One FIEMAP of the source stands for all its clones: a clone
                # references exactly the source's extents, so the source's shared
                # extents are what each clone shares (btrfs inline extents, which a
                # clone copies, show as not shared in both).
                try:
                    stats.shared += ctx.shared_bytes(src_fd) * cloned_count
                except OSError:
                    stats.shared_unknown = True
        finally:
            # Read-only: a FLUSH error from FUSE/NFS here loses nothing of
            # ours and must not abort the batch. (close_quietly, inlined:
            # its frame and context manager cost more than the close.)
            try:  # noqa: SIM105 - suppress() is the cost being saved
                close(src_fd)
            except OSError:
                pass


_CLONED_STATUS = JobStatus.CLONED
_COPIED_STATUS = JobStatus.COPIED


def drop(ddir: DestDir, name: str) -> None:
    """Unlink a failed job's file by name.

    By name, not through ``remove_created``'s identity check: that check
    needs an fstat and a stat, and on a flaky filesystem (the very one that
    just failed the job) either can fail, which made it skip the unlink and
    strand the file. The check guards a name someone else may have renamed
    onto; this one is ours alone -- a random temporary, or a name in a
    staged directory that nobody else can reach until the publish.
    """
    if not ddir.fresh:
        discard([name], ddir.fd)
        return
    try:
        os.unlink(name, dir_fd=ddir.fd)
    except FileNotFoundError:
        pass
    except OSError:
        # Under its final name in a staged directory: left there, the
        # publish would show a torn file. The publish tries again, and
        # keeps the directory back if it still cannot.
        ddir.debris.append(name)


def _abandon(ddir: DestDir, name: str, marks: memoryview | None, job: int) -> None:
    """An interrupted job's closed file: a temporary still there was never
    renamed (unmark, unlink); a staged file shares its directory's fate."""
    if ddir.fresh:
        return
    try:
        os.stat(name, dir_fd=ddir.fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    except OSError:
        pass  # cannot tell: unlinking our own random name loses nothing
    if marks is not None:
        marks[job] = 0
    drop(ddir, name)


def _renamed(err: OSError, tmp: str, d: Dest) -> OSError:
    """``err`` naming the dest the caller gave, not our hidden temporary."""
    if err.filename == tmp:
        err.filename = d.dest
        if err.filename2 == d.name:
            err.filename2 = None
    return err
