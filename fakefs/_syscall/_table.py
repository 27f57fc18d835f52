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
import threading
import time
from typing import TYPE_CHECKING, Any, NamedTuple

from .._faults import fires, schedule
from .._rules import FaultRule, compile_glob

if TYPE_CHECKING:
    from random import Random

__all__ = ["Armed", "Call", "RuleTable"]

#: trace records kept (oldest dropped first)
TRACE_LIMIT = 10_000


class Call(NamedTuple):
    """One trapped call as the supervisor saw it (one per trapped call: a
    NamedTuple is the cheapest record to build)."""

    op: str
    #: destination (the file written; for fsync & co. the file) relative to
    #: the rule root, or None when it lies outside the root
    path: str | None
    src: str | None
    pid: int
    #: the calling process (thread group): pid= matches either id
    tgid: int


class Armed:
    """A rule in the table with its counters (see ``_faults.fires``)."""

    __slots__ = ("absorbed", "hits", "id", "match", "match_src", "matches", "rng", "rule",
                 "seed")

    def __init__(self, rule_id: int, rule: FaultRule, *, seed: int | None = None,
                 rng: Random | None = None) -> None:
        self.id = rule_id
        self.rule = rule
        self.hits = 0
        self.matches = 0
        self.absorbed = 0
        self.seed = seed
        self.rng = rng
        # Compiled once: the globs are matched on every trapped call.
        self.match = compile_glob(rule.glob).match
        self.match_src = None if rule.src is None else compile_glob(rule.src).match

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
        self._by_op: dict[str, tuple[Any, ...]] | None = {}
        self._next_id = 1
        #: [time, op, path, src, pid, tgid, armed, fired, delivered] per
        #: answer: lists, made into dicts only by records() (one per call)
        self.trace: collections.deque[list[Any]] = collections.deque(maxlen=TRACE_LIMIT)
        self.calls: collections.Counter[str] = collections.Counter()
        for rule in rules or ():
            self.add(rule)

    def add(self, rule: FaultRule) -> int:
        if not rule.syscall:
            raise ValueError(f"{rule.text!r} is a FUSE rule, not a syscall rule")
        seed, rng = schedule(rule)
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
        # What continue_unmatched() consults: each op's globs. Only when no
        # rule reads a source or a pid, so that the call it records is the
        # one decide() would have recorded.
        by_op: dict[str, list[Any]] = {}
        for armed in self._rules:
            for op in armed.rule.ops:
                by_op.setdefault(op, []).append(armed.match)
        self._by_op = None if any(self._needs) else {k: tuple(v) for k, v in by_op.items()}

    def continue_unmatched(self, op: str, path: str | None, pid: int) -> list[Any] | None:
        """The trace entry of ``op`` on ``path`` if no rule's op and glob
        match it (the call runs: counted and traced here), else None (the
        caller must decide() it). The supervisor's short way for calls
        whose file is one descriptor: most trapped calls match no rule, and
        each costs the traced program one round trip through us."""
        by_op = self._by_op
        if by_op is None:
            return None
        if path is not None:
            for match in by_op.get(op, ()):
                if match(path) is not None:
                    return None
        entry = [time.time(), op, path, None, pid, pid, None, False, True]
        with self._lock:
            self.calls[op] += 1
            self.trace.append(entry)
        return entry

    def decide(self, call: Call) -> Armed | None:
        """The rule that fires for ``call`` (its hit already counted)."""
        path = call.path
        with self._lock:
            self.calls[call.op] += 1
            if path is None:
                return None  # outside the root: never matches
            for armed in self._rules:
                rule = armed.rule
                if call.op not in rule.ops or armed.match(path) is None:
                    continue
                if rule.pid is not None and rule.pid not in (call.pid, call.tgid):
                    continue
                if armed.match_src is not None and (
                        call.src is None or armed.match_src(call.src) is None):
                    continue
                if fires(armed):
                    return armed
        return None

    def undeliver(self, entry: list[Any], armed: Armed | None) -> None:
        """The answer recorded as delivered did not reach the caller."""
        with self._lock:
            entry[-1] = False
            if armed is not None:
                armed.hits -= 1
                armed.absorbed += 1

    def record(self, call: Call, armed: Armed | None, delivered: bool) -> list[Any]:
        """Trace the answer; a fault the caller never got is absorbed.

        Recorded *before* the answer is sent (then corrected by
        ``undeliver``): once SEND returns, the caller may already have
        left its ``syscall_faults`` block and read the trace."""
        fired = armed is not None and armed.rule.errno is not None
        entry = [time.time(), call.op, call.path, call.src, call.pid, call.tgid, armed, fired,
                 delivered]
        with self._lock:
            if armed is not None and not delivered:
                armed.hits -= 1
                armed.absorbed += 1
            self.trace.append(entry)
        return entry

    def records(self) -> list[dict[str, Any]]:
        """The trace. The FUSE trace's keys, plus the layer: one JSON-lines
        stream can hold both. "continued": the real call ran (its own
        result is the kernel's, not ours to know)."""
        with self._lock:
            entries = list(self.trace)
        return [
            {"time": t, "layer": "syscall", "op": op, "path": path, "src": src, "pid": pid,
             "tgid": tgid, "result": armed.rule.errno_name if fired else "continued",
             "errno": armed.rule.errno if fired else None,
             "rule": armed.id if armed is not None else None, "delivered": delivered}
            for t, op, path, src, pid, tgid, armed, fired, delivered in entries
        ]

    def listing(self) -> list[dict[str, Any]]:
        with self._lock:
            return [a.as_dict() for a in self._rules]

    def counters(self) -> dict[str, Any]:
        with self._lock:
            return {
                "syscalls": dict(self.calls),
                "syscall_rules": [a.as_dict() for a in self._rules],
            }
