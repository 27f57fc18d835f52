"""try_reflink: one clone attempt, reported as a ReflinkOutcome.

The policy, written once against the platform seam (``probe._platform``);
which errno means what is decided in ``probe._outcome``.
"""

from __future__ import annotations

import os
import stat
import time

from . import _platform
from ._outcome import (
    ReflinkOutcome,
    ReflinkResult,
    classify,
    is_transient,
    name_leftovers,
    transient_delays,
)
from ._paths import PathArg, as_path
from ._platform import Platform, is_caller_error, left_behind, not_regular

__all__ = ["reflink", "reflink_at", "source_gone", "try_reflink"]


def source_gone(source: str) -> bool:
    """Is ``source`` missing now? (ENOTDIR counts: a parent became a file.)"""
    try:
        os.stat(source)
    except (FileNotFoundError, NotADirectoryError):
        return True
    return False


def reflink_at(
    source: str,
    dest: str,
    dir_fd: int | None,
    platform: Platform | None = None,
    *,
    window: float | None = None,
) -> ReflinkResult:
    """``reflink`` with dest relative to ``dir_fd``; paths already checked.
    ``window``: the EAGAIN retry window (``probe._outcome.eagain_window``)."""
    plat = platform or _platform.current()
    # Never hand the clone a source that is not there. A missing source makes
    # the syscall fail with ENOENT, which is deliberately *not* an
    # "unsupported" errno -- it would surface as a hard error, although a
    # reflink is only an optimisation and the caller's copy fallback is the
    # right answer. And it must be SOURCE_VANISHED, not UNSUPPORTED: one
    # pruned blob must not switch reflinks off for the whole batch. No syscall
    # beyond this stat is issued and no dest is created.
    try:
        st = os.stat(source)
    except (FileNotFoundError, NotADirectoryError):
        return ReflinkResult(ReflinkOutcome.SOURCE_VANISHED)
    if not stat.S_ISREG(st.st_mode):
        raise not_regular(source, st.st_mode)
    delays = None
    while True:
        try:
            plat.clone(source, dest, dir_fd)
        except OSError as err:
            if not is_transient(err.errno, plat.errnos):
                return _failed(err, source, dest, plat)
            # EAGAIN: the pair can clone, just not yet (ZFS syncing the
            # source's transaction group). Wait with backoff; when the
            # window is spent the EAGAIN is raised for the caller to copy.
            if delays is None:
                delays = transient_delays(window)
            delay = next(delays, None)
            if delay is None:
                raise _name_paths(err, source, dest) from None
            time.sleep(delay)
            continue
        return ReflinkResult(ReflinkOutcome.CLONED)


def _from_source_open(err: OSError, source: str) -> bool:
    """Did ``err`` come from opening the source rather than the clone call?

    The Linux clone of ``probe._platform`` names the source alone when its
    open (or the fstat after it) fails; ``fcntl.ioctl`` names no file at
    all; macOS's clonefileat names both.
    """
    return err.filename == source and err.filename2 is None


def _failed(err: OSError, source: str, dest: str, plat: Platform) -> ReflinkResult:
    """The outcome of a failed, non-transient clone, or the error raised."""
    if is_caller_error(err):
        # Our own refusal of a source swapped for a FIFO/directory after
        # the stat (it carries EINVAL only to name the problem), or a
        # failure to create the dest: neither is the filesystem's answer
        # to "can this pair clone".
        raise err
    outcome = classify(
        err.errno,
        lambda: source_gone(source),
        plat.errnos,
        from_call=not _from_source_open(err, source),
    )
    if outcome is None:
        raise _name_paths(err, source, dest) from None
    return ReflinkResult(outcome, err.errno, left_behind(err))


def reflink(source: PathArg, dest: PathArg) -> ReflinkResult:
    """Clone ``source`` to the new file ``dest``; outcome plus errno.

    * CLONED: dest exists, has its own inode, shares the source's blocks and
      carries the source's permission bits (FICLONE copies none; a lost exec
      bit is a classic bug).
    * UNSUPPORTED (errno set): EXDEV, EOPNOTSUPP/ENOTSUP, ENOSYS or EINVAL
      from the clone or from opening the source; ENOTTY, EPERM, EACCES,
      EBADF or ETXTBSY from the clone call itself (Linux; see
      ``probe._outcome``). No dest is left behind -- unless removing it
      failed as well (EIO, EROFS): then ``leftover`` names it.
    * EAGAIN (ZFS: the source is not synced yet) is retried with backoff for
      up to ``$COWPROBE_EAGAIN_WINDOW`` seconds (default 5); then
      ``BlockingIOError`` is raised -- the pair can clone, just not now.
    * SOURCE_VANISHED: the source was missing before the call (errno None),
      or the call failed with ENOENT and the source is gone now.
    * Anything else raises ``OSError`` with the errno and the path it is
      about (both paths for the clone call itself): EIO,
      EACCES or EPERM from opening the source or creating the dest, ENOSPC,
      EEXIST (dest exists -- never clobbered), ENOENT while
      the source is still there (a missing dest parent). A dest it created
      and could not remove again is named by ``probe.leftovers(err)``.

    A symlink at ``dest`` is never followed; a symlink as ``source`` is
    (as ``cp`` does). A directory, FIFO, socket or device as source raises at
    once, without blocking on the FIFO.
    """
    try:
        return reflink_at(as_path(source, "source"), as_path(dest, "destination"), None)
    except OSError as err:
        # An error from the clone itself (EIO, ENOSPC) whose cleanup failed
        # too: the file is still there, and the error says so -- as
        # ``leftover`` does for a refusal. (Only here: clone_or_copy calls
        # reflink_at on a temporary it cleans up and names itself.)
        left = left_behind(err)
        if left is not None:
            name_leftovers(err, [left])
        raise


def try_reflink(source: PathArg, dest: PathArg) -> ReflinkOutcome:
    """The outcome of ``reflink(source, dest)``; see there for the rules."""
    return reflink(source, dest).outcome


def _name_paths(err: OSError, source: str, dest: str) -> OSError:
    """The error with both paths attached, so a log line says which file.

    ``fcntl.ioctl`` raises with no filename at all; an error from opening the
    source already names it and keeps its own message.
    """
    if err.filename is None:
        # In place, not a new error: its marks (a dest left behind) stay.
        err.filename, err.filename2 = source, dest
    return err
