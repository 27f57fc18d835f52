"""The copy half of "clone or copy": data copy, and atomic replacement.

The seed removed a stale destination before cloning over it. That loses the
old file when the clone *and* the copy then fail (full disk, flaky source).
Here the new content is built under a temporary name in the destination's
directory and renamed over the old one only once it is complete, so a reader
sees the old file or the new one, never a torn or missing one.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import secrets
import stat
from dataclasses import dataclass
from typing import Literal

from ._outcome import ReflinkOutcome, ReflinkResult
from ._paths import PathArg, as_path
from ._platform import close_quietly, create_dest, open_source, remove_created, remove_if_same
from ._reflink import reflink_at

__all__ = [
    "CopyResult",
    "ReflinkUnavailableError",
    "clone_or_copy",
    "clonefile_or_copy",
    "copy_fd",
    "copy_file_at",
    "discard",
    "temp_name",
]

# copy_file_range answers these when it cannot serve this pair of files
# (cross-filesystem before 5.3, a filesystem without the op, a FUSE daemon
# without it); the data can still be moved by read/write. ENOSPC, EDQUOT and
# EIO are deliberately absent: those are real failures, not "try another way".
_CFR_FALLBACK = frozenset(
    {errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.EBADF}
)
_CFR_CHUNK = 1 << 30
_RW_CHUNK = 1 << 20


def copy_fd(src_fd: int, dst_fd: int) -> int:
    """Copy from the current offset of ``src_fd`` to EOF; bytes copied.

    In-kernel copy_file_range first (no user-space round trip, and on btrfs,
    XFS and NFS it may even share blocks), then a read/write loop for the
    rest. A copy_file_range answering 0 is never trusted as EOF: procfs,
    sysfs and some FUSE daemons report size 0 or no support that way, and a
    silently empty copy is the worst possible outcome. The read loop has the
    last word, and it checks an early EOF against the source's size once.
    """
    copied = 0
    use_cfr = hasattr(os, "copy_file_range")
    while use_cfr:
        try:
            n = os.copy_file_range(src_fd, dst_fd, _CFR_CHUNK)
        except OSError as err:
            if err.errno not in _CFR_FALLBACK:
                raise
            break
        if n == 0:
            break
        copied += n
    rechecked = False
    while True:
        chunk = os.read(src_fd, _RW_CHUNK)
        if not chunk:
            if rechecked or not _ends_early(src_fd):
                return copied
            # One more read now that fstat has refreshed the size. A FUSE
            # daemon's short read reply *means* EOF to the kernel, which
            # then shrinks its cached size to match: trusting that EOF
            # turned one flaky read into a silently truncated copy. A file
            # that really is shorter than its size (sysfs attributes say
            # 4096) reads 0 again and is accepted as it is.
            rechecked = True
            continue
        rechecked = False
        view = memoryview(chunk)
        while view:
            # write() may be short (a signal, a FUSE daemon, a nearly full
            # disk reporting the partial count before ENOSPC).
            written = os.write(dst_fd, view)
            view = view[written:]
        copied += len(chunk)


def _ends_early(fd: int) -> bool:
    """Does the file behind ``fd`` claim more bytes than we have read?"""
    return os.fstat(fd).st_size > os.lseek(fd, 0, os.SEEK_CUR)


def copy_file_at(source: str, dest: str, dir_fd: int | None, mode: int | None = None) -> int:
    """Copy ``source`` into the new file ``dest`` (relative to ``dir_fd``).

    Exclusive, no-follow create; mode from the source unless given; on any
    failure the half-written dest is removed and the error names both paths.
    """
    src_fd, st = open_source(source)
    try:
        dst_fd = create_dest(dest, dir_fd=dir_fd)
        try:
            n = copy_fd(src_fd, dst_fd)
            os.fchmod(dst_fd, stat.S_IMODE(st.st_mode) & 0o777 if mode is None else mode)
            ours = os.fstat(dst_fd)
        except BaseException as exc:
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


class _TempNames:
    """Unpredictable, unique temporary names without a getrandom() per file.

    A random prefix per process plus a counter: a batch replacing 10,000
    existing files would otherwise spend a syscall per file on names alone.
    The prefix keeps names unguessable (a planted symlink or file can only
    make our exclusive, no-follow create fail, never redirect it), and a
    forked child draws its own so parent and child never collide.
    """

    def __init__(self) -> None:
        self.reseed()

    def reseed(self) -> None:
        self.prefix = secrets.token_hex(4)
        self.counter = itertools.count()

    def next(self, final_name: str) -> str:
        # next() on itertools.count is atomic under the GIL: threads of one
        # batch never draw the same number.
        return f".{final_name[:100]}.cowprobe-{self.prefix}{next(self.counter):04x}.tmp"


_TEMP_NAMES = _TempNames()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_TEMP_NAMES.reseed)


def temp_name(final_name: str) -> str:
    """A hidden, unique sibling name for building ``final_name``."""
    return _TEMP_NAMES.next(final_name)


ReflinkMode = Literal["auto", "always", "never"]


@dataclass(frozen=True)
class CopyResult:
    """What ``clone_or_copy`` did."""

    cloned: bool
    #: The reflink attempt behind a copy (UNSUPPORTED with its errno, or
    #: SOURCE_VANISHED); None when cloned or when reflink was not tried.
    attempt: ReflinkResult | None
    #: Bytes written by the copy (0 for a clone: no data moved).
    copied_bytes: int


class ReflinkUnavailableError(OSError):
    """``reflink="always"`` was asked for and the filesystem said no."""


def clone_or_copy(
    source: PathArg, dest: PathArg, *, mode: int | None = None, reflink: ReflinkMode = "auto"
) -> CopyResult:
    """Make ``dest`` a copy of ``source``, like ``cp --reflink=WHEN``.

    ``dest`` may exist; it is replaced atomically, and only by a complete
    file. If anything fails the old ``dest`` is untouched and no temporary is
    left. A symlink at ``dest`` is replaced, never written through. Permission
    bits follow the source unless ``mode`` is given. With ``reflink="always"``
    a filesystem that cannot clone raises ``ReflinkUnavailableError`` (errno
    set) and nothing is written; ``"never"`` copies without trying.
    """
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
            if stat.S_ISDIR(old.st_mode):
                raise IsADirectoryError(errno.EISDIR, "destination is a directory", dst)
        tmp = temp_name(name)
        tmps = [tmp]
        try:
            attempt = None if reflink == "never" else reflink_at(src, tmp, dir_fd)
            if attempt is not None and attempt.outcome is ReflinkOutcome.CLONED:
                result = CopyResult(True, None, 0)
                if mode is not None:
                    os.chmod(tmp, mode, dir_fd=dir_fd)
            elif reflink == "always" and attempt is not None:
                err = attempt.errno or errno.ENOENT  # pre-check vanish carries none
                raise ReflinkUnavailableError(
                    err, f"cannot clone ({attempt.outcome.value})", src, None, dst
                )
            else:
                # SOURCE_VANISHED lands here too: the copy then fails with the
                # source's ENOENT, which is the loud error a really missing
                # file deserves.
                if attempt is not None:
                    # A fresh name for the copy. The failed clone's cleanup
                    # unlinks only a file it can prove is its own, so when
                    # that proof fails (an fstat EIO) the name stays taken
                    # and the copy's exclusive create would fail with an
                    # EEXIST that says nothing about what went wrong.
                    tmp = temp_name(name)
                    tmps.append(tmp)
                result = CopyResult(False, attempt, copy_file_at(src, tmp, dir_fd, mode))
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException as exc:
            # Best effort only: where the failure was "cannot write here"
            # (read-only mount: unlink checks EROFS before it even looks the
            # name up) this unlink fails as well, and letting its error out
            # would replace the one that says what went wrong.
            discard(tmps, dir_fd)
            if isinstance(exc, OSError):
                _blame_dest(exc, tmps, name, dst)
            raise
        # The clone attempt's name, when the copy used another one.
        discard(tmps[:-1], dir_fd)
    except OSError as exc:
        # A failure before any temporary existed (the stat of an existing
        # dest) names the dest relative to dir_fd; the caller knows it by
        # the path they gave.
        _blame_dest(exc, [], name, dst)
        raise
    finally:
        os.close(dir_fd)
    return result


def discard(names: list[str], dir_fd: int) -> None:
    """Unlink our own temporaries, best effort.

    Each name is random and was created exclusively by us, so unlinking by
    name is safe; failures are ignored because this runs while another error
    (the one that says what went wrong) is already on its way out.
    """
    for tmp in names:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)


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


def clonefile_or_copy(source: PathArg, dest: PathArg, *, mode: int | None = None) -> bool:
    """Reflink ``source`` to ``dest`` where the filesystem can, copy where it
    cannot: True if cloned, False if copied. Either way, on return ``dest``
    holds the source's bytes and (unless ``mode``) its permission bits.

    Unlike a remove-then-clone, an existing ``dest`` survives any failure:
    see ``clone_or_copy``.
    """
    return clone_or_copy(source, dest, mode=mode).cloned
