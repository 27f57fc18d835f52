"""Open files: open, create, read, write, flush, fsync, release.

A node's file is opened through its O_PATH descriptor's magic link, so it is
always the inode the kernel looked up, never whatever a name leads to now;
a symlink node is refused (the kernel follows symlinks itself and never
opens one through FUSE). New files are created by name inside the parent's
descriptor with O_EXCL|O_NOFOLLOW, under the caller's fsuid/fsgid, so a
planted symlink or file cannot redirect them or be handed out.
"""

from __future__ import annotations

import errno
import os
import stat

import pyfuse3

from ._base import Base, Handle, name_of
from ._creds import Caller
from ._nodes import Node, proc
from ._privs import NOTHING, Privs

#: Flags of the caller's open that must not reach the backing open.
#: O_DIRECT: the kernel already honoured it on its side of FUSE, and the
#: request buffer pyfuse3 hands to write() is at no particular alignment, so
#: a backing fd opened O_DIRECT fails the pwrite with EINVAL or succeeds as
#: malloc happens to align it. O_CREAT/O_EXCL: a reopen creates nothing.
#: O_NOFOLLOW: the magic link must be followed to reach the inode (it ends
#: exactly there; symlink nodes are refused before).
_REOPEN_DROP = os.O_NOCTTY | os.O_DIRECT | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
_CREATE_DROP = os.O_NOCTTY | os.O_DIRECT
#: O_EXCL also means no symlink is followed at the final name; O_NOFOLLOW
#: says so twice.
_CREATE_ADD = os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class FileOps(Base):
    def _file_info(self, fd: int, node: Node, caller: Caller, privs: Privs) -> pyfuse3.FileInfo:
        # Direct I/O for every file a rule could match: no page cache, no
        # readahead, so each read/write syscall is a request fakefs answers.
        direct = self.gate.targeted(node)
        node.opens += 1
        self.handles[fd] = Handle(fd, node, caller, privs)
        if direct:
            return pyfuse3.FileInfo(fh=fd, direct_io=True, keep_cache=False)
        return pyfuse3.FileInfo(fh=fd, keep_cache=True)

    def _opener_privs(self, fd: int, caller: Caller, flags: int) -> Privs:
        # Needed only where the data can change: a handle that can write
        # (the kernel refuses a write to a read-only descriptor before FUSE
        # is asked), an open that truncates.
        if flags & os.O_ACCMODE == os.O_RDONLY and not flags & os.O_TRUNC:
            return NOTHING
        return self.privs.at_open(fd, caller)

    def _handle(self, fh: int) -> Handle:
        h = self.handles.get(fh)
        if h is None:
            # Never let a stray handle raise out of a handler: an exception
            # escaping pyfuse3's loop ends the daemon and the connection.
            raise pyfuse3.FUSEError(errno.EBADF)
        return h

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        node = self.nodes.get(inode)
        async with self.gate("open", ctx, node):
            if node.mode == stat.S_IFLNK:
                raise OSError(errno.ELOOP, "symlink")
            if node.gone:
                raise OSError(errno.ENOENT, "vanished")
            fd = os.open(proc(node.fd), (flags & ~_REOPEN_DROP) | os.O_CLOEXEC)
            try:
                privs = self._opener_privs(fd, ctx, flags)
                if flags & os.O_TRUNC:
                    # The kernel sends the truncation inside OPEN
                    # (atomic_o_trunc) and never sends the set-ID kill it
                    # computed for it; root's O_TRUNC keeps the bits.
                    self.privs.drop(fd, node.ino, privs)
            except OSError:
                os.close(fd)
                raise
            return self._file_info(fd, node, ctx, privs)

    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext) -> tuple[pyfuse3.FileInfo,
                                                           pyfuse3.EntryAttributes]:
        parent = self.nodes.get(parent_inode)
        sname = name_of(name)
        path = self.nodes.child_path(parent, sname)
        async with self.gate("create", ctx, path=path) as g:
            # O_EXCL always: the kernel sends CREATE only for a name its
            # LOOKUP found absent, so anything there now was put there in the
            # backing directory since. Opened as root (the backing-side check
            # passes as root: _creds), it would hand the caller a file the
            # kernel never checked their permissions on.
            pfd = parent.fd
            try:
                fd = self.creds.run(ctx.uid, ctx.gid, lambda: os.open(
                    sname, (flags & ~_CREATE_DROP) | _CREATE_ADD, mode, dir_fd=pfd))
            except FileExistsError:
                if flags & os.O_EXCL:
                    raise
                # The caller asked for "create or open". ESTALE makes the VFS
                # retry the open once with a fresh LOOKUP, which finds the
                # file and opens it through OPEN, with the kernel's own
                # permission check of the caller: the answer a local
                # filesystem would give.
                raise OSError(errno.ESTALE, "created meanwhile in the backing directory",
                              sname) from None
            try:
                privs = self._opener_privs(fd, ctx, flags)
                # The O_PATH handle of the very inode just opened, not of
                # whatever the name may lead to a moment later.
                node, st = self.new_node(parent, sname,
                                         os.open(proc(fd), os.O_PATH | os.O_CLOEXEC))
            except OSError:
                os.close(fd)
                raise
            g.node = node
            return self._file_info(fd, node, ctx, privs), self.entry(node, st)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        h = self._handle(fh)
        async with self.gate("read", h.caller, h.node, off=off, size=size) as g:
            armed = g.armed
            short = armed.rule.short if armed is not None else None
            data = os.pread(fh, size, off)
            if short is not None:
                # Read in full first: only bytes that were there can be cut
                # (a request at the file's end may hold fewer than short=).
                g.shortened(len(data) > short)
                data = data[:short]
            return data

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        h = self._handle(fh)
        async with self.gate("write", h.caller, h.node, off=off, size=len(buf)) as g:
            armed = g.armed
            short = armed.rule.short if armed is not None else None
            if short is not None:
                g.shortened(len(buf) > short)
                buf = buf[:short]
            # Before the data changes, as file_remove_privs() does: root's
            # pwrite keeps the set-ID bits, and on a direct-I/O file the
            # kernel leaves their removal to us (``_privs``).
            self.privs.drop(fh, h.node.ino, h.privs)
            return os.pwrite(fh, buf, off)

    async def flush(self, fh: int) -> None:
        h = self._handle(fh)
        async with self.gate("flush", h.caller, h.node):
            pass

    async def fsync(self, fh: int, datasync: bool) -> None:
        h = self._handle(fh)
        async with self.gate("fsync", h.caller, h.node):
            if datasync:
                os.fdatasync(fh)
            else:
                os.fsync(fh)

    async def release(self, fh: int) -> None:
        h = self.handles.pop(fh, None)
        if h is None:
            return
        node = h.node
        node.opens -= 1
        try:
            async with self.gate("release", h.caller, node):
                os.close(fh)
        finally:
            if node.opens == 0:
                # The bad ranges of read/write faults heal with the last
                # close, as a remapped sector would.
                self.gate.heal(node)
                self.nodes.release_if_unused(node)
