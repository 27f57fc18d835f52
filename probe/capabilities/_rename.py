"""renameat2 flags: RENAME_NOREPLACE and RENAME_EXCHANGE.

Both are checked by their effect, not their return value: a filesystem
that ignored NOREPLACE would "succeed" by destroying the target, which is
exactly what a caller relying on it must know.
"""

from __future__ import annotations

import errno

from .. import _linux
from ._context import ProbeContext, ProbeSpec, Trial, pread_all
from ._model import Capability

__all__ = ["PROBES"]

_GROUP = "rename"


def _pair(ctx: ProbeContext) -> tuple[str, str]:
    a, b = ctx.name("a"), ctx.name("b")
    ctx.close(ctx.create(a, b"A"))
    ctx.close(ctx.create(b, b"B"))
    return a, b


def _content(ctx: ProbeContext, name: str) -> bytes:
    fd = ctx.open(name)
    try:
        return pread_all(fd, 16)
    finally:
        ctx.close(fd)


def noreplace(ctx: ProbeContext, t: Trial) -> Capability:
    a, b = _pair(ctx)
    try:
        t.call(f"renameat2({a}, {b}, RENAME_NOREPLACE)", _linux.renameat2, a, b,
               _linux.RENAME_NOREPLACE, src_dir_fd=ctx.dir_fd, dst_dir_fd=ctx.dir_fd)
    except OSError as err:
        if err.errno == errno.EEXIST:
            if (_content(ctx, a), _content(ctx, b)) != (b"A", b"B"):
                return t.unsupported("RENAME_NOREPLACE said EEXIST but changed the files")
            c = ctx.name("c")
            try:
                t.call(f"renameat2({a}, {c}, RENAME_NOREPLACE)", _linux.renameat2, a, c,
                       _linux.RENAME_NOREPLACE, src_dir_fd=ctx.dir_fd, dst_dir_fd=ctx.dir_fd)
            except OSError as err2:
                return t.failed(err2, "RENAME_NOREPLACE onto a free name")
            if _content(ctx, c) != b"A":
                return t.unsupported("RENAME_NOREPLACE onto a free name lost the content")
            return t.supported()
        return t.failed(err, "RENAME_NOREPLACE")
    t.note(f"{b} now holds {_content(ctx, b)!r}")
    return t.unsupported("RENAME_NOREPLACE succeeded onto an existing file: the flag was "
                         "ignored and the target destroyed")


def exchange(ctx: ProbeContext, t: Trial) -> Capability:
    a, b = _pair(ctx)
    try:
        t.call(f"renameat2({a}, {b}, RENAME_EXCHANGE)", _linux.renameat2, a, b,
               _linux.RENAME_EXCHANGE, src_dir_fd=ctx.dir_fd, dst_dir_fd=ctx.dir_fd)
    except OSError as err:
        return t.failed(err, "RENAME_EXCHANGE")
    got = (_content(ctx, a), _content(ctx, b))
    t.note(f"contents after exchange -> {got!r}")
    if got != (b"B", b"A"):
        return t.unsupported(f"RENAME_EXCHANGE succeeded but the files hold {got!r}")
    return t.supported()


PROBES = (
    ProbeSpec("rename_noreplace", "RENAME_NOREPLACE", _GROUP, noreplace,
              ("noreplace",)),
    ProbeSpec("rename_exchange", "RENAME_EXCHANGE", _GROUP, exchange, ("exchange",)),
)
