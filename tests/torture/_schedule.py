"""Fault schedules derived from a recorded fakefs trace.

A schedule is a set of faults, each "fail the j-th ``op`` on paths matching
``glob``". The k-th operation of a trace becomes such a fault rather than a
global "k-th operation" counter because fakefs counts ``nth=`` per rule
(operations matching that rule's ops and glob): ``op:glob:ERR:nth=j`` with j
the occurrence index of (op, glob) up to k hits exactly that operation as long
as the replay's prefix matches the recording. It also survives harmless noise
elsewhere in the trace (an asynchronous RELEASE, a getxattr the kernel sends
only the first time it sees an inode).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ERRNOS",
    "SHORT_BYTES",
    "Fault",
    "Schedule",
    "TraceOp",
    "exhaustive",
    "failable",
    "fault_at",
    "glob_for",
]

#: The errnos the issue asks for, each failing every traced operation in turn.
ERRNOS: tuple[str, ...] = ("EIO", "ENOSPC", "EDQUOT", "EACCES", "EROFS", "ENOENT")
#: A short transfer that is neither a page nor a block multiple, so a copy
#: loop that assumes aligned chunks (or treats short as EOF) is caught.
SHORT_BYTES = 1000

# RELEASE/RELEASEDIR: sent after close() returned, errors ignored (fakefs
# refuses rules on them), and asynchronous, so their position in the trace
# is not even reproducible.
_UNFAILABLE = frozenset({"release", "releasedir"})
# Random parts of names the library makes (temp_name's token_hex(6), the
# probe's token_hex(8), the capability probe's private directory): replaced
# by "*" so the same logical file matches in every replay.
_RANDOM = re.compile(r"(?<=[-.])[0-9a-f]{8,32}(?=[.-]|/|$)")
_GLOB_SPECIAL = re.compile(r"([*?\[])")


@dataclass(frozen=True)
class TraceOp:
    op: str
    path: str
    result: str

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> TraceOp:
        return cls(str(rec["op"]), str(rec["path"]), str(rec["result"]))


@dataclass(frozen=True, order=True)
class Fault:
    op: str
    glob: str
    nth: int
    #: an errno name, or "short=N"
    action: str

    @property
    def rule(self) -> str:
        return f"{self.op}:{self.glob}:{self.action}:nth={self.nth}"

    @property
    def errno_name(self) -> str | None:
        return None if self.action.startswith("short=") else self.action

    def __str__(self) -> str:
        return self.rule


Schedule = tuple[Fault, ...]


def glob_for(path: str) -> str:
    """A glob matching ``path`` in any replay: fnmatch specials escaped, the
    random tokens of temporary and probe names wildcarded."""
    escaped = _GLOB_SPECIAL.sub(r"[\1]", path)
    return _RANDOM.sub("*", escaped)


def failable(trace: Sequence[TraceOp]) -> list[int]:
    """Indices of the operations a fault can be injected into."""
    return [i for i, t in enumerate(trace) if t.op not in _UNFAILABLE]


def fault_at(trace: Sequence[TraceOp], k: int, action: str) -> Fault:
    """The fault that hits exactly the k-th operation of ``trace``."""
    target = trace[k]
    glob = glob_for(target.path)
    nth = sum(
        1 for t in trace[: k + 1] if t.op == target.op and fnmatch.fnmatchcase(t.path, glob)
    )
    return Fault(target.op, glob, nth, action)


def actions_for(op: str, errnos: Iterable[str] = ERRNOS) -> list[str]:
    acts = list(errnos)
    if op in {"read", "write"}:
        acts.append(f"short={SHORT_BYTES}")
    return acts


def exhaustive(trace: Sequence[TraceOp], errnos: Iterable[str] = ERRNOS) -> list[Schedule]:
    """One single-fault schedule per (failable operation, action)."""
    errs = tuple(errnos)
    out: list[Schedule] = []
    for k in failable(trace):
        for action in actions_for(trace[k].op, errs):
            out.append((fault_at(trace, k, action),))
    return out
