"""The pyfuse3 Operations: a passthrough over the backing directory that
consults the fault table on every forwarded operation.

Path based: each inode we hand to the kernel remembers the path it was last
looked up under, and rules match that path. Caching is the performance
lever: paths no rule targets get long entry/attribute timeouts and
FOPEN_KEEP_CACHE, targeted paths get zero timeouts and direct I/O so that
every syscall on them reaches the daemon (and a short read reaches the
caller instead of being zero-filled by the page cache).
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Callable, Sequence
from typing import NoReturn

import pyfuse3
import trio

from probe._linux import renameat2

from ._faults import ArmedRule, FaultTable
from ._trace import Trace

__all__ = ["FakeOps", "Node"]

ROOT = pyfuse3.ROOT_INODE


class Node:
    __slots__ = ("fds", "gen", "ino", "key", "lookups", "name", "parent", "path", "targeted",
                 "vanished")  # fmt: skip

    def __init__(self, ino: int, key: tuple[int, int], path: str, parent: int, name: str) -> None:
        self.ino = ino
        self.key = key
        self.path = path  # relative to the mount root; "." is the root
        self.parent = parent
        self.name = name
        self.lookups = 0
        self.gen = -1  # FaultTable.generation that ``targeted`` was computed for
        self.targeted = False
        self.fds: set[int] = set()
        #: attributes at the moment a vanish rule removed the path; see getattr
        self.vanished: os.stat_result | None = None


class _Handle:
    __slots__ = ("node", "pid")

    def __init__(self, node: Node, pid: int) -> None:
        self.node = node
        self.pid = pid  # FUSE read/write carry no caller; the opener stands in


class _Dir:
    __slots__ = ("entries", "fd", "node", "pid")

    def __init__(self, fd: int, node: Node, pid: int) -> None:
        self.fd = fd
        self.node = node
        self.pid = pid
        self.entries: list[tuple[str, os.stat_result]] | None = None


def _join(parent: str, name: str) -> str:
    return name if parent == "." else f"{parent}/{name}"


#: Flags of the caller's open that must not reach the backing open. O_DIRECT:
#: the kernel already honoured it on its side of FUSE (the caller's I/O
#: bypasses the page cache and arrives here as one request per call), and
#: the request buffer pyfuse3 hands to write() is an ordinary bytes object
#: at no particular alignment, so a backing fd opened O_DIRECT fails the
#: pwrite with EINVAL (ext4, XFS) or succeeds when the address happens to
#: be aligned -- an O_DIRECT answer decided by malloc, not by the rules.
_BACKING_DROP = os.O_NOCTTY | os.O_DIRECT


def _errno(err: OSError) -> int:
    return err.errno if err.errno else errno.EIO


class FakeOps(pyfuse3.Operations):
    # Without export support the kernel never looks up "." or "..".
    supports_dot_lookup = False
    # Writeback caching would delay and merge writes, so a write fault
    # would surface at some later fsync/close instead of at the write.
    enable_writeback_cache = False

    def __init__(
        self,
        backing: str,
        table: FaultTable,
        trace: Trace,
        cache_timeout: float = 60.0,
    ) -> None:
        super().__init__()
        self.root = os.path.abspath(backing)
        self.table = table
        self.trace = trace
        self.timeout = cache_timeout
        #: Called once the kernel's INIT is answered. Set by the daemon from
        #: inside trio.run, where the event it signals has to be created.
        self.on_init: Callable[[], None] | None = None
        st = os.lstat(self.root)
        root = Node(ROOT, (st.st_dev, st.st_ino), ".", ROOT, "")
        root.lookups = 1
        self.nodes: dict[int, Node] = {ROOT: root}
        self.by_key: dict[tuple[int, int], int] = {root.key: ROOT}
        self._next_ino = ROOT + 1
        self.handles: dict[int, _Handle] = {}
        self.dirs: dict[int, _Dir] = {}
        self._next_dh = 1
        self._euid = os.geteuid()

    def init(self) -> None:
        if self.on_init is not None:
            self.on_init()

    # -- helpers -------------------------------------------------------------
    def bpath(self, path: str) -> str:
        return self.root if path == "." else f"{self.root}/{path}"

    def targeted(self, node: Node) -> bool:
        gen = self.table.generation
        if node.gen != gen:
            node.targeted = self.table.targets(node.path)
            node.gen = gen
        return node.targeted

    def _node(self, ino: int) -> Node:
        node = self.nodes.get(ino)
        if node is None:
            raise pyfuse3.FUSEError(errno.ESTALE)
        return node

    def _node_for(self, path: str, st: os.stat_result, parent: int, name: str) -> Node:
        key = (st.st_dev, st.st_ino)
        ino = self.by_key.get(key)
        if ino is not None:
            node = self.nodes[ino]
            if stat.S_IFMT(st.st_mode) == stat.S_IFMT(self._mode_of(node, st)):
                if node.path != path:
                    node.path, node.parent, node.name, node.gen = path, parent, name, -1
                return node
        ino = self._next_ino
        self._next_ino += 1
        node = Node(ino, key, path, parent, name)
        self.nodes[ino] = node
        self.by_key[key] = ino
        return node

    @staticmethod
    def _mode_of(node: Node, st: os.stat_result) -> int:
        # A recycled backing inode number with another file type is a new
        # file; handing the kernel the old node id would turn its inode bad.
        return node.vanished.st_mode if node.vanished is not None else st.st_mode

    def _detach(self, st: os.stat_result | None) -> None:
        """Forget the backing identity of a removed file.

        The backing filesystem may hand its inode number to the next file
        created; that file must get a fresh node id, not the old one that
        the kernel may still hold (open fd, cwd).
        """
        if st is None or (not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1):
            return
        self.by_key.pop((st.st_dev, st.st_ino), None)

    def entry(self, node: Node, st: os.stat_result) -> pyfuse3.EntryAttributes:
        e = pyfuse3.EntryAttributes()
        e.st_ino = node.ino
        e.generation = 0
        timeout = 0 if self.targeted(node) else self.timeout
        e.entry_timeout = timeout
        e.attr_timeout = timeout
        e.st_mode = st.st_mode
        e.st_nlink = st.st_nlink
        e.st_uid = st.st_uid
        e.st_gid = st.st_gid
        e.st_rdev = st.st_rdev
        e.st_size = st.st_size
        e.st_blksize = st.st_blksize
        e.st_blocks = st.st_blocks
        e.st_atime_ns = st.st_atime_ns
        e.st_mtime_ns = st.st_mtime_ns
        e.st_ctime_ns = st.st_ctime_ns
        return e

    async def pre_node(self, op: str, node: Node, pid: int) -> ArmedRule | None:
        # The hot path: a node no rule can match never consults the table,
        # however many rules are armed on other paths.
        if not self.table.has_op(op) or not self.targeted(node):
            return None
        return await self._apply(self.table.decide(op, node.path, None, pid), op, node.path, pid)

    async def pre(self, op: str, path: str, pid: int, path2: str | None = None) -> ArmedRule | None:
        """Apply the rule that fires before ``op``: stall, then maybe fail."""
        if not self.table.has_op(op):
            return None
        if not self.table.targets(path) and (path2 is None or not self.table.targets(path2)):
            return None
        return await self._apply(self.table.decide(op, path, path2, pid), op, path, pid)

    async def _apply(self, armed: ArmedRule | None, op: str, path: str,
                     pid: int) -> ArmedRule | None:
        if armed is None:
            return None
        rule = armed.rule
        if rule.delay:
            self.trace.delayed += 1
            await trio.sleep(rule.delay)
        if rule.errno is not None:
            self.trace.injected += 1
            self.trace.record(op, path, pid, rule.errno, armed.id)
            raise pyfuse3.FUSEError(rule.errno)
        return armed

    def fail(self, op: str, path: str, pid: int, err: OSError, armed: ArmedRule | None) -> NoReturn:
        number = _errno(err)
        self.trace.record(op, path, pid, number, armed.id if armed else None)
        raise pyfuse3.FUSEError(number) from None

    def done(self, op: str, path: str, pid: int, armed: ArmedRule | None,
             node: Node | None = None) -> None:
        rule_id = armed.id if armed is not None else None
        if self.table.has_op(op) and (
            self.targeted(node) if node is not None else self.table.targets(path)
        ):
            vanish = self.table.vanish_after(op, path, pid)
            if vanish is not None:
                rule_id = vanish.id
                self._vanish(path)
        self.trace.record(op, path, pid, None, rule_id)

    def _vanish(self, path: str) -> None:
        target = self.bpath(path)
        try:
            st = os.lstat(target)
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(target)
            else:
                os.unlink(target)
        except FileNotFoundError:
            return
        ino = self.by_key.get((st.st_dev, st.st_ino))
        if ino is not None:
            self.nodes[ino].vanished = st
        self._detach(st)
        self.trace.vanished += 1

    def _chown_new(self, target: str | int, st: os.stat_result, parent: Node,
                   ctx: pyfuse3.RequestContext) -> os.stat_result:
        """Give a new file the caller's ownership, as the backing fs would.

        The daemon creates everything as its own user; the kernel already
        checked the caller's permissions (default_permissions).
        """
        if self._euid != 0:
            return st
        gid = ctx.gid
        pst = os.lstat(self.bpath(parent.path))
        if pst.st_mode & stat.S_ISGID:
            gid = pst.st_gid  # a set-group-ID directory hands down its group
        if st.st_uid == ctx.uid and st.st_gid == gid:
            return st
        if isinstance(target, int):
            os.fchown(target, ctx.uid, gid)
        else:
            os.chown(target, ctx.uid, gid, follow_symlinks=False)
        # chown clears set-user/group-ID bits even for root; put them back.
        if st.st_mode & (stat.S_ISUID | stat.S_ISGID) and not stat.S_ISLNK(st.st_mode):
            if isinstance(target, int):
                os.fchmod(target, stat.S_IMODE(st.st_mode))
            else:
                os.chmod(target, stat.S_IMODE(st.st_mode))
        return os.fstat(target) if isinstance(target, int) else os.lstat(target)

    def _stat(self, node: Node) -> os.stat_result:
        # An unlinked file that is still open has no path any more.
        for fd in node.fds:
            return os.fstat(fd)
        return os.lstat(self.bpath(node.path))

    # -- entries -------------------------------------------------------------
    async def lookup(self, parent_inode: int, name: bytes,
                     ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        parent = self._node(parent_inode)
        sname = os.fsdecode(name)
        path = _join(parent.path, sname)
        pid = ctx.pid
        armed = await self.pre("lookup", path, pid)
        try:
            st = os.lstat(self.bpath(path))
        except OSError as err:
            self.fail("lookup", path, pid, err, armed)
        node = self._node_for(path, st, parent_inode, sname)
        node.lookups += 1
        node.vanished = None
        e = self.entry(node, st)
        self.done("lookup", path, pid, armed, node)
        return e

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for ino, nlookup in inode_list:
            node = self.nodes.get(ino)
            if node is None or ino == ROOT:
                continue
            node.lookups -= nlookup
            if node.lookups <= 0 and not node.fds:
                del self.nodes[ino]
                if self.by_key.get(node.key) == ino:
                    del self.by_key[node.key]

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = self._node(inode)
        pid = ctx.pid
        armed = await self.pre_node("getattr", node, pid)
        try:
            st = self._stat(node)
        except FileNotFoundError as err:
            # A vanish rule removed the file right after the lookup that
            # the kernel is now completing with this GETATTR (stat() of a
            # zero-timeout entry sends both): answer as of that lookup, so
            # the caller's stat succeeds and the *next* syscall finds the
            # file gone -- the stat-then-open race being simulated.
            if node.vanished is None:
                self.fail("getattr", node.path, pid, err, armed)
            st = node.vanished
            node.vanished = None
        except OSError as err:
            self.fail("getattr", node.path, pid, err, armed)
        e = self.entry(node, st)
        self.done("getattr", node.path, pid, armed, node)
        return e

    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes,
                      fields: pyfuse3.SetattrFields, fh: int | None,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = self._node(inode)
        pid = ctx.pid
        armed = await self.pre_node("setattr", node, pid)
        target = fh if fh is not None else self._target(node)
        try:
            if fields.update_size:
                os.truncate(target, attr.st_size)
            if fields.update_mode:
                mode = stat.S_IMODE(attr.st_mode)
                if isinstance(target, int):
                    os.fchmod(target, mode)
                else:
                    os.chmod(target, mode)
            if fields.update_uid or fields.update_gid:
                uid = attr.st_uid if fields.update_uid else -1
                gid = attr.st_gid if fields.update_gid else -1
                if isinstance(target, int):
                    os.fchown(target, uid, gid)
                else:
                    os.chown(target, uid, gid, follow_symlinks=False)
            if fields.update_atime or fields.update_mtime:
                cur = os.fstat(target) if isinstance(target, int) else os.lstat(target)
                atime = attr.st_atime_ns if fields.update_atime else cur.st_atime_ns
                mtime = attr.st_mtime_ns if fields.update_mtime else cur.st_mtime_ns
                if isinstance(target, int):
                    os.utime(target, ns=(atime, mtime))
                else:
                    os.utime(target, ns=(atime, mtime), follow_symlinks=False)
            st = os.fstat(target) if isinstance(target, int) else os.lstat(target)
        except OSError as err:
            self.fail("setattr", node.path, pid, err, armed)
        e = self.entry(node, st)
        self.done("setattr", node.path, pid, armed, node)
        return e

    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        node = self._node(inode)
        armed = await self.pre_node("readlink", node, ctx.pid)
        try:
            target = os.readlink(os.fsencode(self.bpath(node.path)))
        except OSError as err:
            self.fail("readlink", node.path, ctx.pid, err, armed)
        self.done("readlink", node.path, ctx.pid, armed, node)
        return target

    async def _make(self, op: str, parent_inode: int, name: bytes,
                    ctx: pyfuse3.RequestContext,
                    make: Callable[[str], None]) -> pyfuse3.EntryAttributes:
        parent = self._node(parent_inode)
        sname = os.fsdecode(name)
        path = _join(parent.path, sname)
        armed = await self.pre(op, path, ctx.pid)
        target = self.bpath(path)
        try:
            make(target)
            st = self._chown_new(target, os.lstat(target), parent, ctx)
        except OSError as err:
            self.fail(op, path, ctx.pid, err, armed)
        node = self._node_for(path, st, parent_inode, sname)
        node.lookups += 1
        node.vanished = None
        e = self.entry(node, st)
        self.done(op, path, ctx.pid, armed, node)
        return e

    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return await self._make("mknod", parent_inode, name, ctx,
                                lambda p: os.mknod(p, mode, rdev))

    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return await self._make("mkdir", parent_inode, name, ctx, lambda p: os.mkdir(p, mode))

    async def symlink(self, parent_inode: int, name: bytes, target: bytes,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return await self._make("symlink", parent_inode, name, ctx,
                                lambda p: os.symlink(target, os.fsencode(p)))

    async def link(self, inode: int, new_parent_inode: int, new_name: bytes,
                   ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = self._node(inode)
        parent = self._node(new_parent_inode)
        sname = os.fsdecode(new_name)
        path = _join(parent.path, sname)
        armed = await self.pre("link", path, ctx.pid, node.path)
        target = self.bpath(path)
        try:
            os.link(self.bpath(node.path), target, follow_symlinks=False)
            st = os.lstat(target)
        except OSError as err:
            self.fail("link", path, ctx.pid, err, armed)
        # Same node, another name. Follow the newest: the common pattern is
        # link(tmp, final) then unlink(tmp) (git objects, lock files), after
        # which only the new name leads to the inode.
        node.path, node.parent, node.name, node.gen = path, new_parent_inode, sname, -1
        node.lookups += 1
        e = self.entry(node, st)
        self.done("link", path, ctx.pid, armed, node)
        return e

    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self._remove("unlink", parent_inode, name, ctx, os.unlink)

    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self._remove("rmdir", parent_inode, name, ctx, os.rmdir)

    async def _remove(self, op: str, parent_inode: int, name: bytes,
                      ctx: pyfuse3.RequestContext, remove: Callable[[str], None]) -> None:
        parent = self._node(parent_inode)
        path = _join(parent.path, os.fsdecode(name))
        armed = await self.pre(op, path, ctx.pid)
        target = self.bpath(path)
        try:
            st: os.stat_result | None = os.lstat(target)
        except OSError:
            st = None
        try:
            remove(target)
        except OSError as err:
            self.fail(op, path, ctx.pid, err, armed)
        self._detach(st)
        self.done(op, path, ctx.pid, armed)

    async def rename(  # noqa: PLR0917 -- pyfuse3's signature
        self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx: pyfuse3.RequestContext) -> None:
        old_parent = self._node(parent_inode_old)
        new_parent = self._node(parent_inode_new)
        old_name, new_name = os.fsdecode(name_old), os.fsdecode(name_new)
        old = _join(old_parent.path, old_name)
        new = _join(new_parent.path, new_name)
        armed = await self.pre("rename", old, ctx.pid, new)
        src, dst = self.bpath(old), self.bpath(new)
        try:
            dst_st: os.stat_result | None = os.lstat(dst)
        except OSError:
            dst_st = None
        try:
            src_st = os.lstat(src)
            if flags:
                renameat2(src, dst, flags)
            else:
                os.rename(src, dst)
        except OSError as err:
            self.fail("rename", old, ctx.pid, err, armed)
        moved = self.by_key.get((src_st.st_dev, src_st.st_ino))
        if flags & pyfuse3.RENAME_EXCHANGE:
            other = self.by_key.get((dst_st.st_dev, dst_st.st_ino)) if dst_st else None
            self._repath(moved, old, new, parent=parent_inode_new, name=new_name, tmp=True)
            self._repath(other, new, old, parent=parent_inode_old, name=old_name)
            self._finish_tmp()
        else:
            if dst_st is not None and (dst_st.st_dev, dst_st.st_ino) != (src_st.st_dev,
                                                                          src_st.st_ino):
                self._detach(dst_st)
            self._repath(moved, old, new, parent=parent_inode_new, name=new_name)
        self.done("rename", old, ctx.pid, armed)

    _TMP = "\x00"

    def _repath(self, ino: int | None, old: str, new: str, *, parent: int, name: str,
                tmp: bool = False) -> None:
        """Move a node (and, for a directory, everything known below it)."""
        prefix = old + "/"
        mark = self._TMP if tmp else ""
        for node in self.nodes.values():
            if node.ino == ino and node.path == old:
                node.path, node.parent, node.name, node.gen = mark + new, parent, name, -1
            elif node.path.startswith(prefix):
                node.path, node.gen = mark + new + node.path[len(old):], -1

    def _finish_tmp(self) -> None:
        for node in self.nodes.values():
            if node.path.startswith(self._TMP):
                node.path = node.path[1:]

    # -- files ---------------------------------------------------------------
    def _handle(self, fh: int) -> _Handle:
        h = self.handles.get(fh)
        if h is None:
            # Never let a stray handle raise out of a handler: an exception
            # escaping pyfuse3's loop ends the daemon and the connection.
            raise pyfuse3.FUSEError(errno.EBADF)
        return h

    def _file_info(self, fd: int, node: Node, pid: int) -> pyfuse3.FileInfo:
        node.fds.add(fd)
        self.handles[fd] = _Handle(node, pid)
        if self.targeted(node):
            return pyfuse3.FileInfo(fh=fd, direct_io=True, keep_cache=False)
        return pyfuse3.FileInfo(fh=fd, keep_cache=True)

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        node = self._node(inode)
        pid = ctx.pid
        armed = await self.pre_node("open", node, pid)
        try:
            fd = os.open(self.bpath(node.path), flags & ~_BACKING_DROP)
        except OSError as err:
            self.fail("open", node.path, pid, err, armed)
        fi = self._file_info(fd, node, pid)
        self.done("open", node.path, pid, armed, node)
        return fi

    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext) -> tuple[pyfuse3.FileInfo,
                                                           pyfuse3.EntryAttributes]:
        parent = self._node(parent_inode)
        sname = os.fsdecode(name)
        path = _join(parent.path, sname)
        pid = ctx.pid
        armed = await self.pre("create", path, pid)
        try:
            fd = os.open(self.bpath(path), (flags | os.O_CREAT) & ~_BACKING_DROP, mode)
        except OSError as err:
            self.fail("create", path, pid, err, armed)
        try:
            st = self._chown_new(fd, os.fstat(fd), parent, ctx)
        except OSError as err:
            os.close(fd)
            self.fail("create", path, pid, err, armed)
        node = self._node_for(path, st, parent_inode, sname)
        node.lookups += 1
        node.vanished = None
        fi = self._file_info(fd, node, pid)
        e = self.entry(node, st)
        self.done("create", path, pid, armed, node)
        return fi, e

    async def read(self, fh: int, off: int, size: int) -> bytes:
        h = self._handle(fh)
        path = h.node.path
        armed = await self.pre_node("read", h.node, h.pid)
        if armed is not None and armed.rule.short is not None and size > armed.rule.short:
            size = armed.rule.short
            self.trace.shortened += 1
        try:
            data = os.pread(fh, size, off)
        except OSError as err:
            self.fail("read", path, h.pid, err, armed)
        self.done("read", path, h.pid, armed, h.node)
        return data

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        h = self._handle(fh)
        path = h.node.path
        armed = await self.pre_node("write", h.node, h.pid)
        if armed is not None and armed.rule.short is not None and len(buf) > armed.rule.short:
            buf = buf[: armed.rule.short]
            self.trace.shortened += 1
        try:
            n = os.pwrite(fh, buf, off)
        except OSError as err:
            self.fail("write", path, h.pid, err, armed)
        self.done("write", path, h.pid, armed, h.node)
        return n

    async def flush(self, fh: int) -> None:
        h = self._handle(fh)
        armed = await self.pre_node("flush", h.node, h.pid)
        self.done("flush", h.node.path, h.pid, armed, h.node)

    async def release(self, fh: int) -> None:
        h = self.handles.pop(fh, None)
        if h is None:
            return
        h.node.fds.discard(fh)
        armed = await self.pre_node("release", h.node, h.pid)
        os.close(fh)
        self.done("release", h.node.path, h.pid, armed, h.node)

    async def fsync(self, fh: int, datasync: bool) -> None:
        h = self._handle(fh)
        armed = await self.pre_node("fsync", h.node, h.pid)
        try:
            if datasync:
                os.fdatasync(fh)
            else:
                os.fsync(fh)
        except OSError as err:
            self.fail("fsync", h.node.path, h.pid, err, armed)
        self.done("fsync", h.node.path, h.pid, armed, h.node)

    # -- directories -----------------------------------------------------------
    def _dir(self, fh: int) -> _Dir:
        d = self.dirs.get(fh)
        if d is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        return d

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        node = self._node(inode)
        armed = await self.pre_node("opendir", node, ctx.pid)
        try:
            fd = os.open(self.bpath(node.path), os.O_RDONLY | os.O_DIRECTORY)
        except OSError as err:
            self.fail("opendir", node.path, ctx.pid, err, armed)
        dh = self._next_dh
        self._next_dh += 1
        self.dirs[dh] = _Dir(fd, node, ctx.pid)
        self.done("opendir", node.path, ctx.pid, armed, node)
        return dh

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        d = self._dir(fh)
        node = d.node
        armed = await self.pre_node("readdir", node, d.pid)
        if start_id == 0 or d.entries is None:
            # One snapshot per pass, so the offsets handed to the kernel stay
            # valid while the directory changes underneath.
            try:
                entries = []
                with os.scandir(self.bpath(node.path)) as it:
                    for de in it:
                        try:
                            entries.append((de.name, de.stat(follow_symlinks=False)))
                        except FileNotFoundError:
                            continue
            except OSError as err:
                self.fail("readdir", node.path, d.pid, err, armed)
            d.entries = entries
        for i in range(start_id, len(d.entries)):
            name, st = d.entries[i]
            path = _join(node.path, name)
            child = self._node_for(path, st, node.ino, name)
            # READDIRPLUS: each entry the kernel accepts counts as a lookup.
            if not pyfuse3.readdir_reply(token, os.fsencode(name), self.entry(child, st), i + 1):
                if child.lookups == 0 and not child.fds:
                    self.nodes.pop(child.ino, None)
                    if self.by_key.get(child.key) == child.ino:
                        del self.by_key[child.key]
                break
            child.lookups += 1
        self.done("readdir", node.path, d.pid, armed, node)

    async def releasedir(self, fh: int) -> None:
        d = self.dirs.pop(fh, None)
        if d is None:
            return
        os.close(d.fd)
        self.trace.record("releasedir", d.node.path, d.pid, None, None)

    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        d = self._dir(fh)
        armed = await self.pre_node("fsyncdir", d.node, d.pid)
        try:
            os.fsync(d.fd)
        except OSError as err:
            self.fail("fsyncdir", d.node.path, d.pid, err, armed)
        self.done("fsyncdir", d.node.path, d.pid, armed, d.node)

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        armed = await self.pre("statfs", ".", ctx.pid)
        try:
            sv = os.statvfs(self.root)
        except OSError as err:
            self.fail("statfs", ".", ctx.pid, err, armed)
        out = pyfuse3.StatvfsData()
        for attr in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files",
                     "f_ffree", "f_favail", "f_namemax"):
            setattr(out, attr, getattr(sv, attr))
        self.done("statfs", ".", ctx.pid, armed)
        return out

    # -- extended attributes ---------------------------------------------------
    def _target(self, node: Node) -> str | int:
        # An open fd still reaches a file whose path was unlinked or renamed
        # behind the kernel's back (a vanish rule, another process).
        for fd in node.fds:
            return fd
        return self.bpath(node.path)

    async def setxattr(self, inode: int, name: bytes, value: bytes,
                       ctx: pyfuse3.RequestContext) -> None:
        node = self._node(inode)
        armed = await self.pre_node("setxattr", node, ctx.pid)
        target = self._target(node)
        try:
            if isinstance(target, int):
                os.setxattr(target, name, value)
            else:
                os.setxattr(target, name, value, follow_symlinks=False)
        except OSError as err:
            self.fail("setxattr", node.path, ctx.pid, err, armed)
        self.done("setxattr", node.path, ctx.pid, armed, node)

    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        node = self._node(inode)
        armed = await self.pre_node("getxattr", node, ctx.pid)
        target = self._target(node)
        try:
            if isinstance(target, int):
                value = os.getxattr(target, name)
            else:
                value = os.getxattr(target, name, follow_symlinks=False)
        except OSError as err:
            self.fail("getxattr", node.path, ctx.pid, err, armed)
        self.done("getxattr", node.path, ctx.pid, armed, node)
        return value

    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> Sequence[bytes]:
        node = self._node(inode)
        armed = await self.pre_node("listxattr", node, ctx.pid)
        target = self._target(node)
        try:
            if isinstance(target, int):
                names = os.listxattr(target)
            else:
                names = os.listxattr(target, follow_symlinks=False)
        except OSError as err:
            self.fail("listxattr", node.path, ctx.pid, err, armed)
        self.done("listxattr", node.path, ctx.pid, armed, node)
        return [os.fsencode(n) for n in names]

    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        node = self._node(inode)
        armed = await self.pre_node("removexattr", node, ctx.pid)
        target = self._target(node)
        try:
            if isinstance(target, int):
                os.removexattr(target, name)
            else:
                os.removexattr(target, name, follow_symlinks=False)
        except OSError as err:
            self.fail("removexattr", node.path, ctx.pid, err, armed)
        self.done("removexattr", node.path, ctx.pid, armed, node)
