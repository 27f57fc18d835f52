"""Cloning capabilities: FICLONE, FICLONERANGE, FIDEDUPERANGE,
copy_file_range (and whether its copy shares blocks), FIEMAP.

A clone that "succeeds" is checked before it is believed: the destination
must have its own inode, the source's length and the source's bytes, and
"shares blocks" is only ever claimed from the FIEMAP shared flag.
"""

from __future__ import annotations

import os

from .. import _linux
from .._outcome import ReflinkOutcome
from .._reflink import reflink_at
from ._context import ProbeContext, ProbeSpec, Trial, describe_errno, pread_all
from ._data import GRANULE, pattern
from ._model import Capability

__all__ = ["PAIR_PROBES", "PROBES", "copy_file_range", "copy_shares_blocks", "reflink"]

_GROUP = "cloning"


def _verify_copy(
    t: Trial, what: str, src_fd: int, dst_fd: int, expected: bytes
) -> Capability | None:
    """None if ``dst_fd`` is an independent file holding exactly ``expected``;
    otherwise the lie, as an UNSUPPORTED answer."""
    s = os.fstat(src_fd)
    d = os.fstat(dst_fd)
    t.note(f"fstat(dest) -> size {d.st_size}, inode {d.st_ino} (source inode {s.st_ino})")
    if (d.st_dev, d.st_ino) == (s.st_dev, s.st_ino):
        return t.unsupported(f"{what} succeeded but the destination is the source's own inode")
    if d.st_size != len(expected):
        return t.unsupported(
            f"{what} succeeded but the destination holds {d.st_size} bytes, not {len(expected)}"
        )
    same = pread_all(dst_fd, len(expected)) == expected
    t.note(f"read(dest) == expected bytes -> {same}")
    if not same:
        return t.unsupported(f"{what} succeeded but the destination's bytes differ")
    return None


def _source(ctx: ProbeContext, data: bytes) -> tuple[str, int]:
    name = ctx.name("src")
    return name, ctx.create(name, data)


def reflink(src: ProbeContext, dst: ProbeContext, t: Trial) -> Capability:
    """A whole-file clone through the library's own ``reflink_at`` -- the
    raw clone, never clone-or-copy, so a copy can never pass for a clone."""
    data = pattern(2)
    s_name, s_fd = _source(src, data)
    d_name = dst.name("clone")
    try:
        res = t.call(
            f"FICLONE {d_name} <- {s_name} (reflink_at)",
            reflink_at, src.path_of(s_name), d_name, dst.dir_fd,
            show=lambda r: r.outcome.value + (f" {r.errno_name}" if r.errno else ""),
        )
    except OSError as err:
        # reflink_at already turned every "cannot clone" errno into
        # UNSUPPORTED; what is left (EIO, EACCES, ENOSPC) is no answer.
        return t.failed(err, "FICLONE", unsupported=())
    if res.outcome is ReflinkOutcome.UNSUPPORTED:
        return t.unsupported(f"FICLONE answered {describe_errno(res.errno)}", res.errno)
    if res.outcome is ReflinkOutcome.SOURCE_VANISHED:
        return t.could_not_tell("the probe's own source vanished during the clone "
                                "(something else is deleting files here)")
    d_fd = dst.open(d_name)
    return _verify_copy(t, "FICLONE", s_fd, d_fd, data) or t.supported()


def clone_range(ctx: ProbeContext, t: Trial) -> Capability:
    data = pattern(2, seed=1)
    s_name, s_fd = _source(ctx, data)
    d_fd = ctx.create(ctx.name("range"))
    try:
        t.call(f"FICLONERANGE(dest@0 <- {s_name}@{GRANULE}, {GRANULE} bytes)",
               _linux.ficlonerange, d_fd, s_fd, GRANULE, GRANULE, 0)
    except OSError as err:
        return t.failed(err, "FICLONERANGE")
    return _verify_copy(t, "FICLONERANGE", s_fd, d_fd, data[GRANULE:]) or t.supported()


def dedupe(ctx: ProbeContext, t: Trial) -> Capability:
    data = pattern(1, seed=2)
    _a_name, a_fd = _source(ctx, data)
    b_fd = ctx.create(ctx.name("twin"), data)
    try:
        n = t.call(f"FIDEDUPERANGE(src@0 -> twin@0, {GRANULE} bytes)",
                   _linux.fideduperange, a_fd, 0, GRANULE, b_fd, 0,
                   show=lambda n: f"{n} bytes deduplicated")
    except ValueError:
        t.note("FIDEDUPERANGE -> FILE_DEDUPE_RANGE_DIFFERS")
        return t.could_not_tell("the kernel says two identical ranges differ")
    except OSError as err:
        return t.failed(err, "FIDEDUPERANGE")
    if n != GRANULE:
        return t.unsupported(f"FIDEDUPERANGE succeeded but deduplicated {n} of {GRANULE} bytes")
    if pread_all(b_fd, GRANULE) != data:
        return t.unsupported("FIDEDUPERANGE changed the destination's bytes")
    return t.supported()


