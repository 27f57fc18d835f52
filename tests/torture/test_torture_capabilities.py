"""The capability probe with traced operations failed in turn: it answers
or refuses the path -- never crashes, never invents a SUPPORTED, never
leaves its private directory behind.

The probe sends about a thousand FUSE operations, so instead of 6 runs per
operation every ``STRIDE``-th operation is failed, the errno rotating, which
keeps this under half a minute; the random schedules cover the rest.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ._capabilities import CapabilityWorkload
from ._harness import Family, Replayer
from ._schedule import ERRNOS, TraceOp, failable, fault_at

STRIDE = 4


@pytest.fixture(scope="module")
def recorded(torture_family: Family) -> Iterator[tuple[Replayer, list[TraceOp]]]:
    r = Replayer(torture_family, CapabilityWorkload(torture_family))
    yield r, r.record()


@pytest.mark.parametrize("phase", range(STRIDE))
def test_operations_failed_in_turn(recorded: tuple[Replayer, list[TraceOp]], phase: int) -> None:
    replayer, trace = recorded
    ks = failable(trace)[phase::STRIDE]
    schedules = [(fault_at(trace, k, ERRNOS[(i + phase) % len(ERRNOS)]),) for i, k in enumerate(ks)]
    assert len(schedules) > 50, len(trace)
    violations = replayer.replay_all(schedules)
    assert not violations, "\n".join(violations[:25])
