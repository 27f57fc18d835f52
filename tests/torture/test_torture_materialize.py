"""``materialize`` of a small tree into two worktrees, every traced
operation failed in turn with each errno and a short transfer: every job is
exact, or failed with the injected errno and a path, its dest absent or
unchanged; nothing raised; no temporary or staged directory left."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ._harness import Family, Replayer
from ._materialize import MaterializeWorkload
from ._schedule import ERRNOS, SHORT_BYTES, TraceOp, exhaustive

ACTIONS = (*ERRNOS, f"short={SHORT_BYTES}")


@pytest.fixture(scope="module")
def recorded(torture_family: Family) -> Iterator[tuple[Replayer, list[TraceOp]]]:
    r = Replayer(torture_family, MaterializeWorkload(torture_family))
    yield r, r.record()


@pytest.mark.parametrize("action", ACTIONS)
def test_every_operation_failed_in_turn(
    recorded: tuple[Replayer, list[TraceOp]], action: str
) -> None:
    replayer, trace = recorded
    errnos = () if action.startswith("short=") else (action,)
    schedules = [s for s in exhaustive(trace, errnos) if s[0].action == action]
    assert len(schedules) >= 2, trace
    violations = replayer.replay_all(schedules)
    assert not violations, "\n".join(violations[:25])
