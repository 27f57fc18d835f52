"""The conformance matrix, run by the project's own tests: one test per
scenario variant on the lab (real kernels, real mounts, fakefs for the
simulated column), plus the runner over a pair of user directories."""

from __future__ import annotations

import errno
import importlib
import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from probe.conformance import (
    SCENARIOS,
    Column,
    DirSite,
    LabSite,
    NotHere,
    Scenario,
    Status,
    Variant,
    plan,
    run,
    run_case,
)
from probe.conformance._scenarios import LAB_PLACES, USER_PLACES
from probe.lab import Lab
from probe.pytest_plugin import require


def _cases(places: frozenset[str]) -> list[tuple[Scenario, Column, Variant]]:
    out: list[tuple[Scenario, Column, Variant]] = []
    for s in SCENARIOS:
        for column in Column:
            spec = s.column(column)
            if isinstance(spec, NotHere):
                continue
            out.extend(
                (s, column, v) for v in spec if {v.source, v.dest} <= places | {"fakefs"}
            )
    return out


def _id(case: tuple[Scenario, Column, Variant]) -> str:
    s, column, v = case
    return f"{s.id}/{column.value}/{v.label}"


@pytest.fixture(scope="module")
def lab_site(cowprobe_lab: Lab) -> Iterator[LabSite]:
    site = LabSite(cowprobe_lab)
    with site:
        yield site


_LAB_CASES = _cases(LAB_PLACES)


@pytest.mark.parametrize("case", _LAB_CASES, ids=[_id(c) for c in _LAB_CASES])
def test_scenario_on_lab(lab_site: LabSite, case: tuple[Scenario, Column, Variant]) -> None:
    s, column, variant = case
    res = run_case(lab_site, s, column, variant)
    # Not applicable is a missing prerequisite (fakefs, the materializer):
    # a skip here, a failure in CI -- never a pass.
    require(res.status is not Status.NA, res.detail)
    assert res.status is Status.PASS, f"{res.observed}: {res.detail}"


def test_every_row_has_both_columns_or_a_reason() -> None:
    ids = [s.id for s in SCENARIOS]
    assert len(ids) == len(set(ids))
    for s in SCENARIOS:
        for column in Column:
            spec = s.column(column)
            if isinstance(spec, NotHere):
                assert len(spec.reason) > 20, (s.id, column)
                continue
            assert spec, (s.id, column)
            # Every column that applies runs somewhere on the lab.
            on_lab = [v for v in spec if {v.source, v.dest} <= LAB_PLACES | {"fakefs"}]
            assert on_lab, (s.id, column)
            for v in spec:
                assert {v.source, v.dest} <= LAB_PLACES | USER_PLACES | {"fakefs"}, v
                if column is Column.SIMULATED:
                    # simulated = a FUSE mount or the syscall layer
                    assert "fakefs" in (v.source, v.dest) or v.syscall_faults, v
                else:
                    assert not v.faults and not v.syscall_faults, v
                exp = s.expect_for(v)
                assert exp.errno is None or hasattr(errno, exp.errno), v


def test_fault_rules_parse() -> None:
    # importorskip would hide a missing fakefs in CI; require() fails there.
    require(importlib.util.find_spec("fakefs") is not None, "the fakefs package is not installed")
    rules = importlib.import_module("fakefs._rules")
    for s in SCENARIOS:
        for column in Column:
            spec = s.column(column)
            for v in () if isinstance(spec, NotHere) else spec:
                for r in v.faults:
                    rules.parse_rule(r.format(source="d/source.bin", dest="d/dest.bin"))
                for r in v.syscall_faults:
                    rule = rules.parse_rule(r.format(source="d/source.bin", dest="d/dest.bin"),
                                            layer="syscall")
                    assert rule.syscall, r


def test_simulated_clone_rows_run_through_a_real_syscall() -> None:
    # Issue 13: these rows answer from FICLONE itself on a lab btrfs/XFS,
    # not only at the Python seam.
    for sid in ("clone-on-cow", "fs-without-reflink", "cross-filesystem", "per-file-refusal",
                "kernel-lacks-the-call", "source-vanishes-mid-flight", "transient",
                "batch-one-refused"):
        spec = next(s for s in SCENARIOS if s.id == sid).simulated
        assert not isinstance(spec, NotHere), sid
        kinds = {v.source for v in spec if v.syscall_faults}
        assert {"btrfs", "xfs"} <= kinds, sid


@pytest.fixture
def user_pair(cowprobe_lab: Lab) -> tuple[Path, Path]:
    return (cowprobe_lab.scratch_dir("btrfs", "user-src"),
            cowprobe_lab.scratch_dir("btrfs", "user-dst"))


def test_dir_site_runs_what_applies(user_pair: tuple[Path, Path]) -> None:
    src, dst = user_pair
    with DirSite(src, dst) as site:
        report = run(site)
    by_cell = {(c.scenario.id, c.column): c for c in report.cells}
    assert not report.failed, [c.detail for c in report.cases if c.status is Status.FAIL]
    # A btrfs -> btrfs pair clones: the CoW row runs and passes; the rows
    # that need the pair to refuse are n/a, naming the kernel's answer.
    assert by_cell["clone-on-cow", Column.REAL].status is Status.PASS
    assert by_cell["per-file-refusal", Column.REAL].status is Status.PASS
    cross = by_cell["cross-filesystem", Column.REAL]
    user_case = next(c for c in cross.cases if c.label == "source-dir -> dest-dir")
    assert user_case.status is Status.NA
    assert "does not answer EXDEV (it clones)" in user_case.detail
    # Nothing of the run is left in the user's directories.
    assert list(src.iterdir()) == [] and list(dst.iterdir()) == []


def test_dir_site_cross_filesystem(cowprobe_lab: Lab) -> None:
    src = cowprobe_lab.scratch_dir("btrfs", "user-src")
    dst = cowprobe_lab.scratch_dir("ext4", "user-dst")
    with DirSite(src, dst) as site:
        report = run(site, [s for s in SCENARIOS if s.id in ("clone-on-cow", "cross-filesystem")])
    real = {c.scenario.id: c for c in report.cells if c.column is Column.REAL}
    clone_user = next(c for c in real["clone-on-cow"].cases if c.variant)
    assert clone_user.status is Status.NA
    assert "does not clone (FICLONE says EXDEV)" in clone_user.detail
    assert real["cross-filesystem"].status is Status.PASS


def test_plan_marks_columns_without_a_setup(user_pair: tuple[Path, Path]) -> None:
    with DirSite(*user_pair) as site:
        items = plan(site)
    na = [(s.id, c) for s, c, spec in items if isinstance(spec, NotHere)]
    # The design's own "not applicable" cells stay visible in every plan.
    assert ("kernel-lacks-the-call", Column.REAL) in na
    assert ("transient", Column.REAL) in na
