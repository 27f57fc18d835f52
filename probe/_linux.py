"""Linux syscalls cowprobe needs that the standard library does not wrap.

Thin, typed wrappers only: each raises ``OSError`` with the kernel's errno and
decides nothing. What an errno *means* lives in ``probe._outcome``.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct

from . import _libc
from ._records import NamedTuple

__all__ = [
    "FIEMAP_EXTENT_SHARED",
    "FS_IMMUTABLE_FL",
    "FS_NOCOW_FL",
    "RENAME_EXCHANGE",
    "RENAME_NOREPLACE",
    "Extent",
    "change_dir_flags",
    "ficlone",
    "ficlonerange",
    "fideduperange",
    "fiemap",
    "get_inode_flags",
    "renameat2",
    "set_inode_flags",
    "shared_bytes",
]

# <linux/fs.h>: _IOW(0x94, 9, int) and friends. Spelled out because Python
# has no _IOW(); the sizes are part of the kernel ABI and never change.
FICLONE = 0x40049409
FICLONERANGE = 0x4020940D  # _IOW(0x94, 13, struct file_clone_range)
FIDEDUPERANGE = 0xC0189436  # _IOWR(0x94, 54, struct file_dedupe_range)
FS_IOC_FIEMAP = 0xC020660B  # _IOWR('f', 11, struct fiemap)
FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602

FS_IMMUTABLE_FL = 0x00000010  # chattr +i
FS_NOCOW_FL = 0x00800000  # chattr +C (btrfs: no copy-on-write, no clones with COW files)

FIEMAP_FLAG_SYNC = 0x1
FIEMAP_EXTENT_LAST = 0x1
FIEMAP_EXTENT_UNKNOWN = 0x2
FIEMAP_EXTENT_DELALLOC = 0x4
FIEMAP_EXTENT_DATA_INLINE = 0x200
FIEMAP_EXTENT_SHARED = 0x2000

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2

FILE_DEDUPE_RANGE_SAME = 0
FILE_DEDUPE_RANGE_DIFFERS = 1

_AT_FDCWD = -100


def ficlone(dst_fd: int, src_fd: int) -> None:
    """Make ``dst_fd`` share all of ``src_fd``'s blocks (whole-file clone).

    ``fcntl.ioctl`` drops the GIL around the call, so clones in worker
    threads run in parallel.
    """
    fcntl.ioctl(dst_fd, FICLONE, src_fd)


def ficlonerange(dst_fd: int, src_fd: int, src_offset: int, length: int, dst_offset: int) -> None:
    """Clone ``length`` bytes (0: to EOF) of ``src_fd`` into ``dst_fd``."""
    arg = struct.pack("=qQQQ", src_fd, src_offset, length, dst_offset)
    fcntl.ioctl(dst_fd, FICLONERANGE, arg)


def fideduperange(src_fd: int, src_offset: int, length: int, dst_fd: int, dst_offset: int) -> int:
    """Ask the kernel to share identical ranges; returns bytes deduped.

    Raises OSError for a per-destination failure, and ``ValueError`` when the
    kernel answers that the ranges differ (it shares nothing then, which a
    caller must not read as success).
    """
    # struct file_dedupe_range { u64 src_offset, src_length; u16 dest_count;
    #   u16 reserved1; u32 reserved2; struct file_dedupe_range_info info[]; }
    # struct file_dedupe_range_info { s64 dest_fd; u64 dest_offset;
    #   u64 bytes_deduped; s32 status; u32 reserved; }
    buf = bytearray(struct.pack("=QQHHI", src_offset, length, 1, 0, 0))
    buf += struct.pack("=qQQiI", dst_fd, dst_offset, 0, 0, 0)
    fcntl.ioctl(src_fd, FIDEDUPERANGE, buf)
    _fd, _off, deduped, status, _r = struct.unpack_from("=qQQiI", buf, 24)
    if status < 0:
        raise OSError(-status, os.strerror(-status))
    if status == FILE_DEDUPE_RANGE_DIFFERS:
        raise ValueError("ranges differ; nothing was deduplicated")
    return int(deduped)


class Extent(NamedTuple):
    logical: int
    physical: int
    length: int
    flags: int

    @property
    def shared(self) -> bool:
        return bool(self.flags & FIEMAP_EXTENT_SHARED)


_FIEMAP_HEADER = struct.Struct("=QQIIII")
_FIEMAP_EXTENT = struct.Struct("=QQQQQIIII")


def fiemap(fd: int, *, sync: bool = True, batch: int = 64) -> list[Extent]:
    """All extents of the open file ``fd`` (FS_IOC_FIEMAP).

    ``sync`` flushes dirty pages first: without it a freshly written file
    shows delalloc extents with no physical address, and a clone or copy
    looks unshared when it is not yet decided.
    """
    out: list[Extent] = []
    start = 0
    flags = FIEMAP_FLAG_SYNC if sync else 0
    while True:
        buf = bytearray(_FIEMAP_HEADER.size + batch * _FIEMAP_EXTENT.size)
        _FIEMAP_HEADER.pack_into(buf, 0, start, 0xFFFFFFFFFFFFFFFF - start, flags, 0, batch, 0)
        fcntl.ioctl(fd, FS_IOC_FIEMAP, buf)
        mapped = _FIEMAP_HEADER.unpack_from(buf, 0)[3]
        if mapped == 0:
            return out
        last = False
        for i in range(mapped):
            logical, physical, length, _r1, _r2, fe_flags, *_ = _FIEMAP_EXTENT.unpack_from(
                buf, _FIEMAP_HEADER.size + i * _FIEMAP_EXTENT.size
            )
            out.append(Extent(logical, physical, length, fe_flags))
            start = logical + length
            last = bool(fe_flags & FIEMAP_EXTENT_LAST)
        if last:
            return out


def shared_bytes(fd: int) -> int:
    """Bytes of ``fd`` on extents the filesystem marks shared (FIEMAP)."""
    return sum(e.length for e in fiemap(fd) if e.shared)


def get_inode_flags(fd: int) -> int:
    buf = bytearray(struct.pack("=l", 0))
    fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf)
    return int(struct.unpack("=l", buf)[0])


def set_inode_flags(fd: int, flags: int) -> None:
    fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("=l", flags))


def change_dir_flags(path: str | os.PathLike[str], add: int = 0, remove: int = 0) -> int:
    """``chattr`` on a directory: add/remove inode flags; the flags after.

    Only sets them when something changes (FS_IOC_SETFLAGS on an immutable
    inode is refused even when it would clear nothing else).
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        old = get_inode_flags(fd)
        new = (old | add) & ~remove
        if new != old:
            set_inode_flags(fd, new)
        return new
    finally:
        os.close(fd)


