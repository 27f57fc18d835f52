"""The materializer's per-pair reflink policy: when to stop trying to clone.

A batch can span several mounts, so "this filesystem cannot clone" is a fact
about one (source filesystem, destination filesystem) pair, never about the
batch. The rules, on top of ``probe._outcome.classify``:

* UNSUPPORTED (EXDEV, EOPNOTSUPP, ENOSYS) before any success on the pair: stop
  cloning for that pair. The first verdict is reached under the pair's lock,
  so two threads cannot both pay a failing syscall: an ext4 pair costs
  exactly one.
* EINVAL is also UNSUPPORTED to ``classify``, but btrfs says it per *file*
  (a NOCOW file against a COW one). Turning cloning off at its first EINVAL
  would make one NOCOW file cost every remaining clone, so the pair is only
  given up after ``EINVAL_LIMIT`` EINVALs in a row with no success at all.
* After one success the pair demonstrably clones: any later UNSUPPORTED is
  about that file (NOCOW, or EXDEV across two mounts of one filesystem on a
  pre-5.18 kernel) and never switches the pair off.
* SOURCE_VANISHED never reaches this policy: it says nothing about the
  filesystems.
* A transient failure (``probe._outcome.is_transient``: EAGAIN from ZFS
  block cloning) is retried briefly, then the file is copied; the pair's
  state does not move.
* Everything else (ENOSPC, EDQUOT, EIO, ...) is a real error, never a silent
  fallback: handed back on the ``Attempt`` (``error``), so the caller counts
  the calls it cost before it fails the job with it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .._outcome import ReflinkOutcome, classify, is_per_file, is_transient, transient_delays
from .._platform import CloneFd

__all__ = ["EINVAL_LIMIT", "Attempt", "PairPolicy"]

#: EINVALs in a row, with no success on the pair, before cloning is given up
#: for it. Small enough that a pair which really refuses (a kernel answering
#: EINVAL for a filesystem without reflink) wastes a handful of syscalls,
#: large enough that a directory starting with a few NOCOW files keeps cloning.
EINVAL_LIMIT = 8


_UNKNOWN, _ENABLED, _DISABLED = 0, 1, 2

class Attempt:
    """What one ``PairPolicy.clone`` call did."""

    # A slotted class, not a dataclass: importing dataclasses would cost
    # every materialize run ~12 ms.
    __slots__ = ("calls", "cloned", "errno", "error", "failures")

    def __init__(self, cloned: bool = False, calls: int = 0, failures: int = 0,
                 errno: int | None = None) -> None:
        self.cloned = cloned
        #: clone syscalls issued, and how many of them failed
        self.calls = calls
        self.failures = failures
        #: errno of the last failed clone (why the file is copied), if any
        self.errno = errno
        #: a real error from the clone (ENOSPC, EIO): the job fails with it,
        #: and neither copies nor hides the calls it took
        self.error: OSError | None = None


class PairPolicy:
    """Reflink state for one (source st_dev, destination st_dev) pair."""

    __slots__ = (
        "_eagain", "_eagain_lock", "_lock", "_state", "disabled_errno", "einval_run", "proven",
    )

    def __init__(self, eagain_window: float | None = None) -> None:
        self._lock = threading.Lock()
        self._state = _UNKNOWN
        self.einval_run = 0
        #: the errno that switched cloning off for this pair (None: still on)
        self.disabled_errno: int | None = None
        #: has a clone on this pair ever succeeded? (A plain attribute, not a
        #: property over ``_state``: the worker reads it once per dest. It
        #: only ever goes False -> True, together with ``_state``.)
        self.proven = False
        # EAGAIN (ZFS: the source's transaction group is not synced yet):
        # one retry window for the whole pair (probe._outcome.transient_delays),
        # so a batch of freshly written blobs waits for one sync, not one per
        # file; once it is spent, files that still get EAGAIN are copied and
        # the pair stays on.
        self._eagain = transient_delays(eagain_window)
        self._eagain_lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self._state != _DISABLED

    def clone(
        self, do_clone: CloneFd, dst_fd: int, src_fd: int, source_gone: Callable[[], bool]
    ) -> Attempt:
        """Try ``do_clone(dst_fd, src_fd)`` unless the pair is off.

        Returns an ``Attempt`` with ``cloned`` False when the caller must
        copy instead (pair off, per-file refusal, transient failure left),
        or with ``error`` set when the job must fail.
        """
        if self._state == _ENABLED:
            return self._try(do_clone, dst_fd, src_fd, source_gone)
        if self._state == _DISABLED:
            return Attempt()
        # No verdict yet: one attempt at a time, so the first UNSUPPORTED
        # switches the pair off before any other thread issues a syscall.
        with self._lock:
            if self._state == _DISABLED:
                return Attempt()
            return self._try(do_clone, dst_fd, src_fd, source_gone)

    def _try(
        self, do_clone: CloneFd, dst_fd: int, src_fd: int, source_gone: Callable[[], bool]
    ) -> Attempt:
        att = Attempt(calls=1)
        try:
            do_clone(dst_fd, src_fd)
        except OSError as err:
            return self._failed(err, att, do_clone, dst_fd, src_fd, source_gone=source_gone)
        return self._succeeded(att)

    def _succeeded(self, att: Attempt) -> Attempt:
        att.cloned = True
        att.errno = None
        if self._state != _ENABLED:
            self._state = _ENABLED
            self.proven = True
        self.einval_run = 0
        return att

    def failed(
        self,
        err: OSError,
        do_clone: CloneFd,
        dst_fd: int,
        src_fd: int,
        source_gone: Callable[[], bool],
    ) -> Attempt:
        """The rules for a clone the caller already tried itself (the fast
        path for a proven pair, which needs neither lock nor bookkeeping)."""
        return self._failed(
            err, Attempt(calls=1), do_clone, dst_fd, src_fd, source_gone=source_gone
        )

    def _failed(
        self,
        err: OSError,
        att: Attempt,
        do_clone: CloneFd,
        dst_fd: int,
        src_fd: int,
        *,
        source_gone: Callable[[], bool],
    ) -> Attempt:
        while True:
            att.failures += 1
            att.errno = err.errno
            if not is_transient(err.errno):
                break
            with self._eagain_lock:  # a generator is not thread-safe
                delay = next(self._eagain, None)
            if delay is None:
                return att
            time.sleep(delay)
            att.calls += 1
            try:
                do_clone(dst_fd, src_fd)
            except OSError as again:
                err = again
                continue
            return self._succeeded(att)
        outcome = classify(err.errno, source_gone)
        if outcome is None:
            att.error = err
            return att
        if outcome is ReflinkOutcome.UNSUPPORTED:
            self._unsupported(err.errno)
        # SOURCE_VANISHED with an open source fd: the caller's copy from that
        # fd decides; the pair's state does not move.
        return att

    def note_disabled(self, err: int) -> None:
        """Another process's copy of this policy switched cloning off with
        ``err``: the report says so (a worker process learns on its own)."""
        if self.disabled_errno is None:
            self.disabled_errno = err

    def _unsupported(self, err: int | None) -> None:
        if self._state == _ENABLED:
            return
        if is_per_file(err):
            self.einval_run += 1
            if self.einval_run < EINVAL_LIMIT:
                return
        self.disabled_errno = err
        self._state = _DISABLED
