"""The outcome rules: what a failed clone *means*.

This is the one place that decides whether an errno says "this filesystem
pair cannot reflink" (a batch-wide property), "the source vanished under us"
(a per-blob race), or "something is actually wrong" (an error the caller must
see). Everything else in cowprobe -- the single-file API, the materializer,
the capability probe, the conformance suite -- asks these rules rather than
keeping its own list of errnos.

Keeping UNSUPPORTED and SOURCE_VANISHED apart is the point of the whole
module: folding them together makes one concurrently-pruned blob switch
reflinks off for every remaining file of a batch.
"""

from __future__ import annotations

import enum
import errno as _errno
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

__all__ = [
    "ErrnoTable",
    "ReflinkOutcome",
    "ReflinkResult",
    "classify",
    "errno_name",
    "is_transient",
]


class ReflinkOutcome(enum.Enum):
    """What a reflink attempt established."""

    #: The clone succeeded: dest has its own inode and shares the source's
    #: blocks until either side is written.
    CLONED = "cloned"
    #: The filesystem (or this source/dest pair) will not clone. A property of
    #: the pair, so a batch may stop trying for that pair and copy instead.
    UNSUPPORTED = "unsupported"
    #: The source was gone -- before the call, or in the window between the
    #: pre-check and the syscall. Says nothing about the filesystem: a batch
    #: must keep reflinks on and fall back to a copy for this one file only.
    SOURCE_VANISHED = "source_vanished"


@dataclass(frozen=True)
class ErrnoTable:
    """The errno values the rules depend on, for one platform.

    They are data rather than ``errno.X`` lookups because the rules must be
    checkable for a platform this interpreter is not running on: macOS has two
    distinct values (ENOTSUP 45, EOPNOTSUPP 102) where Linux has one (95), and
    a classifier written against Linux's ``errno`` module would silently treat
    macOS's ENOTSUP as a hard error.
    """

    ENOENT: int
    EXDEV: int
    EOPNOTSUPP: int
    ENOTSUP: int
    ENOSYS: int
    EINVAL: int
    EAGAIN: int

    # Cached: classify() asks once per failed clone, and a batch of NOCOW
    # files fails one clone per file.
    @cached_property
    def unsupported(self) -> frozenset[int]:
        # EXDEV: the two paths are on different filesystems (and, before
        #   Linux 5.18, on two mounts of the same one).
        # EOPNOTSUPP / ENOTSUP: the filesystem has no clone operation at all
        #   (ext4, tmpfs, FUSE, XFS without reflink=1, HFS+).
        # ENOSYS: the kernel predates the call.
        # EINVAL: the filesystem refuses this particular pair -- btrfs says it
        #   for a NOCOW file against a COW one, some kernels for a mount
        #   without reflink support. A batch should treat it as per-file at
        #   first (see the materializer), but it is never a hard error.
        return frozenset({self.EXDEV, self.EOPNOTSUPP, self.ENOTSUP, self.ENOSYS, self.EINVAL})


#: The running system's values.
HOST_ERRNOS = ErrnoTable(
    ENOENT=_errno.ENOENT,
    EXDEV=_errno.EXDEV,
    EOPNOTSUPP=_errno.EOPNOTSUPP,
    ENOTSUP=_errno.ENOTSUP,
    ENOSYS=_errno.ENOSYS,
    EINVAL=_errno.EINVAL,
    EAGAIN=_errno.EAGAIN,
)


@dataclass(frozen=True)
class ReflinkResult:
    """An outcome with the errno behind it (None for a clean CLONED or a
    SOURCE_VANISHED caught by the pre-check)."""

    outcome: ReflinkOutcome
    errno: int | None = None

    @property
    def errno_name(self) -> str | None:
        return None if self.errno is None else errno_name(self.errno)


def errno_name(err: int) -> str:
    """The symbolic name of ``err``, e.g. "EXDEV".

    Linux defines ENOTSUP as an alias of EOPNOTSUPP and Python's table picks
    the alias; the kernel, strace and the man pages all say EOPNOTSUPP, so
    that is the name users will search for.
    """
    if err == _errno.EOPNOTSUPP:
        return "EOPNOTSUPP"
    return _errno.errorcode.get(err, str(err))


def is_transient(err: int | None, table: ErrnoTable = HOST_ERRNOS) -> bool:
    """Is this clone failure worth retrying after a moment? Only EAGAIN.

    ZFS block cloning answers EAGAIN while the source's last transaction
    group is not yet synced: the pair can clone, just not this instant. It is
    neither UNSUPPORTED (that would switch a capable pair off) nor an error
    (the copy fallback is right if retries run out). ``classify`` leaves it
    an error; a caller that can wait -- the batch materializer -- asks here
    first.
    """
    return err is not None and err == table.EAGAIN


def classify(
    err: int | None, source_gone: Callable[[], bool], table: ErrnoTable = HOST_ERRNOS
) -> ReflinkOutcome | None:
    """Map a clone failure (or a failure to open the source) to an outcome.

    Returns None when the failure is a genuine error the caller must see.
    ``source_gone`` is consulted only for ENOENT, and only then: an ENOENT
    while the source still exists (a missing dest parent, say) is the
    caller's problem and must not be disguised as a vanished source.
    """
    if err is None:
        return None
    if err in table.unsupported:
        return ReflinkOutcome.UNSUPPORTED
    if err == table.ENOENT and source_gone():
        return ReflinkOutcome.SOURCE_VANISHED
    return None