def renameat2(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    flags: int,
    *,
    src_dir_fd: int | None = None,
    dst_dir_fd: int | None = None,
) -> None:
    """renameat2(2): RENAME_NOREPLACE (fail with EEXIST) or RENAME_EXCHANGE."""
    fn = _libc.function(
        "renameat2", ctypes.c_int,
        ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint,
    )
    if fn is None:
        raise OSError(errno.ENOSYS, "renameat2 is not in this C library")
    rc = fn(
        _AT_FDCWD if src_dir_fd is None else src_dir_fd,
        os.fsencode(src),
        _AT_FDCWD if dst_dir_fd is None else dst_dir_fd,
        os.fsencode(dst),
        flags,
    )
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), os.fspath(src), None, os.fspath(dst))


# --- Appended for the capability probe (probe.capabilities) -----------------
__all__ += ["Statx", "fallocate", "fstatfs_type", "statx"]
# statfs f_type, fallocate(2) and statx(2) have no standard-library wrapper.
# os.posix_fallocate is deliberately not used: glibc emulates it by writing
# zeros when the filesystem has no fallocate, and a probe that reads that
# emulation as "supported" reports a lie.

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10

STATX_BTIME = 0x0800
_AT_EMPTY_PATH = 0x1000
_AT_SYMLINK_NOFOLLOW = 0x100


def fstatfs_type(fd: int) -> int:
    """The filesystem magic number (``statfs.f_type``) of the open ``fd``."""
    fn = _libc.function("fstatfs", ctypes.c_int, ctypes.c_int, ctypes.c_void_p)
    # struct statfs begins with f_type as a native long; the rest is read
    # through os.statvfs. 256 bytes is larger than any ABI's struct statfs.
    buf = ctypes.create_string_buffer(256)
    if fn(fd, buf) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(ctypes.c_ulong.from_buffer(buf).value) & 0xFFFFFFFF


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    """fallocate(2) itself: EOPNOTSUPP when the filesystem lacks ``mode``."""
    types = (ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    fn = _libc.function("fallocate64", *types) or _libc.function("fallocate", *types)
    if fn(fd, mode, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class Statx(NamedTuple):
    mask: int
    nlink: int
    size: int
    btime_sec: int
    btime_nsec: int

    @property
    def has_btime(self) -> bool:
        return bool(self.mask & STATX_BTIME)


_STATX_SIZE = 256


def statx(fd: int, mask: int = STATX_BTIME) -> Statx:
    """statx(2) on the open ``fd`` (AT_EMPTY_PATH); ENOSYS before glibc 2.28."""
    fn = _libc.function(
        "statx", ctypes.c_int,
        ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p,
    )
    if fn is None:
        raise OSError(errno.ENOSYS, "statx is not in this C library")
    buf = ctypes.create_string_buffer(_STATX_SIZE)
    if fn(fd, b"", _AT_EMPTY_PATH | _AT_SYMLINK_NOFOLLOW, mask, buf) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    # struct statx: u32 mask @0, u32 nlink @16, u64 size @40,
    # struct statx_timestamp btime { s64 sec; u32 nsec; } @80.
    (got,) = struct.unpack_from("=I", buf.raw, 0)
    (nlink,) = struct.unpack_from("=I", buf.raw, 16)
    (size,) = struct.unpack_from("=Q", buf.raw, 40)
    sec, nsec = struct.unpack_from("=qI", buf.raw, 80)
    return Statx(int(got), int(nlink), int(size), int(sec), int(nsec))
