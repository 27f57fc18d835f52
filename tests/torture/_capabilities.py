"""The capability probe as a torture workload."""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from probe.capabilities import CapabilityReport, ProbePathError, Status, probe_capabilities

from ._clone import _empty
from ._harness import Family, Outcome
from ._schedule import Fault

__all__ = ["CapabilityWorkload"]


@dataclass
class CapabilityWorkload:
    """``probe_capabilities`` of a directory on the mount.

    Invariants on top of the common ones: the probe answers (a report) or
    refuses the path (``ProbePathError`` naming it) -- never crashes; leaves
    no probe file; and a fault can take a "supported" away, never invent
    one: nothing is SUPPORTED that the fault-free run did not find supported.
    """

    fam: Family
    only: tuple[str, ...] | None = None
    name: str = "probe_capabilities"
    baseline: dict[str, Status] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.store = self.fam.backing / "p"
        self.dir = self.fam.mnt / "p"

    def reset(self) -> None:
        _empty(self.store)

    def run(self) -> object:
        return probe_capabilities(self.dir, only=self.only)

    def check(self, out: Outcome, fired: Sequence[Fault]) -> list[str]:
        problems: list[str] = []
        injected = {getattr(errno, n) for f in fired if (n := f.errno_name) is not None}
        if out.error is not None:
            if not isinstance(out.error, ProbePathError):
                return [f"probe raised {type(out.error).__name__}: {out.error}"]
            if not injected:
                problems.append(f"path refused without a fault: {out.error}")
            if str(self.dir) not in str(out.error):
                problems.append(f"ProbePathError does not name {self.dir}: {out.error}")
        else:
            rep = out.value
            assert isinstance(rep, CapabilityReport)
            for cap in rep.capabilities:
                if "crashed" in (cap.reason or ""):
                    problems.append(f"{cap.name} crashed: {cap.reason}")
                if not fired:
                    self.baseline.setdefault(cap.name, cap.status)
                elif cap.status is Status.SUPPORTED and self.baseline.get(cap.name) not in (
                        None, Status.SUPPORTED):
                    problems.append(f"{cap.name} SUPPORTED under a fault, "
                                    f"{self.baseline.get(cap.name)} without")
            if rep.leftover is not None and not injected:
                problems.append(f"leftover reported without a fault: {rep.leftover}")
        problems += self.fam.leftovers()
        extra = sorted(os.listdir(self.store))
        problems += [f"stray entry {self.store / n}" for n in extra]
        return problems
