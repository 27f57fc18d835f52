"""The fault gate: one ``async with`` around every forwarded operation.

::

    async with self.gate("open", ctx, node) as g:
        fd = ...           # the passthrough; an OSError here is the backing
                           # filesystem's answer and reaches the caller
        g.node = new_node  # (ops that make a node: what a vanish rule removes)

On entry the gate applies the rule that fires before the operation (stall,
then fail with its errno); on exit it records the outcome in the trace,
turns an OSError into the FUSE reply, and lets a vanish rule remove the
entry the operation just succeeded on, as its caller would (``_vanish``).

One-shot read and write faults (``nth=``, ``times=``) are made to *arrive*:
a failed request marks its byte range bad on the inode, and every later
request overlapping it fails the same way until the inode's last open
handle is closed (a bad sector that heals on close). The kernel folds a
failure after a partial transfer into a short count, and callers retry at
the failed offset (cat, dd, shutil's sendfile loop and its read() fallback,
readahead's synchronous re-read): the retry now fails as the first request
of its syscall, and so reaches the caller. Whether each failing request
reached the caller is checked in /proc (``_delivery``); one that did not is
counted as absorbed, one that could not be checked as unconfirmed.

Lookup faults are made to arrive too: a LOOKUP of a name the kernel holds
a dentry for is a revalidation, whose failure the caller never sees (see
``Gate.revalidates``); the fault is then carried to the next lookup of that
name, the kernel's own fresh one.

A fault is counted in its rule's ``hits`` once, when the first of its
failed requests reaches a caller (``_faults.Fault``); every failed request
is one trace record and one of the ``injected``, ``absorbed`` and
``unconfirmed`` counters -- but for the kernel's retry of a request inside
the syscall that already got the error, traced as ``delivered: "retry"``
and counted nowhere.
"""

from __future__ import annotations

import errno
from types import TracebackType

import pyfuse3
import trio

from .._faults import ArmedRule, Fault, FaultTable
from .._trace import Trace
from ._creds import Caller, Creds
from ._delivery import Syscall, delivered, flush_delivered, getxattr_delivered
from ._nodes import Node, NodeTable
from ._vanish import vanish

__all__ = ["Gate", "GateOp"]

_RANGED = frozenset({"read", "write"})
#: operations whose success leaves the kernel a dentry for the node's name
_ENTERS = frozenset({"lookup", "mknod", "mkdir", "symlink", "link", "create", "rename"})
_NO_SYSCALL: tuple[Node | None, Syscall | None, int, int] = (None, None, 0, 0)


