"""Space management: fallocate modes and sparse files.

Each answer is checked against what was allocated (st_blocks) or what
reads back, because a "success" here is cheap to fake: glibc's
posix_fallocate writes zeros when the filesystem cannot preallocate, and a
filesystem without holes quietly stores every zero of a "sparse" file.
"""

from __future__ import annotations

import errno
import os

from .. import _linux
from ._context import ProbeContext, ProbeSpec, Trial, pread_all
from ._data import GRANULE, pattern
from ._model import Capability

__all__ = ["PROBES"]

_GROUP = "space"
_PREALLOC = 4 * GRANULE


def _allocated(fd: int) -> int:
    return os.fstat(fd).st_blocks * 512


def fallocate(ctx: ProbeContext, t: Trial) -> Capability:
    name = ctx.name("prealloc")
    fd = ctx.create(name)
    try:
        t.call(f"fallocate({name}, 0, 0, {_PREALLOC})", _linux.fallocate, fd, 0, 0, _PREALLOC)
    except OSError as err:
        return t.failed(err, "fallocate")
    st = os.fstat(fd)
    size, allocated = st.st_size, st.st_blocks * 512
    t.note(f"fstat({name}) -> size {size}, allocated {allocated}")
    if size != _PREALLOC:
        return t.unsupported(f"fallocate succeeded but the size is {size}, not {_PREALLOC}")
    if allocated < _PREALLOC:
        return t.unsupported(
            f"fallocate succeeded but only {allocated} of {_PREALLOC} bytes are allocated"
        )
    return t.supported()


def _three_granules(ctx: ProbeContext, t: Trial, stem: str) -> tuple[str, int, bytes]:
    data = pattern(3, seed=6)
    name = ctx.name(stem)
    fd = ctx.create(name, data)
    # Flushed so the blocks are really allocated first: punching a hole in
    # still-delayed allocation would "free" blocks that never existed.
    t.call(f"fsync({name})", os.fsync, fd)
    return name, fd, data


def punch_hole(ctx: ProbeContext, t: Trial) -> Capability:
    name, fd, data = _three_granules(ctx, t, "punch")
    before = _allocated(fd)
    try:
        t.call(f"fallocate({name}, PUNCH_HOLE|KEEP_SIZE, {GRANULE}, {GRANULE})",
               _linux.fallocate, fd,
               _linux.FALLOC_FL_PUNCH_HOLE | _linux.FALLOC_FL_KEEP_SIZE, GRANULE, GRANULE)
    except OSError as err:
        return t.failed(err, "punch hole")
    after = _allocated(fd)
    size = os.fstat(fd).st_size
    middle = pread_all(fd, GRANULE, GRANULE)
    t.note(f"allocated {before} -> {after} bytes; size {size}; "
           f"middle reads as zeros -> {middle == bytes(GRANULE)}")
    if size != len(data):
        return t.unsupported(f"punch hole with KEEP_SIZE changed the size to {size}")
    if middle != bytes(GRANULE):
        return t.unsupported("punch hole succeeded but the range still holds data")
    if pread_all(fd, GRANULE, 2 * GRANULE) != data[2 * GRANULE:]:
        return t.unsupported("punch hole damaged data after the hole")
    if after >= before:
        return t.unsupported(f"punch hole succeeded but freed nothing ({before} -> {after} bytes)")
    return t.supported()


def zero_range(ctx: ProbeContext, t: Trial) -> Capability:
    name, fd, data = _three_granules(ctx, t, "zero")
    try:
        t.call(f"fallocate({name}, ZERO_RANGE|KEEP_SIZE, {GRANULE}, {GRANULE})",
               _linux.fallocate, fd,
               _linux.FALLOC_FL_ZERO_RANGE | _linux.FALLOC_FL_KEEP_SIZE, GRANULE, GRANULE)
    except OSError as err:
        return t.failed(err, "zero range")
    whole = pread_all(fd, len(data))
    t.note(f"read({name}) -> {len(whole)} bytes, middle zero -> "
           f"{whole[GRANULE:2 * GRANULE] == bytes(GRANULE)}")
    expected = data[:GRANULE] + bytes(GRANULE) + data[2 * GRANULE:]
    if whole != expected:
        return t.unsupported("zero range succeeded but the file does not read back as zeroed")
    return t.supported()


_SPARSE_GAP = 16 * GRANULE  # 1 MiB of hole before the data


def sparse(ctx: ProbeContext, t: Trial) -> Capability:
    """A 1 MiB hole then one granule of data: is the hole unallocated, and
    do SEEK_DATA/SEEK_HOLE report it?"""
    name = ctx.name("sparse")
    fd = ctx.create(name)
    data = pattern(1, seed=8)
    t.call(f"pwrite({name}, {len(data)} bytes @ {_SPARSE_GAP})", os.pwrite, fd, data, _SPARSE_GAP,
           show=lambda n: f"{n} bytes")
    t.call(f"fsync({name})", os.fsync, fd)
    size = _SPARSE_GAP + len(data)
    allocated = _allocated(fd)
    t.note(f"fstat({name}) -> size {os.fstat(fd).st_size}, allocated {allocated}")
    if allocated >= size:
        return t.unsupported(f"the sparse file allocated everything ({allocated} bytes for "
                             f"{len(data)} bytes of data)")
    try:
        hole = t.call("lseek(0, SEEK_HOLE)", os.lseek, fd, 0, os.SEEK_HOLE)
        data_at = t.call("lseek(0, SEEK_DATA)", os.lseek, fd, 0, os.SEEK_DATA)
    except OSError as err:
        if err.errno == errno.ENXIO:
            return t.unsupported("SEEK_DATA finds no data in a file that has some")
        return t.failed(err, "SEEK_HOLE/SEEK_DATA")
    if hole != 0 or data_at == 0:
        return t.unsupported(
            f"holes are not reported: SEEK_HOLE -> {hole}, SEEK_DATA -> {data_at} "
            f"(the hole is 0..{_SPARSE_GAP})"
        )
    return t.supported()


PROBES = (
    ProbeSpec("fallocate", "fallocate", _GROUP, fallocate, ("preallocate",)),
    ProbeSpec("punch_hole", "punch hole", _GROUP, punch_hole, ("punch",)),
    ProbeSpec("zero_range", "zero range", _GROUP, zero_range),
    ProbeSpec("sparse", "sparse + SEEK_HOLE", _GROUP, sparse,
              ("seek_hole", "holes")),
)
