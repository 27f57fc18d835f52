"""The daemon side of the control channel: a Unix socket speaking JSON lines.

One request per line, ``{"cmd": ..., ...}``; one reply per line,
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}``.
A reply is sent only once the change is in force -- for a new rule that
includes dropping every kernel cache entry that could answer a matching
call without asking the daemon.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from typing import Any

import pyfuse3
import trio

from .._faults import FaultTable, literal_prefix
from .._rules import FaultRule, RuleError, parse_rule
from .._trace import Trace
from ._nodes import Node
from ._ops import FakeOps

__all__ = ["ControlServer"]


class ControlServer:
    def __init__(
        self,
        ops: FakeOps,
        table: FaultTable,
        trace: Trace,
        info: dict[str, Any],
        shutdown: Callable[[], None],
    ) -> None:
        self.ops = ops
        self.table = table
        self.trace = trace
        self.info = info
        self.shutdown = shutdown

    async def serve(self, listener: trio.socket.SocketType) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                sock, _ = await listener.accept()
                nursery.start_soon(self._client, trio.SocketStream(sock))

    async def _client(self, stream: trio.SocketStream) -> None:
        buf = b""
        async with stream:
            try:
                async for chunk in stream:
                    buf += chunk
                    while b"\n" in buf:
                        line, buf = buf.split(b"\n", 1)
                        reply = await self._reply(line)
                        await stream.send_all(json.dumps(reply).encode() + b"\n")
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return

    async def _reply(self, line: bytes) -> dict[str, Any]:
        try:
            req = json.loads(line)
            if not isinstance(req, dict):
                raise ValueError("request must be a JSON object")
            return {"ok": True, "result": await self.dispatch(req)}
        except (RuleError, ValueError, KeyError, TypeError) as err:
            msg = str(err) if not isinstance(err, KeyError) else f"missing field {err}"
            return {"ok": False, "error": msg}

    async def dispatch(self, req: dict[str, Any]) -> Any:
        cmd = req.get("cmd")
        if cmd == "ping":
            return self.info
        if cmd == "add":
            rule = parse_rule(req["rule"])
            armed = self.table.add(rule)
            await self.invalidate([rule])
            return armed.as_dict()
        if cmd == "remove":
            gone = self.table.remove(int(req["id"]))
            if gone is None:
                raise ValueError(f"no fault rule with id {req['id']}")
            self.ops.gate.heal_rule(gone.id)
            return gone.as_dict()
        if cmd == "clear":
            self.ops.gate.heal_rule(None)
            return [a.as_dict() for a in self.table.clear()]
        if cmd == "list":
            return self.table.listing()
        if cmd == "trace":
            return self.trace.records()
        if cmd == "clear_trace":
            self.trace.clear()
            return None
        if cmd == "counters":
            counters = self.trace.counters()
            counters["rules"] = {str(a["id"]): a["hits"] for a in self.table.listing()}
            return counters
        if cmd == "shutdown":
            self.shutdown()
            return None
        raise ValueError(f"unknown command {cmd!r}")

    async def invalidate(self, rules: list[FaultRule]) -> None:
        """Drop the kernel's cached entries, attributes and pages for every
        inode a new rule could match.

        Those were handed out with long timeouts and FOPEN_KEEP_CACHE while
        no rule targeted them; from now on lookups of them return zero
        timeouts and opens direct I/O, but what the kernel already holds
        must go, or the next stat/read would be answered from the cache.
        Only the known names the rule can reach are visited: the one node
        of a literal path, the subtree below a wildcard's literal directory.
        """
        victims: list[tuple[int, int, bytes]] = []
        for rule in rules:
            for node in self._reachable(rule):
                if node.parent is not None:
                    victims.append((node.ino, node.parent.ino, os.fsencode(node.name)))
        if not victims:
            return

        def run() -> None:
            # In a worker thread: the kernel may need the daemon to answer a
            # pending request on the parent directory before it can drop the
            # entry, and the trio thread must stay free to answer it.
            for ino, parent, name in victims:
                # ENOENT: not in the dcache / inode cache, nothing to drop.
                with contextlib.suppress(OSError):
                    pyfuse3.invalidate_entry(parent, name)
                with contextlib.suppress(OSError):
                    pyfuse3.invalidate_inode(ino)

        await trio.to_thread.run_sync(run)

    def _reachable(self, rule: FaultRule) -> list[Node]:
        nodes = self.ops.nodes
        prefix = literal_prefix(rule.glob)
        if prefix is None:
            node = nodes.walk(rule.glob)
            return [node] if node is not None else []
        top = nodes.walk(prefix.rstrip("/") or ".")
        found: list[Node] = []
        stack = [top] if top is not None else []
        while stack:
            node = stack.pop()
            if rule.matches_path(nodes.path(node)):
                found.append(node)
            if node.children:
                stack.extend(node.children.values())
        return found