class Gate:
    def __init__(self, table: FaultTable, trace: Trace, nodes: NodeTable, creds: Creds) -> None:
        self.table = table
        self.trace = trace
        self.nodes = nodes
        self.creds = creds
        #: the mount's id in mountinfo, once known: names our files in fdinfo
        self.mount_id = 0
        #: nodes carrying bad ranges, so removing a rule can heal them
        self.wounded: set[Node] = set()
        #: the node, the syscall and the byte range of the last read/write
        #: failure that reached a caller
        self.last_syscall = _NO_SYSCALL
        #: lookup faults a failed revalidation left for the next lookup of
        #: their path
        self.carried: dict[str, Fault] = {}

    def __call__(self, op: str, caller: Caller, node: Node | None = None, *,
                 path: str | None = None,
                 path2: str | None = None, off: int | None = None,
                 size: int | None = None) -> GateOp:
        return GateOp(self, op, caller, node, path=path, path2=path2, off=off, size=size)

    def targeted(self, node: Node) -> bool:
        gen, epoch = self.table.generation, self.nodes.epoch
        if node.gen != gen or node.tepoch != epoch:
            node.targeted = self.table.targets(self.nodes.path(node))
            node.gen, node.tepoch = gen, epoch
        return node.targeted

    def heal(self, node: Node, rule_id: int | None = None) -> None:
        keep = []
        for fault in node.bad:
            if rule_id is not None and fault.armed.id != rule_id:
                keep.append(fault)
            else:
                fault.drop()
        node.bad = keep
        if not node.bad:
            self.wounded.discard(node)
        if rule_id is None and self.last_syscall[0] is node:
            # Its last handle is closed: no syscall can still be retrying.
            self.last_syscall = _NO_SYSCALL

    def heal_rule(self, rule_id: int | None) -> None:
        for node in list(self.wounded):
            self.heal(node, rule_id)
        for path, fault in list(self.carried.items()):
            if rule_id is None or fault.armed.id == rule_id:
                del self.carried[path]
                fault.drop()

    def entered(self, node: Node) -> None:
        """The kernel now holds a dentry for ``node``'s name."""
        node.dentry = self.table.generation

    def revalidates(self, path: str, number: int) -> bool:
        """Is a failing LOOKUP of ``path`` the kernel revalidating a dentry
        it holds? (And forget that dentry: it is dropped either way.)

        fs/fuse/dir.c fuse_dentry_revalidate(): a cached name whose entry
        timeout ran out (targeted names get 0) is revalidated with a LOOKUP;
        any error but ENOMEM (and EINTR, refused for lookup) only makes it
        answer "invalid", and the VFS drops the dentry and looks the name up
        afresh (lookup_slow -> fuse_lookup), a second LOOKUP whose error is
        the one the caller gets. ENOMEM is returned to the caller as it is,
        and the dentry stays.

        The daemon is not told which kind a LOOKUP is, so it keeps track of
        the dentries it handed out: a name answered since the last rule
        that can match it was added (adding one drops the kernel's cached
        entries, ``_control.invalidate``), whose node the kernel still holds
        a lookup count on, and no lookup of it failed since. Missed: a
        dentry pruned under memory pressure while its inode stays in use
        (the failure is then taken for a revalidation, and the next lookup
        fails too), and the older names of a hard link (a node follows its
        newest name only).
        """
        node = self.nodes.walk(path)
        if node is None or number == errno.ENOMEM:
            return False
        held = node.dentry >= 0 and node.lookups > 0 and \
            not self.table.dropped_since(path, node.dentry)
        node.dentry = -1
        return held

    def vanish(self, node: Node, tree: bool, caller: Caller) -> bool:
        """Remove ``node``'s name from the backing directory as ``caller``
        (``_vanish``); True if it went."""
        parent = node.parent
        if parent is None or not vanish(node, tree, self.creds, caller):
            return False
        self.nodes.unlinked(parent, node.name)
        node.gone = True
        self.trace.vanished += 1
        return True


