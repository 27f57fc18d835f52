"""Nodes: what the daemon remembers about every inode the kernel knows.

Each node holds an ``O_PATH`` descriptor of its backing inode, taken when
the kernel first looked the name up. Every later operation on the node
works through that descriptor (or the parent's, for names inside it), so it
reaches exactly the inode the kernel asked about: renaming, unlinking or
replacing names in the backing directory afterwards -- a hard link swapped
for a symlink to /etc/shadow, a directory swapped for a symlink to / --
cannot redirect it. The name and parent a node was last seen under are
data only: they make the path that rules match and the trace shows.

Holding the descriptor also pins the backing inode, so its number cannot be
recycled for a new file while the kernel still uses our node id.

Descriptors are bounded (``max_fds``, from the process's RLIMIT_NOFILE: an
``ls -l`` of 100,000 entries makes 100,000 nodes the kernel may keep for a
long time, and root here may not raise the limit past 20,000). Past the
bound the oldest idle nodes give theirs up; such a node is reopened by its
last name inside its parent's descriptor, O_NOFOLLOW, and accepted only if
it is still the same inode -- otherwise ESTALE, never another file. "The
same" is device, inode number, type and birth time: once a descriptor is
given up nothing pins the inode, and a file made after the old one was
deleted often gets its very number (ext4 hands the freed inode out again
at the next create in that directory). The birth time, read just before the
descriptor goes, tells the two apart where the filesystem keeps one (ext4,
XFS, btrfs, tmpfs). Nodes with open files or directories and the root keep
their descriptors.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

import pyfuse3

from probe._linux import statx

from .._faults import Fault

__all__ = ["Node", "NodeTable", "opath", "proc"]

_OPATH = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


def opath(dirfd: int, name: str) -> int:
    """An O_PATH descriptor of ``name`` inside ``dirfd``, never following a
    symlink (a symlink yields a descriptor of the link itself)."""
    return os.open(name, _OPATH, dir_fd=dirfd)


def _birth(fd: int) -> tuple[int, int] | None:
    """The inode's birth time, None where the filesystem keeps none."""
    try:
        st = statx(fd)
    except OSError:
        return None
    return (st.btime_sec, st.btime_nsec) if st.has_btime else None


def proc(fd: int) -> str:
    """The magic link that reopens or changes exactly the inode of ``fd``."""
    return f"/proc/self/fd/{fd}"


class Node:
    __slots__ = ("_epoch", "_fd", "_path", "_table", "bad", "birth", "children", "dentry",
                 "gen", "gone", "ino", "key", "lookups", "mode", "name", "opens", "parent",
                 "targeted", "tepoch")  # fmt: skip

    def __init__(self, table: NodeTable, ino: int, fd: int, st: os.stat_result, *,
                 parent: Node | None, name: str) -> None:
        self._table = table
        self.ino = ino
        self._fd = fd
        self.key = (st.st_dev, st.st_ino)
        self.mode = stat.S_IFMT(st.st_mode)
        self.parent = parent
        self.name = name
        self.lookups = 0
        self.opens = 0
        self.children: dict[str, Node] | None = {} if stat.S_ISDIR(st.st_mode) else None
        self.gen = -1  # FaultTable.generation ``targeted`` was computed for
        self.tepoch = -1  # ... and NodeTable.epoch (a parent directory moved)
        self.targeted = False
        self._path = ""
        self._epoch = -1
        #: the read/write faults whose byte ranges fail until the last close
        self.bad: list[Fault] = []
        #: FaultTable.generation when the kernel last took a dentry for the
        #: node's name (a lookup or creation answered, a READDIRPLUS entry);
        #: -1: it holds none we know of (see Gate.revalidates)
        self.dentry = -1
        #: a vanish rule removed its name: opening it now fails with ENOENT
        #: as it would a moment later on a real filesystem (attributes still
        #: answer, as of the lookup that just succeeded)
        self.gone = False
        #: birth time, read when the descriptor is given up (None: unknown)
        self.birth: tuple[int, int] | None = None

    @property
    def fd(self) -> int:
        """The O_PATH descriptor (reopened and verified if it was given up).

        Use it at once, never keep it across another node's creation: that
        may make this node give its descriptor up.
        """
        fd = self._fd
        return fd if fd >= 0 else self._table.reopen(self)

    @property
    def alive(self) -> bool:
        return self._fd != -2

    @property
    def is_dir(self) -> bool:
        return self.mode == stat.S_IFDIR


