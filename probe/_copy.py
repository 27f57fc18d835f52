"""The copy half of "clone or copy": data copy, and atomic replacement.

The seed removed a stale destination before cloning over it. That loses the
old file when the clone *and* the copy then fail (full disk, flaky source).
Here the new content is built under a temporary name in the destination's
directory and renamed over the old one only once it is complete, so a reader
sees the old file or the new one, never a torn or missing one.
"""

from __future__ import annotations

import errno
import os
import stat

from ._datacopy import copy_fd
from ._outcome import ReflinkOutcome, ReflinkResult, is_transient, name_leftovers
from ._paths import PathArg, as_path
from ._platform import (
    close_quietly,
    create_dest,
    open_source,
    remove_created,
    remove_if_same,
    unreplaceable,
)
from ._publish import KEEP, publish
from ._records import TYPE_CHECKING, NamedTuple
from ._reflink import reflink_at
from ._tempname import reap_dead, temp_name

if TYPE_CHECKING:
    from typing import Literal

__all__ = [
    "CopyResult",
    "ReflinkUnavailableError",
    "check_mode",
    "check_reflink",
    "clone_or_copy",
    "clonefile_or_copy",
    "copy_fd",
    "copy_file_at",
    "discard",
    "temp_name",
]


def copy_file_at(
    source: str, dest: str, dir_fd: int | None, mode: int | None = None, *, share: bool = True
) -> int:
    """Copy ``source`` into the new file ``dest`` (relative to ``dir_fd``).

    Exclusive, no-follow create; mode from the source unless given; on any
    failure the half-written dest is removed and the error names both paths.
    """
    src_fd, st = open_source(source)
    try:
        dst_fd = create_dest(dest, dir_fd=dir_fd)
        try:
            n = copy_fd(src_fd, dst_fd, share=share)
            os.fchmod(dst_fd, stat.S_IMODE(st.st_mode) & 0o777 if mode is None else mode)
            ours = os.fstat(dst_fd)
        except BaseException as exc:
            # An unlink refused here (EACCES, EIO) must not replace the error
            # that says what went wrong; clone_or_copy tries again and names
            # what is left.
            remove_created(dest, dst_fd, dir_fd=dir_fd)
            close_quietly(dst_fd)
            if isinstance(exc, OSError) and exc.filename is None:
                raise OSError(exc.errno, exc.strerror, source, None, dest) from exc
            raise
        try:
            os.close(dst_fd)
        except OSError as exc:
            # NFS and FUSE report failed write-back at close(): the bytes
            # may not all have reached the file, so it is no copy at all.
            remove_if_same(dest, ours, dir_fd=dir_fd)
            raise OSError(exc.errno, exc.strerror, source, None, dest) from exc
    finally:
        close_quietly(src_fd)
    return n


if TYPE_CHECKING:
    ReflinkMode = Literal["auto", "always", "never"]
_REFLINK_MODES = ("auto", "always", "never")


class CopyResult(NamedTuple):
    """What ``clone_or_copy`` did."""

    cloned: bool
    #: The reflink attempt behind a copy (UNSUPPORTED with its errno, or
    #: SOURCE_VANISHED); None when cloned or when reflink was not tried.
    attempt: ReflinkResult | None
    #: Bytes the copy spans, holes included (0 for a clone: no data moved).
    copied_bytes: int
    #: A transient refusal (EAGAIN: ZFS still syncing the source) that
    #: outlasted the retry window, so the file was copied; nothing is known
    #: against the pair. None otherwise.
    transient_errno: int | None = None
    #: Temporaries (full paths) that could not be removed: our own, or a dead
    #: run's found in the directory. Never silently left.
    leftovers: tuple[str, ...] = ()


class ReflinkUnavailableError(OSError):
    """``reflink="always"`` was asked for and the filesystem said no."""


def check_reflink(reflink: object) -> ReflinkMode:
    """``reflink`` if it is one of its three values, else ValueError (True
    or "bogus" used to behave like "auto")."""
    if not isinstance(reflink, str) or reflink not in _REFLINK_MODES:
        raise ValueError(f"reflink must be 'auto', 'always' or 'never', not {reflink!r}")
    return reflink  # type: ignore[return-value]


