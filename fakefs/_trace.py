"""The bounded operation trace and the per-operation counters."""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Iterable
from typing import Any

__all__ = ["Trace", "to_jsonl"]

#: seq, time_ns, op, path, path2, pid, errno (None = success), rule id,
#: offset, length, delivered (for failures: reached the caller's syscall?
#: True, False, None for "could not tell", or "retry": the kernel's retry
#: inside the syscall that already got this error, counted once)
Record = tuple[int, int, str, str, "str | None", int, "int | None", "int | None",
               "int | None", "int | None", "bool | str | None"]

_COMM_CACHE = 4096


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
        #: failures that reached the caller's syscall
        self.injected = 0
        #: failures the kernel or the caller swallowed (a retried read, a
        #: short count after a partial transfer)
        self.absorbed = 0
        #: read/write failures whose caller could not be examined
        self.unconfirmed = 0
        self.delayed = 0
        self.shortened = 0
        self.vanished = 0
        #: pid -> process name, read once per pid at record time (the
        #: process may be gone by the time the trace is exported); least
        #: recently recorded first, so a full cache drops the pid least
        #: likely to be in the kept records, not the busy ones with it
        self._comm: collections.OrderedDict[int, str] = collections.OrderedDict()

    def record(self, op: str, path: str, pid: int, err: int | None, rule: int | None,
               *, path2: str | None = None, off: int | None = None, size: int | None = None,
               delivered: bool | str | None = None) -> None:
        self._seq += 1
        try:
            self._comm.move_to_end(pid)
        except KeyError:  # cheaper on the hot path than a test first
            self._remember(pid)
        self._records.append((self._seq, time.time_ns(), op, path, path2, pid, err, rule, off,
                              size, delivered))
        self.ops[op] += 1
        if err is not None:
            self.errors[op] += 1

    def _remember(self, pid: int) -> None:
        if len(self._comm) >= _COMM_CACHE:
            self._comm.popitem(last=False)
        try:
            with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as f:
                self._comm[pid] = f.read().rstrip("\n")
        except OSError:
            self._comm[pid] = ""

    def clear(self) -> None:
        self._records.clear()

    def records(self) -> list[dict[str, Any]]:
        # Here, not at the top: probe._outcome (its enum and the errno
        # tables) is only needed once a trace is exported, which `fakefs
        # run` without --trace never does.
        from probe._outcome import errno_name

        return [
            {
                "seq": seq,
                "time": ts / 1e9,
                "op": op,
                "path": path,
                "target": path2,
                "pid": pid,
                "process": self._comm.get(pid, ""),
                "result": "ok" if err is None else errno_name(err),
                "errno": err,
                "rule": rule,
                "offset": off,
                "length": size,
                "delivered": delivered if err is not None else None,
            }
            for seq, ts, op, path, path2, pid, err, rule, off, size, delivered in self._records
        ]

    def counters(self) -> dict[str, Any]:
        return {
            "total": self._seq,
            "ops": dict(self.ops),
            "errors": dict(self.errors),
            "injected": self.injected,
            "absorbed": self.absorbed,
            "unconfirmed": self.unconfirmed,
            "delayed": self.delayed,
            "shortened": self.shortened,
            "vanished": self.vanished,
            "trace_kept": len(self._records),
            "trace_limit": self.limit,
        }


def to_jsonl(records: Iterable[dict[str, Any]]) -> str:
    """Records as JSON lines (one object per line, trailing newline)."""
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
