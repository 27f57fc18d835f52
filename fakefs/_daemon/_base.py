"""State and helpers shared by the handler groups (entries, files, dirs,
xattrs): the node table, the fault gate, the open handles, and the reply
attributes with the caching that makes fault injection truthful.

Caching is the performance lever: nodes no rule targets get long
entry/attribute timeouts and FOPEN_KEEP_CACHE; targeted ones get zero
timeouts and direct I/O, so every syscall on them reaches the daemon (and a
short read or a failed one reaches the caller instead of the page cache).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

import pyfuse3

from .._faults import FaultTable
from .._trace import Trace
from ._creds import Caller, Creds
from ._gate import Gate
from ._nodes import Node, NodeTable
from ._privs import Privileges, Privs

__all__ = ["ROOT", "Base", "Handle"]

ROOT = pyfuse3.ROOT_INODE


class Handle:
    """An open file: the backing descriptor and the node it belongs to."""

    __slots__ = ("caller", "fd", "node", "privs")

    def __init__(self, fd: int, node: Node, caller: Caller, privs: Privs) -> None:
        self.fd = fd
        self.node = node
        self.caller = caller  # FUSE read/write carry no caller; the opener stands in
        #: the opener's privileges, judged while it was blocked in open()
        #: (``Privileges.at_open``): what the set-ID rule applies to writes
        self.privs = privs


def name_of(name: bytes) -> str:
    # The kernel never sends these; a name that could climb out of a
    # directory is refused outright, whatever sent it.
    if not name or b"/" in name or b"\0" in name or name in (b".", b".."):
        raise pyfuse3.FUSEError(errno.EINVAL)
    return os.fsdecode(name)


class Base(pyfuse3.Operations):
    # Without export support the kernel never looks up "." or "..".
    supports_dot_lookup = False
    # Writeback caching would delay and merge writes, so a write fault
    # would surface at some later fsync/close instead of at the write.
    enable_writeback_cache = False

    def __init__(self, backing: str, table: FaultTable, trace: Trace,
                 cache_timeout: float = 60.0) -> None:
        super().__init__()
        self.table = table
        self.trace = trace
        self.timeout = cache_timeout
        self.nodes = NodeTable(ROOT, os.path.abspath(backing))
        #: new inodes are made, and vanish rules remove, under the caller's
        #: fsuid/fsgid (``_creds``)
        self.creds = Creds()
        self.gate = Gate(table, trace, self.nodes, self.creds)
        #: the rules that depend on the caller's capabilities (``_privs``)
        self.privs = Privileges()
        #: Called once the kernel's INIT is answered. Set by the daemon from
        #: inside trio.run, where the event it signals has to be created.
        self.on_init: Callable[[], None] | None = None
        self.handles: dict[int, Handle] = {}

    def init(self) -> None:
        if self.on_init is not None:
            self.on_init()

    def entry(self, node: Node, st: os.stat_result) -> pyfuse3.EntryAttributes:
        e = pyfuse3.EntryAttributes()
        e.st_ino = node.ino
        e.generation = 0
        timeout = 0 if self.gate.targeted(node) else self.timeout
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

    def stat(self, node: Node) -> os.stat_result:
        # fstat of the O_PATH descriptor: right even after the name was
        # unlinked or renamed behind the kernel's back.
        return os.fstat(node.fd)

    def new_node(self, parent: Node, name: str, fd: int) -> tuple[Node, os.stat_result]:
        """Adopt the O_PATH ``fd`` of a new or found entry as one lookup."""
        try:
            st = os.fstat(fd)
        except OSError:
            os.close(fd)
            raise
        node = self.nodes.adopt(parent, name, fd, st)
        node.lookups += 1
        return node, st
