"""Directories and the filesystem: opendir, readdir (streamed), releasedir,
fsyncdir, statfs, and the extended attributes.

readdir streams: each READDIRPLUS continues one backing ``scandir`` where the
last stopped, so a 100,000-entry directory is never held in memory, and
every entry is looked up by O_PATH inside the directory's own descriptor.
``.`` and ``..`` come first, as the backing filesystem lists them; the kernel
takes no lookup reference for them, so neither do we.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator, Sequence

import pyfuse3

from .._faults import FaultTable
from .._trace import Trace
from ._base import Base
from ._creds import Caller
from ._nodes import Node, opath, proc

_DOTS = 2


class _Dir:
    __slots__ = ("caller", "fd", "it", "node", "pending", "pos")

    def __init__(self, fd: int, node: Node, caller: Caller) -> None:
        self.fd = fd
        self.node = node
        self.caller = caller  # readdir carries no caller; the opener stands in
        self.it: Iterator[os.DirEntry[str]] | None = None
        #: offset of the next entry to hand out (1, 2: the dots)
        self.pos = 0
        #: an entry the kernel had no room for, handed out next time
        self.pending: str | None = None

    def restart(self) -> None:
        self.close()
        os.lseek(self.fd, 0, os.SEEK_SET)
        self.it = os.scandir(self.fd)
        self.pos = 0
        self.pending = None

    def next_name(self) -> str | None:
        if self.pending is not None:
            name, self.pending = self.pending, None
            return name
        assert self.it is not None
        entry = next(self.it, None)
        return None if entry is None else entry.name

    def close(self) -> None:
        it = self.it
        if it is not None and hasattr(it, "close"):
            it.close()
        self.it = None


class DirOps(Base):
    def __init__(self, backing: str, table: FaultTable, trace: Trace,
                 cache_timeout: float = 60.0) -> None:
        super().__init__(backing, table, trace, cache_timeout)
        self.dirs: dict[int, _Dir] = {}
        self._next_dh = 1

    def _dir(self, fh: int) -> _Dir:
        d = self.dirs.get(fh)
        if d is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        return d

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        node = self.nodes.get(inode)
        async with self.gate("opendir", ctx, node):
            if node.gone:
                raise OSError(errno.ENOENT, "vanished")
            fd = os.open(proc(node.fd), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            dh = self._next_dh
            self._next_dh += 1
            self.dirs[dh] = _Dir(fd, node, ctx)
            node.opens += 1
            return dh

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        d = self._dir(fh)
        node = d.node
        async with self.gate("readdir", d.caller, node):
            if d.it is None or start_id != d.pos:
                d.restart()
                # seekdir()/rewinddir(): replay up to the offset asked for.
                while d.pos < start_id and (d.pos < _DOTS or d.next_name() is not None):
                    d.pos += 1
            while d.pos < _DOTS:
                dot = node if d.pos == 0 else (node.parent or node)
                name = b"." if d.pos == 0 else b".."
                st = os.fstat(dot.fd if dot.alive else node.fd)
                if not pyfuse3.readdir_reply(token, name, self.entry(dot, st), d.pos + 1):
                    return
                d.pos += 1
            while (name_s := d.next_name()) is not None:
                try:
                    child, st = self.new_node(node, name_s, opath(node.fd, name_s))
                except OSError:
                    continue  # removed since the directory was read
                # READDIRPLUS: each entry the kernel accepts counts as a
                # lookup; new_node counted one, so give it back if refused.
                if not pyfuse3.readdir_reply(token, os.fsencode(name_s),
                                             self.entry(child, st), d.pos + 1):
                    self.nodes.forget(child, 1)
                    d.pending = name_s
                    return
                # The kernel made (or refreshed) a dentry for it: a later
                # LOOKUP of the name is a revalidation.
                self.gate.entered(child)
                d.pos += 1

    async def releasedir(self, fh: int) -> None:
        d = self.dirs.pop(fh, None)
        if d is None:
            return
        d.close()
        os.close(d.fd)
        d.node.opens -= 1
        self.trace.record("releasedir", self.nodes.path(d.node), d.caller.pid, None, None)
        self.nodes.release_if_unused(d.node)

    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        d = self._dir(fh)
        async with self.gate("fsyncdir", d.caller, d.node):
            os.fsync(d.fd)

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        async with self.gate("statfs", ctx, path="."):
            sv = os.statvfs(self.nodes.root.fd)
            out = pyfuse3.StatvfsData()
            for attr in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files",
                         "f_ffree", "f_favail", "f_namemax"):
                setattr(out, attr, getattr(sv, attr))
            return out

    # -- extended attributes: through the magic link, so they reach exactly
    # -- this inode (O_PATH descriptors take no f*xattr calls)
    async def setxattr(self, inode: int, name: bytes, value: bytes,
                       ctx: pyfuse3.RequestContext) -> None:
        node = self.nodes.get(inode)
        async with self.gate("setxattr", ctx, node):
            os.setxattr(proc(node.fd), name, value)

    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        node = self.nodes.get(inode)
        async with self.gate("getxattr", ctx, node):
            return os.getxattr(proc(node.fd), name)

    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> Sequence[bytes]:
        node = self.nodes.get(inode)
        async with self.gate("listxattr", ctx, node):
            # Root's list holds trusted.* names the kernel shows only to
            # CAP_SYS_ADMIN (``_privs``).
            names = self.privs.listable(os.listxattr(proc(node.fd)), ctx)
            return [os.fsencode(n) for n in names]

    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        node = self.nodes.get(inode)
        async with self.gate("removexattr", ctx, node):
            os.removexattr(proc(node.fd), name)
