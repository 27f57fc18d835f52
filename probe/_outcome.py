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
import os
from collections.abc import Callable, Iterator

from ._records import NamedTuple

__all__ = [
    "DEFAULT_EAGAIN_WINDOW",
    "ErrnoTable",
    "ReflinkOutcome",
    "ReflinkResult",
    "classify",
    "eagain_window",
    "errno_name",
    "is_per_file",
    "is_transient",
    "leftovers",
    "name_leftovers",
    "transient_delays",
]


class ReflinkOutcome(enum.Enum):
    """What a reflink attempt established."""

    #: The clone succeeded: dest has its own inode and shares the source's
    #: blocks until either side is written.
    CLONED = "cloned"
    #: The filesystem (or this source/dest pair) will not clone: EXDEV,
    #: EOPNOTSUPP, ENOSYS, EINVAL, and from the clone call itself ENOTTY,
    #: EPERM, EACCES, EBADF, ETXTBSY (Linux). A property of the pair (EINVAL
    #: and ETXTBSY may be per file: ``is_per_file``), so a batch may stop
    #: trying for that pair and copy instead. EAGAIN is none of these: it is
    #: retried (``transient_delays``), then the file is copied.
    UNSUPPORTED = "unsupported"
    #: The source was gone -- before the call, or in the window between the
    #: pre-check and the syscall. Says nothing about the filesystem: a batch
    #: must keep reflinks on and fall back to a copy for this one file only.
    SOURCE_VANISHED = "source_vanished"


class ErrnoTable(NamedTuple):
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
    #: Errnos that mean "refused" only when the clone call itself says them,
    #: never when opening the source does (there they are the caller's
    #: permission problem, and the copy would fail the same way). Empty by
    #: default: on macOS clonefileat() creates the destination itself, so
    #: its EPERM/EACCES are about creating that file and stay errors.
    call_refusals: frozenset[int] = frozenset()

    # Built on each call: a NamedTuple has no instance dict to cache it in,
    # and five ints into a frozenset (~0.4 us) is noise next to the failed
    # clone syscall that made classify() ask.
    @property
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


# Linux's FICLONE, errno by errno, against GNU cp's list (coreutils'
# copy-file-data.c ``is_CLONENOTSUP``; cp --reflink=auto itself falls back
# to a copy on *every* FICLONE error except EIO, ENOMEM, ENOSPC, EDQUOT).
# Our descriptors are opened by us, correctly (source O_RDONLY, a fresh dest
# O_WRONLY without O_APPEND), so the errnos below cannot be our own mistake:
# ENOSYS, EOPNOTSUPP, EINVAL, EXDEV: already in ``unsupported`` (see there).
# ENOTTY: the filesystem has no FICLONE ioctl at all -- kernels before 4.5
#   outside btrfs, ZFS before block cloning. UNSUPPORTED for the pair.
# EPERM: a seccomp profile that filters the ioctl (container runtimes), an
#   idmapped mount or a user namespace the filesystem will not clone in.
#   The pair cannot clone for this process; a copy (plain read/write) can
#   work. IS_APPEND/IS_IMMUTABLE on the dest also say EPERM, but our dest is
#   a file we just created. UNSUPPORTED -- only from the call: EPERM from
#   creating the dest stays an error (``probe._platform.caller_error``).
# EACCES: an LSM (SELinux, AppArmor) denying the ioctl while read and write
#   are allowed. UNSUPPORTED from the call; from opening the source it is
#   the classic permission error and stays one.
# EBADF: with correctly opened descriptors, ioctl_ficlone(2) documents it
#   as "the filesystem does not support reflink". UNSUPPORTED from the call.
# ETXTBSY: one of the files is an active swap file, which may not share
#   blocks. A per-file refusal (like btrfs's NOCOW EINVAL: ``is_per_file``),
#   and the copy is the right answer. UNSUPPORTED from the call.
_LINUX_CALL_REFUSALS = frozenset(
    {_errno.ENOTTY, _errno.EPERM, _errno.EACCES, _errno.EBADF, _errno.ETXTBSY}
)


#: The running system's values. The call-only refusals are Linux's FICLONE
#: answers; the platform seam (probe._platform) drops them where the clone
#: primitive is another call.
HOST_ERRNOS = ErrnoTable(
    ENOENT=_errno.ENOENT,
    EXDEV=_errno.EXDEV,
    EOPNOTSUPP=_errno.EOPNOTSUPP,
    ENOTSUP=_errno.ENOTSUP,
    ENOSYS=_errno.ENOSYS,
    EINVAL=_errno.EINVAL,
    EAGAIN=_errno.EAGAIN,
    call_refusals=_LINUX_CALL_REFUSALS,
)


