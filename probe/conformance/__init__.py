"""The conformance suite: the DESIGN.md scenario matrix as data, one runner
for it on real and simulated filesystems, and a JUnit report.

    from probe.conformance import LabSite, run, write_junit
    from probe.lab import Lab

    with Lab() as lab, LabSite(lab) as site:
        report = run(site)
    write_junit(report, "conformance.xml")
    assert not report.failed

Standard library only (fakefs is imported only when a simulated case runs).
"""

from ._case import Observed, payload
from ._junit import JunitFile, junit_xml, write_junit
from ._model import Check, Column, Deleter, Expect, NotHere, Op, Result, Scenario, Variant
from ._runner import (
    CaseResult,
    CellResult,
    Report,
    Status,
    plan,
    run,
    run_case,
)
from ._scenarios import SCENARIOS, scenario
from ._site import DirSite, LabSite, Site, Workdir, fuse_missing

__all__ = [
    "SCENARIOS",
    "CaseResult",
    "CellResult",
    "Check",
    "Column",
    "Deleter",
    "DirSite",
    "Expect",
    "JunitFile",
    "LabSite",
    "NotHere",
    "Observed",
    "Op",
    "Report",
    "Result",
    "Scenario",
    "Site",
    "Status",
    "Variant",
    "Workdir",
    "fuse_missing",
    "junit_xml",
    "payload",
    "plan",
    "run",
    "run_case",
    "scenario",
    "write_junit",
]
