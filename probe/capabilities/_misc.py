"""Files and I/O: O_TMPFILE, statx birth time, O_DIRECT, flock and fcntl
locks -- each confirmed by its effect."""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import struct

from .. import _linux
from ._context import (
    NOT_SUPPORTED_ERRNOS,
    ProbeContext,
    ProbeSpec,
    Trial,
    describe_errno,
    pread_all,
)
from ._model import Capability

__all__ = ["PROBES"]

_GROUP = "files & I/O"


def o_tmpfile(ctx: ProbeContext, t: Trial) -> Capability:
    try:
        fd = ctx.track(t.call("open('.', O_TMPFILE|O_RDWR)", os.open, ".",
                              os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600, dir_fd=ctx.dir_fd,
                              show=lambda _fd: "fd"))
    except OSError as err:
        # Kernels and filesystems without O_TMPFILE see only its O_DIRECTORY
        # half and answer EISDIR.
        return t.failed(err, "O_TMPFILE", NOT_SUPPORTED_ERRNOS | {errno.EISDIR})
    payload = f"tmpfile {ctx.token}\n".encode()
    os.write(fd, payload)
    st = os.fstat(fd)
    t.note(f"fstat(tmpfile) -> nlink {st.st_nlink}, size {st.st_size}")
    if st.st_nlink != 0:
        return t.unsupported(f"O_TMPFILE gave a file with {st.st_nlink} link(s), not an "
                             "anonymous one")
    if ctx.listdir():
        return t.unsupported("O_TMPFILE left a visible name in the directory")
    name = ctx.name("linked")
    try:
        t.call(f"linkat(/proc/self/fd/N, {name}, AT_SYMLINK_FOLLOW)", os.link,
               f"/proc/self/fd/{fd}", name, dst_dir_fd=ctx.dir_fd, follow_symlinks=True)
    except OSError as err:
        return t.supported(f"anonymous files work; linking one in failed with "
                           f"{describe_errno(err.errno)}")
    linked = ctx.open(name)
    if pread_all(linked, len(payload) + 1) != payload:
        return t.unsupported("the linked-in O_TMPFILE file lost its content")
    return t.supported()


def statx_btime(ctx: ProbeContext, t: Trial) -> Capability:
    name = ctx.name("btime")
    fd = ctx.create(name)
    try:
        sx = t.call(f"statx({name}, STATX_BTIME)", _linux.statx, fd, _linux.STATX_BTIME,
                    show=lambda s: f"mask {s.mask:#x}, btime {s.btime_sec}.{s.btime_nsec:09d}")
    except OSError as err:
        return t.failed(err, "statx")
    if not sx.has_btime:
        return t.unsupported("statx does not return STATX_BTIME for this filesystem")
    if sx.btime_sec <= 0:
        return t.unsupported(f"STATX_BTIME is set but the birth time is {sx.btime_sec}")
    return t.supported()


_DIRECT_BLOCK = 4096  # covers every logical block size up to 4 KiB


def o_direct(ctx: ProbeContext, t: Trial) -> Capability:
    name = ctx.name("direct")
    try:
        fd = ctx.track(t.call(f"open({name}, O_CREAT|O_RDWR|O_DIRECT)", os.open, name,
                              os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_DIRECT | os.O_NOFOLLOW
                              | os.O_CLOEXEC, 0o600, dir_fd=ctx.dir_fd, show=lambda _fd: "fd"))
    except OSError as err:
        return t.failed(err, "open O_DIRECT")
    # Page-aligned buffers from mmap: O_DIRECT refuses unaligned memory with
    # EINVAL, which must not be mistaken for the filesystem refusing it.
    out = mmap.mmap(-1, _DIRECT_BLOCK)
    back = mmap.mmap(-1, _DIRECT_BLOCK)
    try:
        out.write((f"direct {ctx.token}\n".encode() * _DIRECT_BLOCK)[:_DIRECT_BLOCK])
        try:
            t.call(f"pwrite({name}, {_DIRECT_BLOCK} aligned bytes)", os.pwrite, fd, out, 0,
                   show=lambda n: f"{n} bytes")
            t.call(f"preadv({name}, {_DIRECT_BLOCK} aligned bytes)", os.preadv, fd, [back], 0,
                   show=lambda n: f"{n} bytes")
        except OSError as err:
            # open() accepting O_DIRECT while every I/O fails is the lie
            # this probe exists to catch.
            return t.failed(err, "O_DIRECT I/O (the open itself succeeded)")
        if back[:] != out[:]:
            return t.unsupported("O_DIRECT I/O succeeded but read back different bytes")
    finally:
        out.close()
        back.close()
    return t.supported()


