"""The one runner: plans the cases a site can express, runs each through
``probe.conformance._case``, and gathers the results into a report.

A case whose set-up cannot be had here is "not applicable" with the reason
-- never a pass.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

from ._case import Case
from ._model import Column, NotHere, Scenario, Variant
from ._scenarios import SCENARIOS
from ._site import Site

__all__ = [
    "CaseResult",
    "CellResult",
    "Report",
    "Status",
    "plan",
    "run",
    "run_case",
]


class Status(enum.Enum):
    PASS = "pass"  # noqa: S105 - a status word, not a secret
    FAIL = "fail"
    NA = "n/a"


@dataclass(frozen=True)
class CaseResult:
    scenario: Scenario
    column: Column
    #: None for a column the scenario has no set-up for at all.
    variant: Variant | None
    status: Status
    #: What went wrong (fail) or what is missing (n/a); empty for a pass.
    detail: str = ""
    observed: str = ""
    seconds: float = 0.0

    @property
    def label(self) -> str:
        return self.variant.label if self.variant else self.column.value


@dataclass(frozen=True)
class CellResult:
    scenario: Scenario
    column: Column
    status: Status
    cases: tuple[CaseResult, ...]

    def text(self) -> str:
        """One table cell: the status word first (the renderer colours by it)."""
        ran = [c for c in self.cases if c.status is not Status.NA]
        na = [c for c in self.cases if c.status is Status.NA]
        if self.status is Status.FAIL:
            bad = [c for c in self.cases if c.status is Status.FAIL]
            return "fail: " + "; ".join(f"{c.label}: {c.detail}" for c in bad)
        if self.status is Status.PASS:
            extra = f", {len(na)} n/a" if na else ""
            return f"pass ({len(ran)}{extra}): " + ", ".join(c.label for c in ran)
        reasons = list(dict.fromkeys(c.detail for c in na))
        return "n/a: " + "; ".join(reasons)


@dataclass
class Report:
    cases: list[CaseResult]
    properties: dict[str, str]
    seconds: float

    @cached_property
    def cells(self) -> list[CellResult]:
        """The cases grouped per (scenario, column), in run order."""
        return _cells(self.cases)

    def count(self, status: Status) -> int:
        return sum(1 for c in self.cases if c.status is status)

    @property
    def failed(self) -> bool:
        return self.count(Status.FAIL) > 0

    @property
    def ran(self) -> int:
        return len(self.cases) - self.count(Status.NA)


def _cells(cases: Sequence[CaseResult]) -> list[CellResult]:
    order: dict[tuple[str, Column], list[CaseResult]] = {}
    scen: dict[str, Scenario] = {}
    for c in cases:
        order.setdefault((c.scenario.id, c.column), []).append(c)
        scen[c.scenario.id] = c.scenario
    cells = []
    for (sid, column), group in order.items():
        statuses = {c.status for c in group}
        if Status.FAIL in statuses:
            status = Status.FAIL
        elif Status.PASS in statuses:
            status = Status.PASS
        else:
            status = Status.NA
        cells.append(CellResult(scen[sid], column, status, tuple(group)))
    return cells


PlanItem = tuple[Scenario, Column, Variant | NotHere]


def plan(site: Site, scenarios: Iterable[Scenario] = SCENARIOS) -> list[PlanItem]:
    """Every case this site will report: the variants it can express, and a
    not-applicable entry for a column it has no set-up for."""
    items: list[PlanItem] = []
    for s in scenarios:
        for column in Column:
            spec = s.column(column)
            if isinstance(spec, NotHere):
                items.append((s, column, spec))
                continue
            mine = [v for v in spec if site.applies(v)]
            if not mine:
                why = f"no {column.value} set-up for a {site.mode} site"
                items.append((s, column, NotHere(why)))
            items.extend((s, column, v) for v in mine)
    return items


def run(
    site: Site,
    scenarios: Iterable[Scenario] = SCENARIOS,
    *,
    on_case: Callable[[CaseResult], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> Report:
    """Run ``scenarios`` on ``site``; ``on_case`` sees each result as it lands."""
    t0 = time.monotonic()
    items = plan(site, scenarios)
    if on_start:
        on_start(len(items))
    results = []
    for s, column, spec in items:
        if isinstance(spec, NotHere):
            res = CaseResult(s, column, None, Status.NA, spec.reason)
        else:
            res = run_case(site, s, column, spec)
        results.append(res)
        if on_case:
            on_case(res)
    return Report(results, site.properties(), time.monotonic() - t0)


def run_case(site: Site, scenario: Scenario, column: Column, variant: Variant) -> CaseResult:
    """One variant, start to finish; never raises for a library misbehaviour."""
    why = site.missing(variant)
    if why:
        return CaseResult(scenario, column, variant, Status.NA, why)
    t0 = time.monotonic()
    try:
        problems, observed = Case(site, scenario, variant).run()
    except Exception as err:  # the runner itself broke: a failure, never a pass
        problems, observed = [f"runner error: {type(err).__name__}: {err}"], ""
    seconds = time.monotonic() - t0
    status = Status.FAIL if problems else Status.PASS
    return CaseResult(scenario, column, variant, status, "; ".join(problems), observed, seconds)