class GateOp:
    __slots__ = ("armed", "caller", "gate", "node", "off", "op", "path", "path2", "pid", "size")

    def __init__(self, gate: Gate, op: str, caller: Caller, node: Node | None, *,
                 path: str | None, path2: str | None, off: int | None,
                 size: int | None) -> None:
        self.gate = gate
        self.op = op
        self.caller = caller
        self.pid = caller.pid
        self.node = node
        self.path = path if path is not None else gate.nodes.path(node) if node else "."
        self.path2 = path2
        self.off = off
        self.size = size
        self.armed: ArmedRule | None = None

    def _targeted(self) -> bool:
        gate = self.gate
        if self.node is not None and self.path2 is None:
            return gate.targeted(self.node)
        table = gate.table
        return table.targets(self.path) or (self.path2 is not None and table.targets(self.path2))

    async def __aenter__(self) -> GateOp:
        gate = self.gate
        if gate.carried and self.op == "lookup":
            # The same fault, not a new match of its rule.
            carried = gate.carried.pop(self.path, None)
            if carried is not None:
                self._fail_lookup(carried)
        # The hot path: an operation no rule names, or a path no rule can
        # match, never consults the rules, however many are armed.
        if gate.table.has_op(self.op) and self._targeted():
            armed = gate.table.decide(self.op, self.path, self.path2, self.pid)
            if armed is not None:
                self.armed = armed
                rule = armed.rule
                if rule.errno is None and rule.short is None:
                    armed.hits += 1  # a stall: the caller has it
                if rule.delay:
                    gate.trace.delayed += 1
                    await trio.sleep(rule.delay)
                if rule.errno is not None:
                    fault = Fault(armed, rule.errno, self.op)
                    if self.op == "lookup":
                        self._fail_lookup(fault)
                    # One-shot faults (nth=, times=) leave a bad range, so the
                    # kernel's or the caller's retry cannot make them vanish;
                    # p= faults stay independent draws per request.
                    self._fail(fault, fresh=rule.nth is not None or rule.times is not None)
        node = self.node
        if node is not None and node.bad and self.op in _RANGED and self.off is not None:
            end = self.off + max(self.size or 0, 1)
            for fault in node.bad:
                if fault.op == self.op and fault.start < end and self.off < fault.stop:
                    self._fail(fault, fresh=False)
        return self

    def shortened(self, cut: bool) -> None:
        """The short rule that fired cut the transfer (a hit: the caller's
        syscall returns fewer bytes), or had nothing to cut -- a request no
        longer than the short length, or one the file's end cut first -- and
        so did not fire at all: given back to ``times=``, and not traced as
        the rule's."""
        armed = self.armed
        if armed is None:
            return
        if cut:
            armed.hits += 1
            self.gate.trace.shortened += 1
        else:
            armed.spent -= 1
            self.armed = None

    def _fail_lookup(self, fault: Fault) -> None:
        gate = self.gate
        got = True
        if gate.revalidates(self.path, fault.errno):
            gate.carried[self.path] = fault
            got = False
        self._count(fault, got)
        raise pyfuse3.FUSEError(fault.errno)

    def _fail(self, fault: Fault, *, fresh: bool) -> None:
        gate = self.gate
        got: bool | None = True
        node = self.node
        if self.op in _RANGED and node is not None and self.off is not None:
            size = self.size or 0
            end = self.off + max(size, 1)
            if fresh:
                fault.start, fault.stop = self.off, end
                node.bad.append(fault)
                gate.wounded.add(node)
            got, syscall = delivered(self.pid, gate.mount_id, node.ino, self.op, off=self.off,
                                     size=size)
            seen_node, seen, seen_start, seen_end = gate.last_syscall
            if got and seen_node is node and syscall == seen and seen_start <= self.off and \
                    end <= seen_end and end - self.off < seen_end - seen_start:
                # The kernel's own retry inside the same syscall (one page
                # re-read after a failed readahead window): one error
                # reached the caller, and it is counted already.
                self._record(fault, "retry")
                raise pyfuse3.FUSEError(fault.errno)
            if got:
                gate.last_syscall = (node, syscall, self.off, end)
        elif self.op == "flush":
            # Only close() returns FLUSH's error; an exit or a dup2 over
            # the descriptor drops it.
            got = flush_delivered(self.pid)
        elif self.op == "getxattr":
            # The kernel's own capability check before a truncation or a
            # write drops it.
            got = getxattr_delivered(self.pid)
        self._count(fault, got)
        raise pyfuse3.FUSEError(fault.errno)

    def _count(self, fault: Fault, got: bool | None) -> None:
        trace = self.gate.trace
        if got is None:
            trace.unconfirmed += 1
        elif got:
            trace.injected += 1
        else:
            trace.absorbed += 1
        fault.failed(got)
        node = self.node
        # A fault neither in a bad range nor carried to the next lookup has
        # failed once and for all.
        carried = self.gate.carried.get(self.path) is fault
        if (node is None or fault not in node.bad) and not carried:
            fault.drop()
        self._record(fault, got)

    def _record(self, fault: Fault, got: bool | str | None) -> None:
        self.gate.trace.record(self.op, self.path, self.pid, fault.errno, fault.armed.id,
                               path2=self.path2, off=self.off, size=self.size, delivered=got)

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        gate = self.gate
        trace = gate.trace
        rule_id = self.armed.id if self.armed is not None else None
        if exc is None:
            node = self.node
            if node is not None:
                if self.op in _ENTERS:
                    gate.entered(node)
                if gate.table.has_op(self.op) and self._targeted():
                    vanish = gate.table.vanish_after(self.op, self.path, self.pid,
                                                     node.is_dir, node.parent is None)
                    if vanish is not None:
                        removed = gate.vanish(node, vanish.rule.tree, self.caller)
                        gate.table.vanished(vanish, removed)
                        if removed:
                            rule_id = vanish.id
            trace.record(self.op, self.path, self.pid, None, rule_id, path2=self.path2,
                         off=self.off, size=self.size)
            return
        number: int | None = None
        if isinstance(exc, OSError):
            number = exc.errno or errno.EIO
        elif isinstance(exc, pyfuse3.FUSEError):
            # Raised by the handler itself (ESTALE, ELOOP): the daemon's own
            # answer, traced like the backing filesystem's.
            number = exc.errno
        if number is None:
            return
        if self.op == "lookup":
            gate.revalidates(self.path, number)  # the kernel keeps no dentry after it
        trace.record(self.op, self.path, self.pid, number, rule_id, path2=self.path2,
                     off=self.off, size=self.size)
        if isinstance(exc, OSError):
            raise pyfuse3.FUSEError(number) from None