_LOCK_UNSUPPORTED = NOT_SUPPORTED_ERRNOS | {errno.ENOLCK}


def flock(ctx: ProbeContext, t: Trial) -> Capability:
    """Two descriptions of one file: the second exclusive lock must be refused."""
    name = ctx.name("flock")
    fd1 = ctx.create(name)
    fd2 = ctx.open(name, os.O_RDWR)
    try:
        t.call("flock(fd1, LOCK_EX|LOCK_NB)", fcntl.flock, fd1, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        return t.failed(err, "flock", _LOCK_UNSUPPORTED)
    try:
        t.call("flock(fd2, LOCK_EX|LOCK_NB)", fcntl.flock, fd2, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return t.supported()
        return t.failed(err, "flock (second description)", _LOCK_UNSUPPORTED)
    return t.unsupported("a second exclusive flock was granted: locks are not enforced")


def _flock_struct(kind: int, start: int = 0, length: int = 0) -> bytes:
    # struct flock { short l_type, l_whence; off_t l_start, l_len; pid_t l_pid; }
    # in native alignment; l_pid must be 0 for open-file-description locks.
    return struct.pack("@hhqqi4x", kind, os.SEEK_SET, start, length, 0)


def fcntl_lock(ctx: ProbeContext, t: Trial) -> Capability:
    """POSIX byte-range locks. Classic F_SETLK never conflicts within one
    process, so enforcement is checked with open-file-description locks,
    which conflict between two descriptions even in the same process."""
    name = ctx.name("posix")
    fd1 = ctx.create(name)
    fd2 = ctx.open(name, os.O_RDWR)
    try:
        t.call("fcntl(fd1, F_SETLK, F_WRLCK)", fcntl.fcntl, fd1, fcntl.F_SETLK,
               _flock_struct(fcntl.F_WRLCK), show=lambda _r: "ok")
        t.call("fcntl(fd1, F_SETLK, F_UNLCK)", fcntl.fcntl, fd1, fcntl.F_SETLK,
               _flock_struct(fcntl.F_UNLCK), show=lambda _r: "ok")
        t.call("fcntl(fd1, F_OFD_SETLK, F_WRLCK)", fcntl.fcntl, fd1, fcntl.F_OFD_SETLK,
               _flock_struct(fcntl.F_WRLCK), show=lambda _r: "ok")
    except OSError as err:
        return t.failed(err, "fcntl lock", _LOCK_UNSUPPORTED)
    try:
        t.call("fcntl(fd2, F_OFD_SETLK, F_WRLCK)", fcntl.fcntl, fd2, fcntl.F_OFD_SETLK,
               _flock_struct(fcntl.F_WRLCK), show=lambda _r: "ok")
    except OSError as err:
        if err.errno in (errno.EAGAIN, errno.EACCES):
            return t.supported()
        return t.failed(err, "fcntl lock (second description)", _LOCK_UNSUPPORTED)
    return t.unsupported("a conflicting F_OFD_SETLK write lock was granted: locks are not "
                         "enforced")


PROBES = (
    ProbeSpec("o_tmpfile", "O_TMPFILE", _GROUP, o_tmpfile, ("tmpfile",)),
    ProbeSpec("statx_btime", "statx birth time", _GROUP, statx_btime, ("btime", "birth_time")),
    ProbeSpec("o_direct", "O_DIRECT", _GROUP, o_direct, ("direct",)),
    ProbeSpec("flock", "flock", _GROUP, flock),
    ProbeSpec("fcntl_lock", "fcntl locks", _GROUP, fcntl_lock,
              ("posix_lock", "ofd_lock", "lockf")),
)
