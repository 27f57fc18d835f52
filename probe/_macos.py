"""macOS: clonefileat(2) through ctypes.

This machine cannot run macOS, so everything here takes its libc function and
errno reader as arguments: the tests hand in stand-ins behind this seam and
check the classification with macOS's own errno values.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Callable

from . import _libc
from ._outcome import ErrnoTable

__all__ = ["MACOS_ERRNOS", "ClonefileatFn", "load_clonefileat", "make_clone"]

#: <sys/errno.h> on Darwin. ENOTSUP (45) and EOPNOTSUPP (102) are distinct
#: there; both mean "this volume cannot clone" (HFS+, FAT, SMB shares).
MACOS_ERRNOS = ErrnoTable(
    ENOENT=2, EXDEV=18, EOPNOTSUPP=102, ENOTSUP=45, ENOSYS=78, EINVAL=22, EAGAIN=35
)

_AT_FDCWD = -2  # Darwin's value (Linux uses -100)

#: int clonefileat(int src_dirfd, const char *src, int dst_dirfd,
#:                 const char *dst, uint32_t flags);
ClonefileatFn = Callable[[int, bytes, int, bytes, int], int]


def load_clonefileat() -> tuple[ClonefileatFn, Callable[[], int]]:
    fn = _libc.function(
        "clonefileat", ctypes.c_int,
        ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32,
    )
    if fn is None:
        raise OSError(errno.ENOSYS, "clonefileat is not in this C library (not macOS 10.12+)")
    return fn, ctypes.get_errno


def make_clone(
    clonefileat: ClonefileatFn, get_errno: Callable[[], int]
) -> Callable[[str, str, int | None], None]:
    """A ``clone(source, dest, dir_fd)`` that raises OSError with Darwin's errno.

    flags=0: follow a symlink at the *source* (as Linux's open() does); the
    destination is never followed -- clonefile refuses an existing dest with
    EEXIST, which is exactly the no-clobber rule cowprobe wants. It copies the
    mode too, so nothing is left to fix up afterwards.
    """

    def clone(source: str, dest: str, dir_fd: int | None) -> None:
        dst_dir = _AT_FDCWD if dir_fd is None else dir_fd
        if clonefileat(_AT_FDCWD, os.fsencode(source), dst_dir, os.fsencode(dest), 0) != 0:
            err = get_errno()
            raise OSError(err, os.strerror(err), source, None, dest)

    return clone
