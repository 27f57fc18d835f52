"""The platform seam: the one place that knows which OS we are on.

A ``Platform`` is the clone primitive (by name, and between open descriptors
where the OS has one) plus the errno table its errors are read with. Nothing
else in probe asks ``sys.platform``. The policy in ``probe._reflink`` and the
batch materializer are written once against this seam, so they read the same
on every OS, and a platform this machine cannot run (macOS) can still be
tested by building its ``Platform`` around a stand-in function.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
from collections.abc import Callable
from functools import cache

from . import _linux
from ._fd import close_quietly
from ._outcome import HOST_ERRNOS, ErrnoTable
from ._records import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    # Imported where used: a Linux run never needs the macOS code.
    from . import _macos

__all__ = [
    "CloneFd",
    "CloneFn",
    "Platform",
    "SpecialFileError",
    "caller_error",
    "check_replaceable",
    "close_quietly",
    "create_dest",
    "current",
    "describe_mode",
    "is_caller_error",
    "left_behind",
    "linux",
    "macos",
    "not_regular",
    "open_source",
    "remove_created",
    "remove_if_same",
    "unreplaceable",
    "unsupported_platform",
]

# Opening a FIFO for reading blocks until a writer appears; O_NONBLOCK makes
# the open return at once so the type check after it can refuse the FIFO. It
# has no effect on regular-file I/O.
_SOURCE_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0)
# Exclusive and no-follow: never clobber an existing file, never write
# through a symlink planted at the destination.
_DEST_FLAGS = (
    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0)
)


class SpecialFileError(OSError):
    """The source is not a regular file (directory, FIFO, socket, device),
    or the destination that would be replaced is a FIFO, socket or device."""


def describe_mode(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISLNK, "a symlink"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def not_regular(path: str, mode: int) -> OSError:
    if stat.S_ISDIR(mode):
        return IsADirectoryError(errno.EISDIR, "source is a directory, not a file", path)
    return SpecialFileError(
        errno.EINVAL, f"source is {describe_mode(mode)}, not a regular file", path
    )


def unreplaceable(path: str, mode: int) -> OSError | None:
    """Why an existing ``path`` of this mode must not be renamed over, or
    None. Replacing a device node, FIFO or socket with a regular file
    would destroy it (`clone disk.img /dev/sdb` replaced the device's
    name; cp writes into it, we never write through a name, so we refuse).
    A symlink is replaced, never followed."""
    if stat.S_ISREG(mode) or stat.S_ISLNK(mode):
        return None
    if stat.S_ISDIR(mode):
        return IsADirectoryError(errno.EISDIR, "destination is a directory", path)
    return SpecialFileError(
        errno.EEXIST, f"destination is {describe_mode(mode)}, not a regular file: not replaced",
        path)


def check_replaceable(name: str, dir_fd: int, path: str) -> None:
    """Raise ``unreplaceable``'s error if what ``name`` in ``dir_fd`` is now
    must not be renamed over (one lstat; nothing there is fine)."""
    try:
        mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return
    if (refused := unreplaceable(path, mode)) is not None:
        raise refused


def open_source(source: str) -> tuple[int, os.stat_result]:
    """Open ``source`` for reading and prove it is a regular file.

    The fstat happens on the opened descriptor, so a path swapped for a FIFO
    or directory between any earlier check and this open is still refused.
    """
    fd = os.open(source, _SOURCE_FLAGS)
    try:
        try:
            st = os.fstat(fd)
        except OSError as err:
            # fstat names no file; an EIO that does not say which one is
            # no help in a batch of thousands.
            err.filename = source
            raise
        if not stat.S_ISREG(st.st_mode):
            raise not_regular(source, st.st_mode)
    except BaseException:
        # A failing close (FUSE FLUSH, NFS write-back) must not replace the
        # error that says why the source was refused.
        close_quietly(fd)
        raise
    return fd, st


def create_dest(dest: str, mode: int = 0o600, *, dir_fd: int | None = None) -> int:
    return os.open(dest, _DEST_FLAGS, mode, dir_fd=dir_fd)


_NOT_A_CLONE_ANSWER = "_cowprobe_not_a_clone_answer"


def caller_error(err: OSError) -> OSError:
    """Mark ``err`` as being about the caller's arguments, not the clone.

    Only the clone call and the source's open speak for "can this pair
    clone"; an EINVAL from creating the destination (a name the filesystem
    rejects, say) must reach the caller as an error, never be read as
    UNSUPPORTED. The mark is an attribute, not a subclass, so a
    FileExistsError stays a FileExistsError.
    """
    setattr(err, _NOT_A_CLONE_ANSWER, True)
    return err


_LEFT_BEHIND = "_cowprobe_left_behind"


def left_behind(err: BaseException) -> str | None:
    """The dest a failed clone created and then could not remove (the
    unlink failed: EIO, EROFS), as the clone was given it; None when the
    failure left nothing. Marked on the clone's own error, which stays the
    answer."""
    value = getattr(err, _LEFT_BEHIND, None)
    return value if isinstance(value, str) else None


def is_caller_error(err: OSError) -> bool:
    return isinstance(err, (SpecialFileError, IsADirectoryError)) or bool(
        getattr(err, _NOT_A_CLONE_ANSWER, False)
    )


def remove_created(dest: str, fd: int, *, dir_fd: int | None = None) -> bool:
    """Unlink ``dest`` only if it is still the file we created on ``fd``;
    True if the name no longer holds our file.

    Between our exclusive create and this cleanup another process may have
    renamed something else onto the name; deleting by path alone would then
    destroy *their* file.
    """
    try:
        ours = os.fstat(fd)
    except OSError:
        return False
    return remove_if_same(dest, ours, dir_fd=dir_fd)


def remove_if_same(dest: str, ours: os.stat_result, *, dir_fd: int | None = None) -> bool:
    """``remove_created`` for a file whose descriptor is already closed.

    Never raises: it runs while another error is on its way to the caller,
    and that error is the answer. An unlink refused here (EIO, EROFS,
    EACCES) used to escape in its place and be read as the clone's outcome.
    """
    try:
        there = os.stat(dest, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    if (ours.st_dev, ours.st_ino) != (there.st_dev, there.st_ino):
        return True  # someone else's file now: ours is gone from the name
    try:
        os.unlink(dest, dir_fd=dir_fd)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


CloneFn = Callable[[str, str, "int | None"], None]
#: clone_fd(dst_fd, src_fd): make the open ``dst_fd`` share all of the open
#: ``src_fd``'s blocks, or raise OSError with the kernel's errno
CloneFd = Callable[[int, int], None]


class Platform(NamedTuple):
    name: str
    errnos: ErrnoTable
    #: clone(source, dest, dir_fd): make dest (which must not exist; relative
    #: to dir_fd when given) a clone of source with the source's permission
    #: bits, or raise OSError leaving no dest behind.
    clone: CloneFn
    #: the same primitive between two open files, for callers that open each
    #: source once for many dests (the batch materializer); None where the OS
    #: has no descriptor-level clone (macOS clones by name only)
    clone_fd: CloneFd | None = None


def _linux_clone(ficlone: Callable[[int, int], None]) -> CloneFn:
    def clone(source: str, dest: str, dir_fd: int | None) -> None:
        src_fd, st = open_source(source)
        try:
            try:
                dst_fd = create_dest(dest, dir_fd=dir_fd)
            except OSError as err:
                raise caller_error(err) from None
            try:
                ficlone(dst_fd, src_fd)
                # FICLONE copies data only. Set the mode explicitly rather
                # than through open()'s argument so the umask cannot strip
                # an exec bit the source has.
                os.fchmod(dst_fd, stat.S_IMODE(st.st_mode) & 0o777)
                ours = os.fstat(dst_fd)
            except BaseException as err:
                if not remove_created(dest, dst_fd, dir_fd=dir_fd):
                    setattr(err, _LEFT_BEHIND, dest)
                # The clone's own error is the answer; a close() error on
                # top of it (FUSE FLUSH) must not replace it.
                close_quietly(dst_fd)
                raise
            try:
                os.close(dst_fd)
            except OSError as err:
                # A failed FLUSH: no dest may be left behind by a failed call.
                if not remove_if_same(dest, ours, dir_fd=dir_fd):
                    setattr(err, _LEFT_BEHIND, dest)
                raise
        finally:
            close_quietly(src_fd)

    return clone


def linux(ficlone: Callable[[int, int], None] = _linux.ficlone) -> Platform:
    return Platform("linux", HOST_ERRNOS, _linux_clone(ficlone), ficlone)


def macos(clonefileat: _macos.ClonefileatFn, get_errno: Callable[[], int]) -> Platform:
    from . import _macos

    return Platform("darwin", _macos.MACOS_ERRNOS, _macos.make_clone(clonefileat, get_errno))


def unsupported_platform() -> Platform:
    def clone(source: str, dest: str, dir_fd: int | None) -> None:
        raise OSError(errno.ENOTSUP, "no reflink primitive on this platform", source, None, dest)

    # No FICLONE here, so none of its call-only refusals apply.
    table = HOST_ERRNOS._replace(call_refusals=frozenset())
    return Platform(sys.platform, table, clone)


@cache
def current() -> Platform:
    if sys.platform.startswith("linux"):
        return linux()
    if sys.platform == "darwin":
        from . import _macos

        return macos(*_macos.load_clonefileat())
    return unsupported_platform()