def check_mode(mode: object) -> int | None:
    """``mode`` if it is None or permission bits, else ValueError.

    0..0o7777, and never set-user-ID or set-group-ID: the file is published
    under its final name with its bits already set, so a mode computed from
    an untrusted source (or a typo) would mint a set-id program owned by the
    caller -- root, often. A caller who really wants one sets it afterwards
    with os.chmod, deliberately. (Bits taken from the source are masked to
    0o777 for the same reason, as cp does.) Sticky is allowed and harmless.
    """
    if mode is None:
        return None
    if isinstance(mode, bool) or not isinstance(mode, int):
        raise ValueError(f"mode must be an int of permission bits, not {mode!r}")
    if not 0 <= mode <= 0o7777:
        hint = " (use stat.S_IMODE(st_mode))" if mode > 0o7777 else ""
        raise ValueError(f"mode must be 0..0o7777, not {mode:#o}{hint}")
    if mode & (stat.S_ISUID | stat.S_ISGID):
        raise ValueError(f"mode {mode:#o} sets setuid/setgid; set those with os.chmod afterwards")
    return mode


def clone_or_copy(
    source: PathArg,
    dest: PathArg,
    *,
    mode: int | None = None,
    reflink: ReflinkMode = "auto",
    fsync: bool = False,
    eagain_window: float | None = None,
) -> CopyResult:
    """Make ``dest`` a copy of ``source``, like ``cp --reflink=WHEN``.

    ``dest`` may exist; it is replaced atomically, and only by a complete
    file. If anything fails the old ``dest`` is untouched and no temporary is
    left (one that cannot be removed is named: ``CopyResult.leftovers``, or
    the error's notes and its ``cowprobe_leftovers``). A symlink at ``dest``
    is replaced, never written through; a device, FIFO or socket there is
    ``SpecialFileError`` (EEXIST) and stays. ``dest`` naming the source's
    own directory entry is a ValueError ("are the same file"), another hard
    link of it is replaced like any file. Permission bits follow the source
    (without setuid/setgid) unless ``mode`` is given (``check_mode``). With
    ``reflink="always"`` a filesystem that cannot clone raises
    ``ReflinkUnavailableError`` (errno set) and nothing is written;
    ``"never"`` makes a physical copy: no clone, and no copy_file_range
    (which shares blocks on btrfs and XFS). A sparse source stays sparse.
    ``fsync=True``: the file is synced before the rename and the directory
    after it; a failed sync fails the call and keeps the old ``dest``.
    EAGAIN from the clone is retried for ``eagain_window`` seconds
    (``probe._outcome.eagain_window``), then the file is copied.
    """
    when = check_reflink(reflink)
    mode = check_mode(mode)
    src = as_path(source, "source")
    dst = as_path(dest, "destination")
    parent, name = os.path.split(dst)
    if not name or name in (".", ".."):
        raise IsADirectoryError(errno.EISDIR, "destination names a directory", dst)
    # Every step below is relative to this one directory descriptor, so a
    # parent swapped for a symlink after this open cannot redirect the write.
    dir_fd = os.open(parent or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            old = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            pass
        else:
            if (refused := unreplaceable(dst, old.st_mode)) is not None:
                raise refused
            _refuse_same_entry(src, dst, old, name, dir_fd)
        # A run killed by SIGKILL ran no cleanup: its temporaries are ours
        # to remove now.
        left = [os.path.join(parent, n) for n in reap_dead(dir_fd)]
        result = _build(
            src, dst, name, dir_fd, mode=mode, when=when, fsync=fsync, window=eagain_window
        )
        if left:
            result = CopyResult(
                result.cloned, result.attempt, result.copied_bytes, result.transient_errno,
                (*left, *result.leftovers),
            )
    except OSError as exc:
        # A failure before any temporary existed (the stat of an existing
        # dest) names the dest relative to dir_fd; the caller knows it by
        # the path they gave.
        _blame_dest(exc, [], name, dst)
        raise
    finally:
        os.close(dir_fd)
    return result


def _refuse_same_entry(src: str, dst: str, old: os.stat_result, name: str, dir_fd: int) -> None:
    """ValueError if ``dst`` is the very directory entry ``src`` reaches
    (``a`` and ``./a``, or a symlink ``src`` pointing at ``dst``): the call
    would replace the file with a clone of itself and call it done, where
    GNU cp and shutil refuse "are the same file". Another hard link of the
    source as ``dst`` is not refused: turning hard links into clones is a
    package manager's reason to call this. Costs one stat, and only when
    ``dst`` exists; a source that cannot be stat'ed is left to the build,
    which reports its error as it does for any source."""
    try:
        st = os.stat(src)
    except OSError:
        return
    if (st.st_dev, st.st_ino) != (old.st_dev, old.st_ino):
        return
    if old.st_nlink > 1:
        # One inode, several names: the same entry only if the source's
        # name, symlinks resolved, is ``name`` in this very directory.
        real_parent, real_name = os.path.split(os.path.realpath(src))
        try:
            there, here = os.stat(real_parent), os.fstat(dir_fd)
        except OSError:
            return
        if real_name != name or (there.st_dev, there.st_ino) != (here.st_dev, here.st_ino):
            return
    raise ValueError(f"{src!r} and {dst!r} are the same file")


def _build(
    src: str,
    dst: str,
    name: str,
    dir_fd: int,
    *,
    mode: int | None,
    when: ReflinkMode,
    fsync: bool,
    window: float | None,
) -> CopyResult:
    """Build the new file under a temporary name, then publish it."""
    parent = os.path.dirname(dst)
    tmp = temp_name(name)
    tmps = [tmp]
    transient = None
    try:
        attempt = None
        if when != "never":
            try:
                attempt = reflink_at(src, tmp, dir_fd, window=window)
            except OSError as err:
                # EAGAIN outlasted the window: copy this one, and say so.
                if not is_transient(err.errno) or when == "always":
                    raise
                transient = err.errno
        if attempt is not None and attempt.outcome is ReflinkOutcome.CLONED:
            result = CopyResult(True, None, 0)
            if mode is not None:
                os.chmod(tmp, mode, dir_fd=dir_fd)
        elif when == "always" and attempt is not None:
            err_no = attempt.errno or errno.ENOENT  # pre-check vanish carries none
            raise ReflinkUnavailableError(
                err_no, f"cannot clone ({attempt.outcome.value})", src, None, dst
            )
        else:
            # SOURCE_VANISHED lands here too: the copy then fails with the
            # source's ENOENT, which is the loud error a really missing
            # file deserves.
            if when != "never":
                # A fresh name for the copy. The failed clone's cleanup
                # unlinks only a file it can prove is its own, so when
                # that proof fails (an fstat EIO) the name stays taken
                # and the copy's exclusive create would fail with an
                # EEXIST that says nothing about what went wrong.
                tmp = temp_name(name)
                tmps.append(tmp)
            copied = copy_file_at(src, tmp, dir_fd, mode, share=when != "never")
            result = CopyResult(False, attempt, copied, transient)
        stuck = publish(tmp, name, dir_fd, fsync=fsync)
    except BaseException as exc:
        # Best effort, but never silent: where the failure was "cannot write
        # here" (read-only mount: unlink checks EROFS before it even looks
        # the name up) this unlink fails as well; its error must not replace
        # the one that says what went wrong, so the names go into a note.
        keep = getattr(exc, KEEP, None)
        stuck = discard([t for t in tmps if t != keep], dir_fd)
        if isinstance(exc, OSError):
            _blame_dest(exc, tmps, name, dst)
        if stuck:
            name_leftovers(exc, [os.path.join(parent, t) for t in stuck])
        raise
    # The clone attempt's name, when the copy used another one.
    stuck += discard(tmps[:-1], dir_fd)
    if stuck:
        result = CopyResult(
            result.cloned,
            result.attempt,
            result.copied_bytes,
            result.transient_errno,
            tuple(os.path.join(parent, t) for t in stuck),
        )
    return result


def discard(names: list[str], dir_fd: int) -> list[str]:
    """Unlink our own temporaries; the names that could not be removed.

    Each name is random and was created exclusively by us, so unlinking by
    name is safe. Errors are not raised because this runs while another
    error (the one that says what went wrong) is already on its way out;
    the caller names what is left instead.
    """
    stuck = []
    for tmp in names:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        except OSError:
            # A read-only mount answers EROFS before it looks the name up:
            # only a name still there is a leftover to report.
            try:
                os.stat(tmp, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            except OSError:
                pass
            stuck.append(tmp)
    return stuck


def _blame_dest(err: OSError, tmps: list[str], name: str, dest: str) -> None:
    """Make ``err`` name the destination the caller gave, not our hidden
    temporary (``.x.cowprobe-1a2b.tmp`` means nothing to a user, and is gone
    by the time they look) nor the bare name relative to our dir_fd."""
    ours = {*tmps, name}
    if err.filename in ours:
        err.filename = dest
        if err.filename2 in ours:  # os.replace(tmp, name): both are the dest
            err.filename2 = None
    if err.filename2 in ours:
        err.filename2 = dest


def clonefile_or_copy(
    source: PathArg, dest: PathArg, *, mode: int | None = None, fsync: bool = False
) -> bool:
    """Reflink ``source`` to ``dest`` where the filesystem can, copy where it
    cannot: True if cloned, False if copied. Either way, on return ``dest``
    holds the source's bytes and (unless ``mode``) its permission bits.

    Unlike a remove-then-clone, an existing ``dest`` survives any failure,
    and with ``fsync=True`` a crash cannot publish a torn file: see
    ``clone_or_copy``.
    """
    return clone_or_copy(source, dest, mode=mode, fsync=fsync).cloned