def _cfr(src: ProbeContext, dst: ProbeContext, t: Trial) -> tuple[Capability | None, int, int]:
    """copy_file_range a fresh file; (failure-or-None, dest fd, length)."""
    data = pattern(2, seed=3)
    s_name, s_fd = _source(src, data)
    d_name = dst.name("copy")
    d_fd = dst.create(d_name)
    total = 0
    calls = 0
    try:
        while total < len(data):
            n = os.copy_file_range(s_fd, d_fd, len(data) - total, total, total)
            calls += 1
            if n == 0:
                break
            total += n
    except OSError as err:
        t.note(f"copy_file_range({s_name} -> {d_name}) -> {describe_errno(err.errno)}")
        return t.failed(err, "copy_file_range"), d_fd, len(data)
    t.note(f"copy_file_range({s_name} -> {d_name}, {len(data)} bytes) -> "
           f"{total} bytes in {calls} call(s)")
    if total == 0:
        # The classic lie: procfs, sysfs and some FUSE daemons answer 0
        # ("EOF") instead of an error, and a caller trusting it ends up with
        # an empty file.
        return (t.unsupported(f"copy_file_range returned 0 bytes for a {len(data)}-byte file "
                              "(a silent empty copy)"), d_fd, len(data))
    if total != len(data):
        return (t.unsupported(f"copy_file_range stopped after {total} of {len(data)} bytes"),
                d_fd, len(data))
    return _verify_copy(t, "copy_file_range", s_fd, d_fd, data), d_fd, len(data)


def copy_file_range(src: ProbeContext, dst: ProbeContext, t: Trial) -> Capability:
    failure, _fd, _n = _cfr(src, dst, t)
    return failure or t.supported()


def copy_shares_blocks(src: ProbeContext, dst: ProbeContext, t: Trial) -> Capability:
    """Did copy_file_range clone rather than copy? Only FIEMAP may say yes."""
    failure, d_fd, length = _cfr(src, dst, t)
    if failure is not None:
        # No working copy, so nothing to share; the copy's own answer
        # (and its reason) stands for this one too.
        return failure
    try:
        shared = t.call("FIEMAP(copy) shared bytes", _linux.shared_bytes, d_fd)
    except OSError as err:
        return t.could_not_tell(
            f"FIEMAP failed with {describe_errno(err.errno)}, so block sharing cannot be verified",
            err.errno)
    if shared >= length:
        return t.supported(f"all {length} bytes of the copy share blocks with the source")
    if shared:
        return t.supported(f"{shared} of {length} bytes of the copy share blocks")
    return t.unsupported(f"copy_file_range made a full copy: 0 of {length} bytes shared")


def fiemap(ctx: ProbeContext, t: Trial) -> Capability:
    data = pattern(2, seed=4)
    _name, fd = _source(ctx, data)
    try:
        extents = t.call("FIEMAP(file, sync)", _linux.fiemap, fd,
                         show=lambda ex: f"{len(ex)} extent(s), {sum(e.length for e in ex)} bytes")
    except OSError as err:
        return t.failed(err, "FIEMAP")
    mapped = sum(e.length for e in extents)
    if mapped < len(data):
        return t.unsupported(f"FIEMAP succeeded but maps {mapped} of {len(data)} written bytes")
    return t.supported(value=len(extents))


def fiemap_shared(ctx: ProbeContext, t: Trial) -> Capability:
    """Is a clone *visible* as shared? The proof every other "shares blocks"
    answer rests on."""
    data = pattern(2, seed=5)
    _s, s_fd = _source(ctx, data)
    d_fd = ctx.create(ctx.name("clone"))
    try:
        t.call("FICLONE(dest, src)", _linux.ficlone, d_fd, s_fd)
    except OSError as err:
        return t.failed(err, "FICLONE (nothing to observe)")
    try:
        shared = t.call("FIEMAP(clone) shared bytes", _linux.shared_bytes, d_fd)
        src_shared = t.call("FIEMAP(source) shared bytes", _linux.shared_bytes, s_fd)
    except OSError as err:
        return t.failed(err, "FIEMAP")
    if shared >= len(data) and src_shared >= len(data):
        return t.supported()
    return t.unsupported(
        f"the clone succeeded but FIEMAP marks {shared} of {len(data)} bytes shared"
    )


PROBES = (
    ProbeSpec("reflink", "reflink (FICLONE)", _GROUP, lambda c, t: reflink(c, c, t),
              ("ficlone", "clone")),
    ProbeSpec("clone_range", "range clone", _GROUP, clone_range,
              ("ficlonerange",)),
    ProbeSpec("dedupe", "dedupe", _GROUP, dedupe, ("fideduperange",)),
    ProbeSpec("copy_file_range", "copy_file_range", _GROUP,
              lambda c, t: copy_file_range(c, c, t), ("cfr",)),
    ProbeSpec("copy_shares_blocks", "copy shares blocks", _GROUP,
              lambda c, t: copy_shares_blocks(c, c, t), ("cfr_shares",)),
    ProbeSpec("fiemap", "FIEMAP extent map", _GROUP, fiemap),
    ProbeSpec("fiemap_shared", "FIEMAP shows sharing", _GROUP, fiemap_shared,
              ("shared_extents",)),
)

PAIR_PROBES: tuple[tuple[str, str], ...] = (
    ("reflink", "reflink"),
    ("copy_file_range", "copy_file_range"),
    ("copy_shares_blocks", "copy shares blocks"),
)
