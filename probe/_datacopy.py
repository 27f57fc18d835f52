"""copy_fd: the bytes of one descriptor into another, holes kept as holes.

The data half of every copy (``clone_or_copy``'s fallback and the
materializer's). Like GNU cp: a source that looks sparse (fewer blocks than
its size) is copied extent by extent with SEEK_DATA/SEEK_HOLE, and the
holes are left unwritten, so a 1 GiB sparse file stays a few blocks and a
50 GiB one fits on a 3 GB disk.
"""

from __future__ import annotations

import errno
import os

__all__ = ["copy_fd", "copy_whole", "looks_sparse"]

# copy_file_range answers these when it cannot serve this pair of files
# (cross-filesystem before 5.3, a filesystem without the op, a FUSE daemon
# without it, a seccomp profile without it: EPERM); the data can still be
# moved by read/write -- but only while nothing was copied yet, as cp does.
# ENOSPC, EDQUOT and EIO are deliberately absent: those are real failures,
# not "try another way".
_CFR_FALLBACK = frozenset(
    {
        errno.EXDEV,
        errno.ENOSYS,
        errno.EOPNOTSUPP,
        errno.ENOTSUP,
        errno.EINVAL,
        errno.EBADF,
        errno.EPERM,
        errno.ETXTBSY,
        errno.EFBIG,
    }
)
_CFR_CHUNK = 1 << 30
_RW_CHUNK = 1 << 20
# SEEK_DATA/SEEK_HOLE unsupported: copy everything (holes read as zeros).
_NO_SEEK_DATA = frozenset({errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS})


def looks_sparse(st: os.stat_result) -> bool:
    """cp's heuristic: fewer blocks than the size needs. Such a file must go
    through ``copy_fd``: one whole-file copy_file_range on ext4 writes its
    holes out as zeros."""
    return st.st_blocks * 512 < st.st_size and hasattr(os, "SEEK_DATA")


def copy_fd(src_fd: int, dst_fd: int, *, share: bool = True) -> int:
    """Copy from the current offset of ``src_fd`` to EOF, into ``dst_fd`` at
    its current offset; returns the bytes the copy spans (holes included).

    ``share=False`` is a physical copy: no copy_file_range, which on btrfs
    and XFS (and NFS) clones instead of copying -- what ``reflink="never"``
    promises not to do. Otherwise in-kernel copy_file_range first, then
    read/write. A copy_file_range answering 0 is never trusted as EOF
    (procfs, sysfs and some FUSE daemons say 0 for "no support"): the read
    loop has the last word, and it checks an early EOF against fstat once.
    """
    start = os.lseek(src_fd, 0, os.SEEK_CUR)
    # SEEK_DATA only when the file looks sparse: a dense one costs no extra
    # syscall.
    if not looks_sparse(os.fstat(src_fd)):
        return _copy_range(src_fd, dst_fd, None, share)
    return _copy_sparse(src_fd, dst_fd, start, share)


def copy_whole(src_fd: int, dst_fd: int, size: int, sparse: bool) -> int:
    """Copy the whole source behind ``src_fd`` (one descriptor shared by all
    of a batch's dests for it) into the new, empty ``dst_fd``; ``size`` and
    ``sparse`` are from the source's fstat. Returns the bytes copied.

    A file copied whole by one copy_file_range at an explicit offset costs
    one syscall where ``copy_fd`` (which reads from the current offset and
    confirms EOF) costs three with the rewind; any surprise -- a short copy,
    an error -- goes to ``copy_fd``, which owns the fallback and error rules.
    """
    if size == 0:
        # Empty -- or a file whose size says 0 while it has bytes (procfs,
        # sysfs, some FUSE daemons: a materialized /proc file came out
        # empty and "copied"). One read tells them apart, and costs only
        # the copies of files that claim to be empty (cp reads them too).
        if not os.pread(src_fd, 1, 0):
            return 0
        os.lseek(src_fd, 0, os.SEEK_SET)
        return copy_fd(src_fd, dst_fd)
    if sparse:
        # One whole-file copy_file_range writes the holes out as zeros on
        # ext4; copy_fd walks SEEK_DATA/SEEK_HOLE and keeps them.
        os.lseek(src_fd, 0, os.SEEK_SET)
        return copy_fd(src_fd, dst_fd)
    try:
        n = os.copy_file_range(src_fd, dst_fd, size, 0)
    except OSError:
        n = 0
    if n == size:
        return n
    os.lseek(src_fd, n, os.SEEK_SET)
    return n + copy_fd(src_fd, dst_fd)


def _copy_sparse(src_fd: int, dst_fd: int, start: int, share: bool) -> int:
    base = os.lseek(dst_fd, 0, os.SEEK_CUR)
    pos = start
    while True:
        try:
            data = os.lseek(src_fd, pos, os.SEEK_DATA)
        except OSError as err:
            if err.errno == errno.ENXIO:
                break  # only a hole is left (or EOF)
            if err.errno in _NO_SEEK_DATA and pos == start:
                os.lseek(src_fd, start, os.SEEK_SET)
                return _copy_range(src_fd, dst_fd, None, share)
            raise
        hole = os.lseek(src_fd, data, os.SEEK_HOLE)
        os.lseek(src_fd, data, os.SEEK_SET)
        # Seeking past the end of the dest leaves the gap unallocated: that
        # gap is the hole.
        os.lseek(dst_fd, base + data - start, os.SEEK_SET)
        n = _copy_range(src_fd, dst_fd, hole - data, share)
        pos = data + n
        if n < hole - data:
            break  # the source shrank under us: stop at its new end
    end = max(pos, os.fstat(src_fd).st_size)
    # A trailing hole has no data to write: the size says it.
    os.ftruncate(dst_fd, base + end - start)
    os.lseek(dst_fd, base + end - start, os.SEEK_SET)
    os.lseek(src_fd, end, os.SEEK_SET)
    return end - start


def _copy_range(src_fd: int, dst_fd: int, limit: int | None, share: bool) -> int:
    """Copy ``limit`` bytes (None: to EOF) from the current offsets."""
    copied = 0
    use_cfr = share and hasattr(os, "copy_file_range")
    while use_cfr and (limit is None or copied < limit):
        want = _CFR_CHUNK if limit is None else min(_CFR_CHUNK, limit - copied)
        try:
            n = os.copy_file_range(src_fd, dst_fd, want)
        except OSError as err:
            if copied or err.errno not in _CFR_FALLBACK:
                raise
            break
        if n == 0:
            break
        copied += n
    rechecked = False
    while limit is None or copied < limit:
        want = _RW_CHUNK if limit is None else min(_RW_CHUNK, limit - copied)
        chunk = os.read(src_fd, want)
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
    return copied


def _ends_early(fd: int) -> bool:
    """Does the file behind ``fd`` claim more bytes than we have read?"""
    return os.fstat(fd).st_size > os.lseek(fd, 0, os.SEEK_CUR)