class NodeTable:
    """Node ids handed to the kernel, by id and by backing (dev, ino)."""

    def __init__(self, root_ino: int, backing: str, max_fds: int = 10_000) -> None:
        fd = os.open(backing, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self.root = Node(self, root_ino, fd, os.fstat(fd), parent=None, name="")
        self.max_fds = max(16, max_fds)
        #: nodes holding a descriptor, oldest first (the root is not here)
        self._holding: dict[int, Node] = {}
        self.root.lookups = 1
        self.nodes: dict[int, Node] = {root_ino: self.root}
        self.by_key: dict[tuple[int, int], Node] = {self.root.key: self.root}
        self._next = root_ino + 1
        #: bumped when a directory moves: every cached path below it is stale
        self.epoch = 0

    def get(self, ino: int) -> Node:
        node = self.nodes.get(ino)
        if node is None:
            raise pyfuse3.FUSEError(errno.ESTALE)
        return node

    def path(self, node: Node) -> str:
        """The path (relative to the mount root, "." for the root) the node
        was last seen under: data for rules, trace and messages only."""
        if node._epoch == self.epoch:
            return node._path
        parent = node.parent
        if parent is None:
            path = "."
        else:
            above = self.path(parent)
            path = node.name if above == "." else f"{above}/{node.name}"
        node._path, node._epoch = path, self.epoch
        return path

    def child_path(self, parent: Node, name: str) -> str:
        above = self.path(parent)
        return name if above == "." else f"{above}/{name}"

    def adopt(self, parent: Node, name: str, fd: int, st: os.stat_result) -> Node:
        """The node for the inode behind ``fd``, now known as ``parent/name``.

        Takes ownership of ``fd``: an inode we already know keeps its first
        descriptor (the same inode) and the new one is closed, or takes this
        one if it gave its own up.
        """
        node = self.by_key.get((st.st_dev, st.st_ino))
        if node is not None and node.mode == stat.S_IFMT(st.st_mode):
            if node._fd >= 0:
                # Held, so pinned: the same inode.
                os.close(fd)
            elif not self._same_birth(node, fd):
                # The number of a deleted inode, reused: the old node keeps
                # answering ESTALE until the kernel forgets it.
                del self.by_key[node.key]
                return self._new(parent, name, fd, st)
            else:
                node._fd = fd
                self._hold(node)
            node.gone = False
            self.place(node, parent, name)
            return node
        return self._new(parent, name, fd, st)

    def _new(self, parent: Node, name: str, fd: int, st: os.stat_result) -> Node:
        ino = self._next
        self._next += 1
        node = Node(self, ino, fd, st, parent=parent, name=name)
        self.nodes[ino] = node
        self.by_key[node.key] = node
        if parent.children is not None:
            parent.children[name] = node
        self._hold(node)
        return node

    def _hold(self, node: Node) -> None:
        holding = self._holding
        holding[node.ino] = node
        if len(holding) <= self.max_fds:
            return
        # Give up the oldest idle descriptors, a batch at a time so the scan
        # is paid once per many additions.
        keep = []
        for _ in range(max(1, self.max_fds // 8)):
            if len(holding) <= 1:
                break
            ino = next(iter(holding))
            old = holding.pop(ino)
            if old.opens > 0 or old is node:
                keep.append(old)
                continue
            old.birth = _birth(old._fd)
            with contextlib.suppress(OSError):
                os.close(old._fd)
            old._fd = -1
        for old in keep:
            holding[old.ino] = old

    def reopen(self, node: Node) -> int:
        parent = node.parent
        if node._fd == -2 or parent is None:
            raise pyfuse3.FUSEError(errno.ESTALE)
        try:
            fd = opath(parent.fd, node.name)
        except OSError:
            raise pyfuse3.FUSEError(errno.ESTALE) from None
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != node.key or stat.S_IFMT(st.st_mode) != node.mode \
                or not self._same_birth(node, fd):
            os.close(fd)
            raise pyfuse3.FUSEError(errno.ESTALE)
        node._fd = fd
        self._hold(node)
        return fd

    @staticmethod
    def _same_birth(node: Node, fd: int) -> bool:
        return node.birth is None or _birth(fd) == node.birth

    def place(self, node: Node, parent: Node, name: str) -> None:
        """Follow the newest name of a node (link, rename, a new lookup)."""
        if node.parent is parent and node.name == name:
            return
        self._drop_name(node)
        node.parent, node.name = parent, name
        node._epoch = -1
        node.gen = -1
        if node.children:
            self.epoch += 1
        if parent.children is not None:
            parent.children[name] = node

    def unlinked(self, parent: Node, name: str) -> None:
        if parent.children is not None:
            parent.children.pop(name, None)

    def exchanged(self, a: Node | None, b: Node | None, *, pa: Node, na: str, pb: Node,
                  nb: str) -> None:
        """RENAME_EXCHANGE: ``a`` (was pa/na) and ``b`` (was pb/nb) swap."""
        for node, parent, name in ((a, pb, nb), (b, pa, na)):
            if node is not None:
                node.parent, node.name, node._epoch, node.gen = parent, name, -1, -1
                if parent.children is not None:
                    parent.children[name] = node
        self.epoch += 1

    def forget(self, node: Node, count: int) -> None:
        node.lookups -= count
        self.release_if_unused(node)

    def release_if_unused(self, node: Node) -> None:
        if node.lookups > 0 or node.opens > 0 or node is self.root:
            return
        del self.nodes[node.ino]
        if self.by_key.get(node.key) is node:
            del self.by_key[node.key]
        self._drop_name(node)
        self._holding.pop(node.ino, None)
        if node._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(node._fd)
        node._fd = -2  # forgotten: never reopened

    def _drop_name(self, node: Node) -> None:
        parent = node.parent
        if parent is not None and parent.children is not None and \
                parent.children.get(node.name) is node:
            del parent.children[node.name]

    def walk(self, path: str) -> Node | None:
        """The known node at ``path`` (by the names we saw), if any."""
        node: Node | None = self.root
        if path == ".":
            return node
        for part in path.split("/"):
            if node is None or node.children is None:
                return None
            node = node.children.get(part)
        return node

    def close_all(self) -> None:
        for node in self.nodes.values():
            if node._fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(node._fd)
        self.nodes.clear()
        self.by_key.clear()
