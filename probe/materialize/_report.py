"""What a materialize batch did: per-job results, per-pair counters, totals."""

from __future__ import annotations

import enum
import functools
import os

from .._outcome import errno_name
from .._records import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from typing import Any

__all__ = ["JobResult", "JobStatus", "MaterializeReport", "PairStats", "mark", "unmark"]


class JobStatus(enum.Enum):
    #: dest is a reflink of the source (shares its blocks)
    CLONED = "cloned"
    #: dest is a byte copy (the pair cannot clone, or this file could not)
    COPIED = "copied"
    #: the source was gone and no copy could be made: a failure that names
    #: the source path (never a verdict on the filesystem)
    VANISHED = "vanished"
    #: an error (EIO, ENOSPC, EACCES, a special file, ...); no dest was
    #: created and an existing one is untouched
    FAILED = "failed"
    #: not attempted: ``stop_on_error`` stopped the batch first
    SKIPPED = "skipped"


class JobResult(NamedTuple):
    """One job's outcome. (A NamedTuple: immutable like a frozen dataclass,
    but a batch builds one per file and this is several times cheaper. The
    other report types are NamedTuples too: importing dataclasses would
    cost every command ~12 ms.)"""

    source: str
    dest: str
    status: JobStatus
    #: bytes in the dest (its size for a clone, bytes written for a copy)
    bytes: int = 0
    #: for a failure: the errno, the path it concerns (the source for a
    #: vanished or unreadable source, the dest or its directory for a failed
    #: create or rename), and the message
    errno: int | None = None
    path: str | None = None
    error: str | None = None
    #: for a copy: the clone errno that made it one (None when the pair was
    #: already known not to clone, so no syscall was spent)
    reflink_errno: int | None = None

    @property
    def ok(self) -> bool:
        return self.status in (JobStatus.CLONED, JobStatus.COPIED)

    @property
    def errno_name(self) -> str | None:
        return None if self.errno is None else errno_name(self.errno)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "dest": self.dest,
            "status": self.status.value,
            "bytes": self.bytes,
            "errno": self.errno,
            "errno_name": self.errno_name,
            "path": self.path,
            "error": self.error,
            "reflink_errno": self.reflink_errno,
        }


def mark(cloned: bool, reflink_errno: int | None) -> int:
    """A finished job as one int (``Context.marks``; 0 stands for nothing
    in place): what its result would say, should the worker process that
    made the file die before it could send that result."""
    if cloned:
        return 1
    return 2 if reflink_errno is None else 3 + reflink_errno


def unmark(value: int) -> tuple[bool, int | None]:
    """``mark``'s arguments back: (cloned, the reflink errno of a copy)."""
    return value == 1, None if value <= 2 else value - 3


class PairStats(NamedTuple):
    """Reflink bookkeeping for one (source st_dev, dest st_dev) pair."""

    source_dev: int
    dest_dev: int
    clone_calls: int
    failed_clone_calls: int
    cloned: int
    copied: int
    #: the errno that switched cloning off for the pair; None if it stayed on
    disabled_errno: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "source_dev": f"{os.major(self.source_dev)}:{os.minor(self.source_dev)}",
            "dest_dev": f"{os.major(self.dest_dev)}:{os.minor(self.dest_dev)}",
            "clone_calls": self.clone_calls,
            "failed_clone_calls": self.failed_clone_calls,
            "cloned": self.cloned,
            "copied": self.copied,
            "reflink_disabled_by": None
            if self.disabled_errno is None
            else errno_name(self.disabled_errno),
        }


class _ReportFields(NamedTuple):
    results: tuple[JobResult, ...]
    pairs: tuple[PairStats, ...]
    seconds: float
    workers: int
    #: bytes the filesystem reports shared (FIEMAP) in cloned dests; None
    #: unless the batch was asked to verify (``measure_sharing``: one FIEMAP
    #: per cloned source) and every FIEMAP answered
    bytes_shared: int | None = None
    #: processes that ran the clone loop: 1 (in-process, ``workers``
    #: threads), or the number of forked worker processes (one thread each)
    processes: int = 1
    #: the worker processes' pids (empty when the batch ran in-process)
    worker_pids: tuple[int, ...] = ()


