"""Hypothesis-drawn fault schedules: one to three faults at once, anywhere
in the trace, any errno or a short transfer -- the combinations the
one-fault sweep cannot reach (a failed write *and* a failed cleanup).

Derandomized (a fixed seed, no example database), so CI runs the same
schedules every time and a failure reproduces.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ._capabilities import CapabilityWorkload
from ._clone import CloneWorkload
from ._harness import Family, Replayer
from ._materialize import MaterializeWorkload
from ._schedule import Fault, Schedule, TraceOp, actions_for, failable, fault_at


def _settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


def schedules(trace: list[TraceOp], max_faults: int = 3) -> st.SearchStrategy[Schedule]:
    ks = failable(trace)

    @st.composite
    def one(draw: st.DrawFn) -> Fault:
        k = draw(st.sampled_from(ks))
        return fault_at(trace, k, draw(st.sampled_from(actions_for(trace[k].op))))

    # Sorted and de-duplicated: two draws of the same fault are one schedule.
    return st.lists(one(), min_size=1, max_size=max_faults, unique_by=lambda f: (
        f.op, f.glob, f.nth)).map(lambda fs: tuple(sorted(fs)))


@pytest.fixture(scope="module")
def replayers(torture_family: Family) -> Iterator[dict[str, tuple[Replayer, list[TraceOp]]]]:
    out = {}
    workloads: list[object] = [CloneWorkload(torture_family, "new"),
                               CloneWorkload(torture_family, "over")]
    workloads.append(MaterializeWorkload(torture_family))
    for w in workloads:
        r = Replayer(torture_family, w)  # type: ignore[arg-type]
        out[r.workload.name] = (r, r.record())
    yield out


def _check(problems: list[str]) -> None:
    assert not problems, "\n".join(problems[:10])


@pytest.mark.parametrize("name", ["clonefile_or_copy[new]", "clonefile_or_copy[over]"])
def test_random_schedules_clone(
    replayers: dict[str, tuple[Replayer, list[TraceOp]]], name: str
) -> None:
    replayer, trace = replayers[name]

    @_settings(150)
    @given(schedules(trace))
    def run(schedule: Schedule) -> None:
        _check(replayer.replay(schedule))

    run()


def test_random_schedules_materialize(
    replayers: dict[str, tuple[Replayer, list[TraceOp]]],
) -> None:
    replayer, trace = replayers["materialize"]

    @_settings(150)
    @given(schedules(trace))
    def run(schedule: Schedule) -> None:
        _check(replayer.replay(schedule))

    run()


def test_random_schedules_capabilities(torture_family: Family) -> None:
    replayer = Replayer(torture_family, CapabilityWorkload(torture_family))
    trace = replayer.record()

    @_settings(40)
    @given(schedules(trace, max_faults=2))
    def run(schedule: Schedule) -> None:
        _check(replayer.replay(schedule))

    run()
