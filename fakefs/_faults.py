"""Armed rules: which rule fires for an operation, and the hit counters.

Pure Python (no FUSE), used by the daemon. Every decision happens on the
daemon's single trio thread, so the counters need no lock.
"""

from __future__ import annotations

import fnmatch
import os
import random
import re
from dataclasses import dataclass, field
from typing import Any

from ._rules import FaultRule

__all__ = ["ArmedRule", "FaultTable"]


@dataclass(eq=False)
class ArmedRule:
    id: int
    rule: FaultRule
    hits: int = 0
    #: operations that matched op, path and pid (whether or not it fired)
    matches: int = 0
    #: the seed actually used for p= (drawn at random when none was given,
    #: and reported, so an unlucky schedule can be replayed)
    seed: int | None = None
    rng: random.Random | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "rule": self.rule.text,
            "hits": self.hits,
            "matches": self.matches,
            "seed": self.seed,
        }


class FaultTable:
    def __init__(self) -> None:
        self._rules: list[ArmedRule] = []
        self._by_op: dict[str, list[ArmedRule]] = {}
        self._next_id = 1
        self._targets: re.Pattern[str] | None = None
        #: bumped on every change, so per-inode "is this path targeted"
        #: answers can be cached and dropped cheaply
        self.generation = 0

    # -- changes -----------------------------------------------------------
    def add(self, rule: FaultRule) -> ArmedRule:
        seed = rule.seed
        rng = None
        if rule.p is not None:
            if seed is None:
                seed = int.from_bytes(os.urandom(4), "little")
            rng = random.Random(seed)  # noqa: S311 -- a replayable schedule, not a secret
        armed = ArmedRule(self._next_id, rule, seed=seed, rng=rng)
        self._next_id += 1
        self._rules.append(armed)
        self._rebuild()
        return armed

    def remove(self, rule_id: int) -> ArmedRule | None:
        for armed in self._rules:
            if armed.id == rule_id:
                self._rules.remove(armed)
                self._rebuild()
                return armed
        return None

    def clear(self) -> list[ArmedRule]:
        gone, self._rules = self._rules, []
        self._rebuild()
        return gone

    def _rebuild(self) -> None:
        by_op: dict[str, list[ArmedRule]] = {}
        for armed in self._rules:
            for op in armed.rule.ops:
                by_op.setdefault(op, []).append(armed)
        self._by_op = by_op
        if self._rules:
            self._targets = re.compile(
                "|".join(f"(?:{fnmatch.translate(a.rule.glob)})" for a in self._rules)
            )
        else:
            self._targets = None
        self.generation += 1

    # -- queries -----------------------------------------------------------
    def listing(self) -> list[dict[str, Any]]:
        return [a.as_dict() for a in self._rules]

    def has_op(self, op: str) -> bool:
        return op in self._by_op

    def targets(self, path: str) -> bool:
        """Could any rule, for any operation, match ``path``?

        Such paths get no kernel caching: a cached entry, attribute or page
        would answer the caller without asking fakefs, hiding the fault.
        """
        pattern = self._targets
        return pattern is not None and pattern.match(path) is not None

    def decide(self, op: str, path: str, path2: str | None, pid: int) -> ArmedRule | None:
        """The rule that fires *before* ``op`` runs (errno, delay, short)."""
        rules = self._by_op.get(op)
        if not rules:
            return None
        for armed in rules:
            rule = armed.rule
            if rule.vanish:
                continue
            if self._eligible(armed, path, path2, pid):
                return armed
        return None

    def vanish_after(self, op: str, path: str, pid: int) -> ArmedRule | None:
        """The vanish rule that fires now that ``op`` on ``path`` succeeded."""
        rules = self._by_op.get(op)
        if not rules:
            return None
        for armed in rules:
            if armed.rule.vanish and armed.hits == 0 and self._eligible(armed, path, None, pid):
                return armed
        return None

    @staticmethod
    def _eligible(armed: ArmedRule, path: str, path2: str | None, pid: int) -> bool:
        rule = armed.rule
        if rule.pid is not None and rule.pid != pid:
            return False
        if not (rule.matches_path(path) or (path2 is not None and rule.matches_path(path2))):
            return False
        armed.matches += 1
        if rule.nth is not None and armed.matches != rule.nth:
            return False
        if rule.times is not None and armed.hits >= rule.times:
            return False
        # Draw only for calls that passed every other test, so the schedule
        # depends on the sequence of matching calls alone: same seed, same
        # calls, same failures.
        if armed.rng is not None and rule.p is not None and armed.rng.random() >= rule.p:
            return False
        armed.hits += 1
        return True