class MaterializeReport(_ReportFields):
    """What a batch did: every job's result, per-pair counters and totals.

    A NamedTuple of the fields above. This subclass has an instance dict
    (no ``__slots__``), only so ``_counts`` can be cached: fields, equality,
    hashing, ``_replace`` and pickling are the NamedTuple's.
    """

    @property
    def sharing_verified(self) -> bool:
        """Did the filesystem confirm the sharing? False means only that it
        was not asked (the default, as with cp) or could not answer: the
        clones themselves succeeded either way."""
        return self.bytes_shared is not None

    @functools.cached_property
    def _counts(self) -> dict[JobStatus, int]:
        # Once for every count: a summary asks for six of them, and a Python
        # pass over 40,000 results each time showed in the profile. list.count
        # compares by identity first (C speed); a dict keyed by the enum
        # would call Enum.__hash__, a Python function, per result.
        # (cached_property writes the instance dict, never a field.)
        statuses = [r[2] for r in self.results]
        return {s: statuses.count(s) for s in JobStatus}

    def _count(self, status: JobStatus) -> int:
        return self._counts[status]

    @property
    def cloned(self) -> int:
        return self._count(JobStatus.CLONED)

    @property
    def copied(self) -> int:
        return self._count(JobStatus.COPIED)

    @property
    def vanished(self) -> int:
        return self._count(JobStatus.VANISHED)

    @property
    def failed(self) -> int:
        """Jobs that produced no dest: FAILED and VANISHED."""
        return self._count(JobStatus.FAILED) + self.vanished

    @property
    def skipped(self) -> int:
        return self._count(JobStatus.SKIPPED)

    @property
    def ok(self) -> bool:
        return self._counts[JobStatus.CLONED] + self._counts[JobStatus.COPIED] == len(
            self.results)

    @property
    def files(self) -> int:
        """Destinations written (cloned + copied)."""
        return self.cloned + self.copied

    @property
    def bytes(self) -> int:
        cloned, copied = JobStatus.CLONED, JobStatus.COPIED
        return sum([r[3] for r in self.results if r[2] is cloned or r[2] is copied])

    @property
    def bytes_cloned(self) -> int:
        """Bytes in cloned dests: what the clones promise to share."""
        cloned = JobStatus.CLONED
        return sum([r[3] for r in self.results if r[2] is cloned])

    @property
    def failed_clone_calls(self) -> int:
        return sum(p.failed_clone_calls for p in self.pairs)

    @property
    def clone_calls(self) -> int:
        return sum(p.clone_calls for p in self.pairs)

    @property
    def failures(self) -> list[JobResult]:
        if not self.failed:
            return []
        return [r for r in self.results if r.status in (JobStatus.FAILED, JobStatus.VANISHED)]

    def to_dict(self, *, jobs: bool = True) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "ok": self.ok,
            "totals": {
                "jobs": len(self.results),
                "files": self.files,
                "cloned": self.cloned,
                "copied": self.copied,
                "vanished": self.vanished,
                "failed": self.failed,
                "skipped": self.skipped,
                "bytes": self.bytes,
                "bytes_cloned": self.bytes_cloned,
                "bytes_shared": self.bytes_shared,
                "sharing_verified": self.sharing_verified,
                "clone_calls": self.clone_calls,
                "failed_clone_calls": self.failed_clone_calls,
                "seconds": round(self.seconds, 6),
                "workers": self.workers,
                "processes": self.processes,
            },
            "pairs": [p.to_dict() for p in self.pairs],
            "failures": [r.to_dict() for r in self.failures],
        }
        if jobs:
            doc["jobs"] = [r.to_dict() for r in self.results]
        return doc
