"""Names and inodes: lookup, forget, attributes, and every operation that
makes, links, moves or removes a name -- each relative to the parent's
O_PATH descriptor, never by a path string."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Sequence

import pyfuse3

from probe._linux import renameat2

from ._base import Base, name_of
from ._nodes import Node, opath, proc
from ._privs import carries_privs


class EntryOps(Base):
    async def lookup(self, parent_inode: int, name: bytes,
                     ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        parent = self.nodes.get(parent_inode)
        sname = name_of(name)
        async with self.gate("lookup", ctx, path=self.nodes.child_path(parent, sname)) as g:
            node, st = self.new_node(parent, sname, opath(parent.fd, sname))
            g.node = node
            return self.entry(node, st)

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for ino, nlookup in inode_list:
            node = self.nodes.nodes.get(ino)
            if node is not None:
                self.nodes.forget(node, nlookup)

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = self.nodes.get(inode)
        async with self.gate("getattr", ctx, node):
            return self.entry(node, self.stat(node))

    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes,
                      fields: pyfuse3.SetattrFields, fh: int | None,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = self.nodes.get(inode)
        handle = self.handles.get(fh) if fh is not None else None
        # The magic link reaches exactly this inode (a symlink's own inode
        # too) and follows nothing beyond it.
        target = proc(node.fd)
        async with self.gate("setattr", ctx, node):
            mode = stat.S_IMODE(attr.st_mode) if fields.update_mode else None
            if fields.update_size:
                mode = self._truncated_mode(node, mode, ctx)
                if handle is not None:
                    os.ftruncate(handle.fd, attr.st_size)
                else:
                    os.truncate(target, attr.st_size)
            if mode is not None:
                os.chmod(target, mode)
            if fields.update_uid or fields.update_gid:
                uid = attr.st_uid if fields.update_uid else -1
                gid = attr.st_gid if fields.update_gid else -1
                os.chown(target, uid, gid)
            if fields.update_atime or fields.update_mtime:
                atime = attr.st_atime_ns if fields.update_atime else None
                mtime = attr.st_mtime_ns if fields.update_mtime else None
                if atime is None or mtime is None:
                    cur = os.fstat(node.fd)
                    atime = cur.st_atime_ns if atime is None else atime
                    mtime = cur.st_mtime_ns if mtime is None else mtime
                os.utime(target, ns=(atime, mtime))
            return self.entry(node, os.fstat(node.fd))

    def _truncated_mode(self, node: Node, mode: int | None,
                        ctx: pyfuse3.RequestContext) -> int | None:
        """The mode to set with a truncation: the set-ID rule of ``_privs``
        applied to the file's current mode (or to the mode the kernel sent
        along). The kernel converts the kill it computed for truncate() into
        a mode, but by the older rule (S_ISGID only with S_IXGRP), so a
        non-member truncating a file marked for mandatory locking would keep
        it; the caller is blocked in its syscall, its /proc is its own."""
        st = os.fstat(node.fd)
        if not carries_privs(st):
            return mode
        kill = self.privs.killed(st, self.privs.of(ctx))
        if not kill:
            return mode
        return (stat.S_IMODE(st.st_mode) if mode is None else mode) & ~kill

    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        node = self.nodes.get(inode)
        async with self.gate("readlink", ctx, node):
            return os.fsencode(os.readlink("", dir_fd=node.fd))

    async def _make(self, op: str, parent_inode: int, name: bytes,
                    ctx: pyfuse3.RequestContext, *, kind: int,
                    make: Callable[[str, int], None]) -> pyfuse3.EntryAttributes:
        parent = self.nodes.get(parent_inode)
        sname = name_of(name)
        async with self.gate(op, ctx, path=self.nodes.child_path(parent, sname)) as g:
            pfd = parent.fd
            # Made under the caller's ids: born with the right owner, nothing
            # chowned afterwards (``_creds``).
            self.creds.run(ctx.uid, ctx.gid, lambda: make(sname, pfd))
            # mkdirat/mknodat/symlinkat hand back no descriptor: the name is
            # opened again, and a user with write access to the backing
            # directory may have swapped it in between.
            fd = opath(pfd, sname)
            try:
                st = os.fstat(fd)
                if stat.S_IFMT(st.st_mode) != kind or st.st_uid != self.creds.owner(ctx.uid):
                    # Not what we made: never adopt (or touch) it. What we made
                    # is wherever the swap put it; nothing is removed by a name
                    # that leads elsewhere. ESTALE makes the kernel look the
                    # name up afresh and retry once (then EEXIST: it is taken).
                    raise OSError(errno.ESTALE, "the new name was swapped", sname)
            except OSError:
                os.close(fd)
                raise
            node, st = self.new_node(parent, sname, fd)
            g.node = node
            return self.entry(node, st)

    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return await self._make("mknod", parent_inode, name, ctx,
                                kind=stat.S_IFMT(mode) or stat.S_IFREG,
                                make=lambda n, d: os.mknod(n, mode, rdev, dir_fd=d))

    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return await self._make("mkdir", parent_inode, name, ctx, kind=stat.S_IFDIR,
                                make=lambda n, d: os.mkdir(n, mode, dir_fd=d))

    async def symlink(self, parent_inode: int, name: bytes, target: bytes,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return await self._make("symlink", parent_inode, name, ctx, kind=stat.S_IFLNK,
                                make=lambda n, d: os.symlink(target, n, dir_fd=d))

    async def link(self, inode: int, new_parent_inode: int, new_name: bytes,
                   ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = self.nodes.get(inode)
        parent = self.nodes.get(new_parent_inode)
        sname = name_of(new_name)
        path = self.nodes.child_path(parent, sname)
        async with self.gate("link", ctx, path=path, path2=self.nodes.path(node)) as g:
            # linkat(AT_SYMLINK_FOLLOW) of the magic link links this very
            # inode, whatever its names are now.
            os.link(proc(node.fd), sname, dst_dir_fd=parent.fd, follow_symlinks=True)
            st = os.fstat(node.fd)
            # Same node, another name. Follow the newest: the common pattern
            # is link(tmp, final) then unlink(tmp) (git objects, lock files).
            self.nodes.place(node, parent, sname)
            node.lookups += 1
            g.node = node
            return self.entry(node, st)

    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self._remove("unlink", parent_inode, name, ctx, directory=False)

    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self._remove("rmdir", parent_inode, name, ctx, directory=True)

    async def _remove(self, op: str, parent_inode: int, name: bytes,
                      ctx: pyfuse3.RequestContext, *, directory: bool) -> None:
        parent = self.nodes.get(parent_inode)
        sname = name_of(name)
        async with self.gate(op, ctx, path=self.nodes.child_path(parent, sname)):
            if directory:
                os.rmdir(sname, dir_fd=parent.fd)
            else:
                os.unlink(sname, dir_fd=parent.fd)
            self.nodes.unlinked(parent, sname)

    async def rename(  # noqa: PLR0917 -- pyfuse3's signature
        self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
        name_new: bytes, flags: int, ctx: pyfuse3.RequestContext,
    ) -> None:
        old_parent = self.nodes.get(parent_inode_old)
        new_parent = self.nodes.get(parent_inode_new)
        old_name, new_name = name_of(name_old), name_of(name_new)
        old = self.nodes.child_path(old_parent, old_name)
        new = self.nodes.child_path(new_parent, new_name)
        async with self.gate("rename", ctx, path=old, path2=new) as g:
            moved = self._known(old_parent, old_name)
            other = self._known(new_parent, new_name)
            if flags:
                renameat2(old_name, new_name, flags, src_dir_fd=old_parent.fd,
                          dst_dir_fd=new_parent.fd)
            else:
                os.rename(old_name, new_name, src_dir_fd=old_parent.fd,
                          dst_dir_fd=new_parent.fd)
            if flags & pyfuse3.RENAME_EXCHANGE:
                self.nodes.exchanged(moved, other, pa=old_parent, na=old_name, pb=new_parent,
                                     nb=new_name)
            else:
                if other is not None:
                    self.nodes.unlinked(new_parent, new_name)
                if moved is not None:
                    self.nodes.place(moved, new_parent, new_name)
            g.node = moved

    def _known(self, parent: Node, name: str) -> Node | None:
        """The node now behind ``parent/name`` in the backing directory, if
        the kernel knows it (only to keep the names we show current)."""
        try:
            st = os.stat(name, dir_fd=parent.fd, follow_symlinks=False)
        except OSError:
            return None
        return self.nodes.by_key.get((st.st_dev, st.st_ino))
