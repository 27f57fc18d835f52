"""Torture-suite session plumbing: the counts the issue asks CI to print,
written into the terminal summary so they show without ``-s``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from probe.pytest_plugin import require_fakefs

from ._harness import STATS, Family, family


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if not STATS.runs:
        return
    tr = terminalreporter
    tr.section("fault-schedule torture")
    tr.write_line(
        f"schedules: {len(STATS.schedules)} distinct ({STATS.runs} runs) | "
        f"faults injected: {STATS.injected} | violations: {len(STATS.violations)} | "
        f"excused leftovers: {STATS.excused} | unfired schedules: {STATS.unfired} | "
        f"replay time: {STATS.seconds:.1f}s"
    )
    for name, n in sorted(STATS.per_workload.items()):
        tr.write_line(f"  {name}: {n} runs")
    for v in STATS.violations[:20]:
        tr.write_line(f"  VIOLATION {v}")


@pytest.fixture(scope="module")
def torture_family(request: pytest.FixtureRequest) -> Iterator[Family]:
    """One fakefs mount (and torture directory) for a whole test module."""
    require_fakefs()
    with family(request.module.__name__) as fam:
        yield fam
