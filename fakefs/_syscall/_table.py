"""The syscall rule table: which armed rule answers a trapped call, the
counters, and the trace of what each call got.

Triggers mean what they mean on the FUSE side (``times``, ``nth``, ``p`` +
``seed``, ``pid``), plus ``src=`` for the source of a clone/copy call (or
the old name of a rename/link). A hit is counted only once the errno was
delivered to the caller's syscall; an answer the kernel refused because
the caller stopped waiting is recorded as absorbed, never as injected.
"""

from __future__ import annotations

import collections
import os
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .._faults import fires
from .._rules import FaultRule

__all__ = ["Armed", "Call", "RuleTable"]

#: trace records kept (oldest dropped first)
TRACE_LIMIT = 10_000


@dataclass(frozen=True)
class Call:
    """One trapped call as the supervisor saw it."""

    op: str
    #: destination (the file written; for fsync & co. the file) relative to
    #: the rule root, or None when it lies outside the root
    path: str | None
    src: str | None
    pid: int
    #: the calling process (thread group): pid= matches either id
    tgid: int


@dataclass(eq=False)
class Armed:
    id: int
    rule: FaultRule
    hits: int = 0
    matches: int = 0
    absorbed: int = 0
    seed: int | None = None
    rng: random.Random | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "rule": self.rule.text, "hits": self.hits,
                "matches": self.matches, "absorbed": self.absorbed, "seed": self.seed}


class RuleTable:
    """Shared between the thread that arms rules and the supervisor that
    consults them, hence the lock (the FUSE table lives on one trio thread
    and needs none)."""

    def __init__(self, rules: list[FaultRule] | None = None, root: str = "/") -> None:
        self._lock = threading.Lock()
        #: canonical (realpath) directory the globs are relative to
        self.root = root
        self._rules: list[Armed] = []
        self._needs = (False, False)
        self._next_id = 1
        self.trace: collections.deque[dict[str, Any]] = collections.deque(maxlen=TRACE_LIMIT)
        self.calls: collections.Counter[str] = collections.Counter()
        for rule in rules or ():
            self.add(rule)

    def add(self, rule: FaultRule) -> int:
        if not rule.syscall:
            raise ValueError(f"{rule.text!r} is a FUSE rule, not a syscall rule")
        seed, rng = rule.seed, None
        if rule.p is not None:
            if seed is None:
                seed = int.from_bytes(os.urandom(4), "little")
            rng = random.Random(seed)  # noqa: S311 -- a replayable schedule, not a secret
        with self._lock:
            armed = Armed(self._next_id, rule, seed=seed, rng=rng)
            self._next_id += 1
            self._rules = [*self._rules, armed]
            self._renew()
        return armed.id

    def clear(self) -> None:
        with self._lock:
            self._rules = []
            self._renew()

    def reset_observations(self) -> None:
        with self._lock:
            self.trace.clear()
            self.calls.clear()

    def has_rules(self) -> bool:
        return bool(self._rules)  # one list read: atomic under the GIL

    def needs_source(self) -> bool:
        return self._needs[0]

    def needs_tgid(self) -> bool:
        return self._needs[1]

    def _renew(self) -> None:
        # Asked on every trapped call, so answered once per change of the
        # rules: (a src= rule exists, a pid= rule exists).
        self._needs = (any(a.rule.src is not None for a in self._rules),
                       any(a.rule.pid is not None for a in self._rules))

    def decide(self, call: Call) -> Armed | None:
        """The rule that fires for ``call`` (its hit already counted)."""
        with self._lock:
            self.calls[call.op] += 1
            if call.path is None:
                return None  # outside the root: never matches
            for armed in self._rules:
                if self._eligible(armed, call):
                    return armed
        return None

    @staticmethod
    def _eligible(armed: Armed, call: Call) -> bool:
        rule = armed.rule
        if call.op not in rule.ops or not rule.matches_path(call.path or ""):
            return False
        if rule.pid is not None and rule.pid not in (call.pid, call.tgid):
            return False
        if not rule.matches_source(call.src):
            return False
        return fires(armed)

    def undeliver(self, entry: dict[str, Any], armed: Armed | None) -> None:
        """The answer recorded as delivered did not reach the caller."""
        with self._lock:
            entry["delivered"] = False
            if armed is not None:
                armed.hits -= 1
                armed.absorbed += 1

    def record(self, call: Call, armed: Armed | None, delivered: bool) -> dict[str, Any]:
        """Trace the answer; a fault the caller never got is absorbed.

        Recorded *before* the answer is sent (then corrected by
        ``undeliver``): once SEND returns, the caller may already have
        left its ``syscall_faults`` block and read the trace."""
        with self._lock:
            if armed is not None and not delivered:
                armed.hits -= 1
                armed.absorbed += 1
            # The FUSE trace's keys, plus the layer: one JSON-lines stream
            # can hold both. "continued": the real call ran (its own result
            # is the kernel's, not ours to know).
            fired = armed is not None and armed.rule.errno is not None
            entry: dict[str, Any] = {
                "time": time.time(), "layer": "syscall", "op": call.op, "path": call.path,
                "src": call.src, "pid": call.pid, "tgid": call.tgid,
                "result": armed.rule.errno_name if fired and armed else "continued",
                "errno": armed.rule.errno if fired and armed else None,
                "rule": armed.id if armed is not None else None,
                "delivered": delivered,
            }
            self.trace.append(entry)
            return entry

    def listing(self) -> list[dict[str, Any]]:
        with self._lock:
            return [a.as_dict() for a in self._rules]

    def counters(self) -> dict[str, Any]:
        with self._lock:
            return {
                "syscalls": dict(self.calls),
                "syscall_rules": [a.as_dict() for a in self._rules],
            }
