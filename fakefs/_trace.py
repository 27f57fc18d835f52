"""The bounded operation trace and the per-operation counters."""

from __future__ import annotations

import collections
import json
from collections.abc import Iterable
from typing import Any

from probe._outcome import errno_name

__all__ = ["Trace", "to_jsonl"]

#: one record: seq, op, path, pid, errno (None = success), rule id
Record = tuple[int, str, str, int, "int | None", "int | None"]


class Trace:
    """The last ``limit`` operations plus counters over all of them.

    Records are kept as tuples and turned into dicts only on export: the
    daemon appends one per FUSE request, so that path must stay cheap.
    """

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._records: collections.deque[Record] = collections.deque(maxlen=limit)
        self._seq = 0
        self.ops: collections.Counter[str] = collections.Counter()
        self.errors: collections.Counter[str] = collections.Counter()
        self.injected = 0
        self.delayed = 0
        self.shortened = 0
        self.vanished = 0

    def record(self, op: str, path: str, pid: int, err: int | None, rule: int | None) -> None:
        self._seq += 1
        self._records.append((self._seq, op, path, pid, err, rule))
        self.ops[op] += 1
        if err is not None:
            self.errors[op] += 1

    def clear(self) -> None:
        self._records.clear()

    def records(self) -> list[dict[str, Any]]:
        return [
            {
                "seq": seq,
                "op": op,
                "path": path,
                "pid": pid,
                "result": "ok" if err is None else errno_name(err),
                "errno": err,
                "rule": rule,
            }
            for seq, op, path, pid, err, rule in self._records
        ]

    def counters(self) -> dict[str, Any]:
        return {
            "total": self._seq,
            "ops": dict(self.ops),
            "errors": dict(self.errors),
            "injected": self.injected,
            "delayed": self.delayed,
            "shortened": self.shortened,
            "vanished": self.vanished,
            "trace_kept": len(self._records),
            "trace_limit": self.limit,
        }


def to_jsonl(records: Iterable[dict[str, Any]]) -> str:
    """Records as JSON lines (one object per line, trailing newline)."""
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
