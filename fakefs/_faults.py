"""Armed rules: which rule fires for an operation, and the hit counters.

Pure Python (no FUSE), used by the daemon. Every decision happens on the
daemon's single trio thread, so the counters need no lock.

Rules are indexed so that a rule that cannot match an operation costs it
nothing: per operation, rules with a literal path sit in a dict keyed by
that path, and rules with wildcards in a dict keyed by the directory part
before their first wildcard (``data/*.tmp`` under ``data/``); a path looks
up itself and each of its directory prefixes, O(depth) whatever the number
of rules. Adding a rule compiles that rule alone.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any, Protocol

from ._rules import FaultRule, compile_glob

if TYPE_CHECKING:
    from random import Random


def schedule(rule: FaultRule) -> tuple[int | None, Random | None]:
    """(seed, generator) of a ``p=`` rule's replayable schedule; a seed is
    drawn (and reported, so the run can be replayed) when the rule gave
    none. No generator for a rule without ``p=``."""
    if rule.p is None:
        return rule.seed, None
    # Imported here: random costs ~2 ms of every `fakefs run`, and only a
    # p= rule needs it.
    import random

    seed = rule.seed if rule.seed is not None else int.from_bytes(os.urandom(4), "little")
    return seed, random.Random(seed)  # noqa: S311 -- a replayable schedule, not a secret


class Counted(Protocol):
    """What the trigger rules count on: an armed rule of either layer."""

    rule: FaultRule
    hits: int
    matches: int
    rng: Random | None


def triggered(armed: Counted, spent: int) -> bool:
    """The triggers (nth=, times=, p=) for an operation or call that already
    matched the rule's ops, glob and pid: does this one get the fault?
    ``spent``: the faults already counted against ``times=``. One rule for
    the FUSE daemon and the syscall layer."""
    rule = armed.rule
    armed.matches += 1
    if rule.nth is not None and armed.matches != rule.nth:
        return False
    if rule.times is not None and spent >= rule.times:
        return False
    # Draw only for calls that passed every other test, so the schedule
    # depends on the sequence of matching calls alone: same seed, same
    # calls, same failures.
    return not (armed.rng is not None and rule.p is not None and armed.rng.random() >= rule.p)


def fires(armed: Counted) -> bool:
    """``triggered``, counting the hit at once (the syscall layer, which
    takes it back with ``undeliver`` when the caller never got it)."""
    if not triggered(armed, armed.hits):
        return False
    armed.hits += 1
    return True


__all__ = ["ArmedRule", "Counted", "Fault", "FaultTable", "fires", "schedule", "triggered"]


class ArmedRule:
    """A rule in the FUSE table with its counters.

    A *fault* is one firing of the rule. Its failed requests -- the first,
    the replays of a read/write fault's bad range, a lookup fault carried
    to the kernel's fresh lookup -- are one fault: ``hits`` counts the
    faults at least one of whose failures reached a caller's syscall;
    ``absorbed`` and ``unconfirmed`` count failed requests that reached no
    caller, or whose caller could not be examined. ``times=N`` stops the
    rule once N of its faults reached (or may have reached) a caller or
    still wait to (a bad range not read again yet, a carried lookup): as on
    the syscall layer, N means N errors programs saw, so a fault that ends
    without reaching anybody (its range healed at the last close) is given
    back and the rule fires again. A stall is a hit at once, a short count
    once it cut a transfer (``GateOp.shortened``).
    """

    # A slotted class, not a dataclass: the syscall layer imports this
    # module for fires(), and `fakefs run` must not pay for dataclasses.
    __slots__ = ("absorbed", "added", "hits", "id", "matches", "regex", "rng", "rule", "seed",
                 "spent", "unconfirmed")

    def __init__(self, rule_id: int, rule: FaultRule, *, seed: int | None = None,
                 rng: Random | None = None,
                 regex: re.Pattern[str] | None = None) -> None:
        self.id = rule_id
        self.rule = rule
        self.hits = 0
        self.absorbed = 0
        self.unconfirmed = 0
        #: faults fired and not given back: what times= counts
        self.spent = 0
        #: operations that matched op, path and pid (whether or not it fired)
        self.matches = 0
        #: the seed actually used for p= (drawn at random when none was
        #: given, and reported, so an unlucky schedule can be replayed)
        self.seed = seed
        self.rng = rng
        #: the compiled glob, for rules with wildcards
        self.regex = regex
        #: FaultTable.generation once this rule was added
        self.added = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "rule": self.rule.text,
            "hits": self.hits,
            "absorbed": self.absorbed,
            "unconfirmed": self.unconfirmed,
            "matches": self.matches,
            "seed": self.seed,
        }


#: Fault.state: no failure reached a caller yet; one did; one may have
#: (unconfirmed); given back to times= (the fault ended unseen)
_PENDING, _ARRIVED, _MAYBE, _RETURNED = 0, 1, 2, 3


class Fault:
    """One firing of an errno rule, and the byte range it failed (read and
    write faults, whose range stays bad until the last close)."""

    __slots__ = ("armed", "errno", "op", "start", "state", "stop")

    def __init__(self, armed: ArmedRule, number: int, op: str) -> None:
        self.armed = armed
        self.errno = number
        self.op = op
        self.start = self.stop = 0
        self.state = _PENDING

    def failed(self, delivered: bool | None) -> None:
        """Count one failed request of this fault."""
        armed = self.armed
        if delivered is None:
            armed.unconfirmed += 1
            if self.state == _PENDING:
                self.state = _MAYBE
        elif delivered:
            if self.state != _ARRIVED:
                armed.hits += 1
            self.state = _ARRIVED
        else:
            armed.absorbed += 1

    def drop(self) -> None:
        """The fault can fail nothing more: if no failure of it reached a
        caller (or may have), ``times=`` gets it back."""
        if self.state == _PENDING:
            self.armed.spent -= 1
            self.state = _RETURNED


_WILD = frozenset("*?[")


def literal_prefix(glob: str) -> str | None:
    """None for a glob without wildcards, else the directory part (with its
    trailing slash, "" for none) before the first wildcard."""
    cut = next((i for i, ch in enumerate(glob) if ch in _WILD), None)
    if cut is None:
        return None
    return glob[: glob.rfind("/", 0, cut) + 1]


def dir_prefixes(path: str) -> list[str]:
    """"" and every "a/", "a/b/" ... prefix of ``path``."""
    out = [""]
    i = path.find("/")
    while i != -1:
        out.append(path[: i + 1])
        i = path.find("/", i + 1)
    return out


class _Index:
    """Rules by the paths they can match."""

    __slots__ = ("exact", "prefixed")

    def __init__(self) -> None:
        self.exact: dict[str, list[ArmedRule]] = {}
        self.prefixed: dict[str, list[ArmedRule]] = {}

    def add(self, armed: ArmedRule) -> None:
        prefix = literal_prefix(armed.rule.glob)
        if prefix is None:
            self.exact.setdefault(armed.rule.glob, []).append(armed)
        else:
            self.prefixed.setdefault(prefix, []).append(armed)

    def remove(self, armed: ArmedRule) -> None:
        prefix = literal_prefix(armed.rule.glob)
        where, key = (self.exact, armed.rule.glob) if prefix is None else (self.prefixed, prefix)
        bucket = where.get(key, [])
        if armed in bucket:
            bucket.remove(armed)
            if not bucket:
                del where[key]

    def __bool__(self) -> bool:
        return bool(self.exact or self.prefixed)

    def candidates(self, path: str) -> list[ArmedRule]:
        """The rules matching ``path``, oldest first."""
        found = list(self.exact.get(path, ()))
        if self.prefixed:
            for prefix in dir_prefixes(path):
                for armed in self.prefixed.get(prefix, ()):
                    if armed.regex is not None and armed.regex.match(path):
                        found.append(armed)
            if len(found) > 1:
                found.sort(key=lambda a: a.id)
        return found

    def any_match(self, path: str) -> bool:
        if path in self.exact:
            return True
        if self.prefixed:
            for prefix in dir_prefixes(path):
                for armed in self.prefixed.get(prefix, ()):
                    if armed.regex is not None and armed.regex.match(path):
                        return True
        return False


class FaultTable:
    def __init__(self) -> None:
        self._rules: dict[int, ArmedRule] = {}
        self._by_op: dict[str, _Index] = {}
        self._all = _Index()
        self._next_id = 1
        #: bumped on every change, so per-inode "is this path targeted"
        #: answers can be cached and dropped cheaply
        self.generation = 0
        #: the newest ``added`` among rules removed since
        self._removed_added = 0

    # -- changes -----------------------------------------------------------
    def add(self, rule: FaultRule) -> ArmedRule:
        seed, rng = schedule(rule)
        regex = None
        if literal_prefix(rule.glob) is not None:
            regex = compile_glob(rule.glob)
        armed = ArmedRule(self._next_id, rule, seed=seed, rng=rng, regex=regex)
        self._next_id += 1
        self._rules[armed.id] = armed
        for op in rule.ops:
            self._by_op.setdefault(op, _Index()).add(armed)
        self._all.add(armed)
        self.generation += 1
        armed.added = self.generation
        return armed

    def remove(self, rule_id: int) -> ArmedRule | None:
        armed = self._rules.pop(rule_id, None)
        if armed is None:
            return None
        for op in armed.rule.ops:
            index = self._by_op.get(op)
            if index is not None:
                index.remove(armed)
                if not index:
                    del self._by_op[op]
        self._all.remove(armed)
        self.generation += 1
        self._removed_added = max(self._removed_added, armed.added)
        return armed

    def clear(self) -> list[ArmedRule]:
        gone = list(self._rules.values())
        self._rules, self._by_op, self._all = {}, {}, _Index()
        self.generation += 1
        self._removed_added = max([self._removed_added, *(a.added for a in gone)])
        return gone

    # -- queries -----------------------------------------------------------
    def listing(self) -> list[dict[str, Any]]:
        return [a.as_dict() for a in self._rules.values()]

    def has_op(self, op: str) -> bool:
        return op in self._by_op

    def dropped_since(self, path: str, generation: int) -> bool:
        """Was a rule that can match ``path`` added after ``generation``?

        Adding a rule drops the kernel's cached entries of every known name
        it can match (``_control.invalidate``). A rule removed since counts
        whatever it matched: which names it reached is no longer known.
        """
        if self._removed_added > generation:
            return True
        return any(a.added > generation for a in self._all.candidates(path))

    def targets(self, path: str) -> bool:
        """Could any rule, for any operation, match ``path``?

        Such paths get no kernel caching: a cached entry, attribute or page
        would answer the caller without asking fakefs, hiding the fault.
        """
        return bool(self._all) and self._all.any_match(path)

    def decide(self, op: str, path: str, path2: str | None, pid: int) -> ArmedRule | None:
        """The rule that fires *before* ``op`` runs (errno, delay, short)."""
        index = self._by_op.get(op)
        if index is None:
            return None
        rules = index.candidates(path)
        if path2 is not None:
            rules = sorted({a.id: a for a in rules + index.candidates(path2)}.values(),
                           key=lambda a: a.id)
        for armed in rules:
            if armed.rule.vanish:
                continue
            if self._eligible(armed, pid):
                return armed
        return None

    def vanish_after(self, op: str, path: str, pid: int, is_dir: bool = False,
                     is_root: bool = False) -> ArmedRule | None:
        """The vanish rule that fires now that ``op`` on ``path`` succeeded.

        The mount root never vanishes, and a directory only for a rule that
        asked for it (``vanish-tree``): such a rule simply waits for a
        matching entry it may remove.
        """
        index = self._by_op.get(op)
        if index is None or is_root:
            return None
        for armed in index.candidates(path):
            rule = armed.rule
            if not rule.vanish or armed.spent or (is_dir and not rule.tree):
                continue
            if self._eligible(armed, pid):
                return armed  # counted by vanished(), once the gate knows
        return None

    @staticmethod
    def vanished(armed: ArmedRule, removed: bool) -> None:
        """The outcome of a vanish ``vanish_after`` fired. A hit only if the
        entry went: refused (its caller may not remove it, or the name
        leads elsewhere now), nobody saw anything vanish, so the rule has
        not fired -- its one firing is given back, and it waits for an
        entry it may remove, as a directory waits for a vanish-tree rule."""
        if removed:
            armed.hits += 1
        else:
            armed.spent -= 1

    @staticmethod
    def _eligible(armed: ArmedRule, pid: int) -> bool:
        rule = armed.rule
        if rule.pid is not None and rule.pid != pid:
            return False
        # Counted against times= at once; the gate hands it back if the
        # fault turns out to have reached nobody (Fault.drop).
        if not triggered(armed, armed.spent):
            return False
        armed.spent += 1
        return True