class ReflinkResult(NamedTuple):
    """An outcome with the errno behind it (None for a clean CLONED or a
    SOURCE_VANISHED caught by the pre-check)."""

    outcome: ReflinkOutcome
    errno: int | None = None
    #: a refused clone removes the dest it created; when that unlink failed
    #: too (EIO, EROFS) the file is still there, and this names it (as the
    #: dest was given). None: nothing left behind.
    leftover: str | None = None

    @property
    def errno_name(self) -> str | None:
        return None if self.errno is None else errno_name(self.errno)


#: Attribute on an error raised by ``reflink`` or ``clone_or_copy``: full
#: paths of files the failed call created and could not remove (also in the
#: error's notes).
LEFTOVERS = "cowprobe_leftovers"


def leftovers(err: BaseException) -> list[str]:
    """The files a failed call could not remove (named, never silently
    left): what it attached to its exception, or nothing."""
    return list(getattr(err, LEFTOVERS, ()))


def name_leftovers(err: BaseException, paths: list[str]) -> None:
    """Attach ``paths`` to ``err`` (see :func:`leftovers`), one note each."""
    for path in paths:
        err.add_note(f"left behind: {path}")
    setattr(err, LEFTOVERS, paths)


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


#: Seconds one pair may spend waiting on EAGAIN before its file is copied.
#: ZFS answers EAGAIN until the source's transaction group is synced, which
#: takes up to ``zfs_txg_timeout`` (5 s by default): one window covers it.
DEFAULT_EAGAIN_WINDOW = 5.0
_EAGAIN_ENV = "COWPROBE_EAGAIN_WINDOW"
_FIRST_DELAY = 0.001
_MAX_DELAY = 0.5


def eagain_window(window: float | None = None) -> float:
    """The EAGAIN retry window in seconds: ``window`` if given, else
    ``$COWPROBE_EAGAIN_WINDOW``, else ``DEFAULT_EAGAIN_WINDOW``.

    A bad value raises ValueError naming it: a typo must not silently turn
    a 5 s wait into none (or into forever).
    """
    if window is None:
        text = os.environ.get(_EAGAIN_ENV)
        if text is None:
            return DEFAULT_EAGAIN_WINDOW
        try:
            window = float(text)
        except ValueError:
            raise ValueError(f"{_EAGAIN_ENV}={text!r} is not a number of seconds") from None
    if not 0 <= window <= 3600:  # NaN fails this too
        raise ValueError(f"EAGAIN retry window must be 0..3600 seconds, not {window!r}")
    return window


def transient_delays(window: float | None = None) -> Iterator[float]:
    """The sleeps between retries of a transient (EAGAIN) clone failure.

    Exponential from 1 ms, capped at 0.5 s, until their sum reaches the
    window (``eagain_window``); the last one is cut to fit. Short first
    steps keep a briefly busy pair cheap; the cap keeps a 5 s ZFS sync from
    costing much more than 5 s. One iterator per pair (the materializer) or
    per call (single files) is the whole budget: when it is exhausted the
    file is copied and the pair stays on.
    """
    left = eagain_window(window)
    delay = _FIRST_DELAY
    while left > 0:
        step = min(delay, left)
        yield step
        left -= step
        delay = min(delay * 2, _MAX_DELAY)


def is_per_file(err: int | None, table: ErrnoTable = HOST_ERRNOS) -> bool:
    """Is this UNSUPPORTED errno about one file rather than the pair?

    EINVAL (btrfs: a NOCOW file against a COW one) and ETXTBSY (an active
    swap file): a batch should not switch a pair off at the first one.
    """
    return err is not None and (
        err == table.EINVAL or (err == _errno.ETXTBSY and err in table.call_refusals)
    )


def classify(
    err: int | None,
    source_gone: Callable[[], bool],
    table: ErrnoTable = HOST_ERRNOS,
    *,
    from_call: bool = True,
) -> ReflinkOutcome | None:
    """Map a clone failure (or a failure to open the source) to an outcome.

    Returns None when the failure is a genuine error the caller must see.
    ``from_call`` says the errno came from the clone call itself (FICLONE);
    False for a failure to open the source, where ENOTTY, EPERM, EACCES,
    EBADF and ETXTBSY stay errors (see ``_LINUX_CALL_REFUSALS``). The
    default suits callers that only ever classify the ioctl's errno (the
    materializer's pair policy).
    ``source_gone`` is consulted only for ENOENT, and only then: an ENOENT
    while the source still exists (a missing dest parent, say) is the
    caller's problem and must not be disguised as a vanished source.
    """
    if err is None:
        return None
    if err in table.unsupported or (from_call and err in table.call_refusals):
        return ReflinkOutcome.UNSUPPORTED
    if err == table.ENOENT and source_gone():
        return ReflinkOutcome.SOURCE_VANISHED
    return None
