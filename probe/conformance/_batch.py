"""Batch scenarios: run ``probe.materialize`` over a set of jobs and judge
the per-job results against the batch post-conditions."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ._model import Check

__all__ = ["BatchOutcome", "run_batch"]


@dataclass
class BatchOutcome:
    #: per job: "cloned" / "copied" / "vanished" / "failed"
    kinds: list[str]
    #: per job: did the materializer attempt a reflink for it
    attempted: list[bool]
    error: str | None = None

    def describe(self) -> str:
        if self.error:
            return f"ERROR ({self.error})"
        return ", ".join(f"{n} {k}" for k, n in sorted(Counter(self.kinds).items()))

    def problems(
        self, checks: frozenset[Check], blobs: Sequence[bytes], dests: Sequence[Path]
    ) -> list[str]:
        if self.error:
            return [f"the batch raised: {self.error}"]
        out: list[str] = []
        rest = range(1, len(blobs))
        if Check.REST_CLONED in checks:
            bad = [i for i in rest if self.kinds[i] != "cloned"]
            if bad:
                out.append(f"jobs {bad} not CLONED ({[self.kinds[i] for i in bad]})")
        if Check.REST_EXACT in checks:
            first = 0 if Check.VANISHED_JOB_REPORTED not in checks else 1
            for i in range(first, len(blobs)):
                try:
                    ok = dests[i].read_bytes() == blobs[i]
                except OSError as err:
                    out.append(f"dest {i}: {err.strerror}")
                    continue
                if not ok:
                    out.append(f"dest {i} bytes differ")
        if Check.VANISHED_JOB_REPORTED in checks:
            # VANISHED exactly: a FAILED job is the classifier reading the
            # vanish as a hard error, the very lie this row is about.
            if self.kinds[0] != "vanished":
                out.append(f"the vanished blob was reported {self.kinds[0]!r}, not 'vanished'")
            if os.path.lexists(dests[0]):
                out.append("a dest exists for the vanished blob")
        if Check.ALL_CLONED in checks:
            bad = [i for i, k in enumerate(self.kinds) if k != "cloned"]
            if bad:
                out.append(f"jobs {bad} not CLONED ({[self.kinds[i] for i in bad]})")
        if Check.FIRST_COPIED in checks and self.kinds[0] != "copied":
            out.append(f"the refused job was reported {self.kinds[0]!r}, not copied")
        if Check.STOPS_AFTER_FIRST_UNSUPPORTED in checks:
            tried = [i for i, a in enumerate(self.attempted) if a]
            if len(tried) != 1:
                out.append(f"reflink attempted for jobs {tried}, want only the first")
        return out


def run_batch(jobs: list[tuple[Path, Path]]) -> BatchOutcome:
    from probe import JobStatus, materialize

    try:
        report = materialize(jobs)
    except OSError as err:
        return BatchOutcome([], [], error=str(err))
    items = list(report.results)
    kinds = [r.status.value for r in items]
    # A clone syscall was spent on a job when it cloned, or when its copy
    # carries the clone's errno (None: the pair was already known not to
    # clone, so no syscall was made).
    attempted = [
        r.status is JobStatus.CLONED or r.reflink_errno is not None for r in items
    ]
    return BatchOutcome(kinds, attempted)
