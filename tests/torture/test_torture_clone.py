"""``clonefile_or_copy`` with every traced FUSE operation failed in turn,
with each errno and a short transfer: the dest is absent, unchanged or
byte-exact; the error names the path and the injected errno."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ._clone import CLONE_VARIANTS, CloneWorkload
from ._harness import Family, Replayer
from ._schedule import ERRNOS, SHORT_BYTES, TraceOp, exhaustive

ACTIONS = (*ERRNOS, f"short={SHORT_BYTES}")


@pytest.fixture(scope="module")
def recorded(torture_family: Family) -> Iterator[dict[str, tuple[Replayer, list[TraceOp]]]]:
    out = {}
    for v in CLONE_VARIANTS:
        r = Replayer(torture_family, CloneWorkload(torture_family, v))
        out[v] = (r, r.record())
    yield out


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("variant", CLONE_VARIANTS)
def test_every_operation_failed_in_turn(
    recorded: dict[str, tuple[Replayer, list[TraceOp]]], variant: str, action: str
) -> None:
    replayer, trace = recorded[variant]
    errnos = () if action.startswith("short=") else (action,)
    schedules = [s for s in exhaustive(trace, errnos) if s[0].action == action]
    # The recording must reach the filesystem at all, or there is nothing to fail.
    assert len(schedules) >= (2 if errnos else 1), trace
    problems = replayer.replay_all(schedules)
    assert not problems, "\n".join(problems[:25])
