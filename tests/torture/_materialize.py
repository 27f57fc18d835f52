"""``materialize`` of a small tree into two worktrees as a torture workload:
``w1`` exists (one dest in it already exists), ``w2`` does not (the batch
stages it under a hidden name and renames it into place at the end). Both
are given as ``worktrees``, so directories below them are opened without
following anything."""

from __future__ import annotations

import errno
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import probe

from ._clone import OLD, OLD_MODE, _put, _remove
from ._harness import Family, Outcome, check_file
from ._schedule import Fault

__all__ = ["MaterializeWorkload"]


# name -> (size, mode); sizes straddle the 64 KiB FUSE write size
BLOBS: dict[str, tuple[int, int]] = {"a": (70_001, 0o644), "b": (13, 0o755), "sub/c": (0, 0o600)}
# (blob, worktree-relative dest)
JOBS: tuple[tuple[str, str], ...] = (
    ("a", "w1/a"), ("b", "w1/old"), ("sub/c", "w1/deep/c"),
    ("a", "w2/a"), ("b", "w2/x/b"),
)


@dataclass
class MaterializeWorkload:
    fam: Family
    name: str = "materialize"

    def __post_init__(self) -> None:
        rng = random.Random(3)  # noqa: S311 -- reproducible test data
        self.data = {n: rng.randbytes(size) for n, (size, _) in BLOBS.items()}
        self.fn: Callable[..., Any] = probe.materialize

    def _store(self, rel: str) -> Path:
        return self.fam.backing / rel

    def reset(self) -> None:
        for n, (_, mode) in BLOBS.items():
            p = self._store("blobs") / n
            if not p.is_file() or p.read_bytes() != self.data[n]:
                p.parent.mkdir(parents=True, exist_ok=True)
                _put(p, self.data[n], mode)
            os.chmod(p, mode)
        for entry in os.listdir(self.fam.backing):
            if entry != "blobs":
                _remove(self.fam.backing / entry)
        self._store("w1").mkdir()
        _put(self._store("w1/old"), OLD, OLD_MODE)

    def run(self) -> object:
        assert self.fn is not None
        jobs = [(str(self.fam.mnt / "blobs" / s), str(self.fam.mnt / d)) for s, d in JOBS]
        # As worktrees: the batch then walks below each one component by
        # component (O_NOFOLLOW), the path mirror() takes, under every fault.
        return self.fn(jobs, workers=1, worktrees=[self.fam.mnt / "w1", self.fam.mnt / "w2"])

    def check(self, out: Outcome, fired: Sequence[Fault]) -> list[str]:
        problems: list[str] = []
        for n, (_, mode) in BLOBS.items():
            problems += check_file(self._store("blobs") / n, self.data[n], mode, "source")
        if out.error is not None:
            return [*problems, f"materialize raised {type(out.error).__name__}: {out.error}"]
        injected = {getattr(errno, e) for f in fired if (e := f.errno_name) is not None}
        results = out.value.results  # type: ignore[attr-defined]
        for (blob, rel), res in zip(JOBS, results, strict=True):
            store = self._store(rel)
            existed = rel == "w1/old"
            if res.ok:
                problems += check_file(store, self.data[blob], BLOBS[blob][1], f"dest {rel}")
                continue
            if res.errno not in injected:
                problems.append(f"job {rel}: {res.status.value} with errno {res.errno_name}, "
                                f"injected {sorted(f.action for f in fired)}: {res.error}")
            if not res.path or not str(res.path).startswith(str(self.fam.mnt)):
                problems.append(f"job {rel}: failure names {res.path!r}, not a caller's path")
            if existed:
                problems += check_file(store, OLD, OLD_MODE, f"pre-existing dest {rel}")
            elif os.path.lexists(store):
                problems.append(f"failed job {rel} left a dest behind")
        problems += self.fam.leftovers()
        return problems
