"""Does a conformance cell fail when the library rule it is named after is
broken? Each test here breaks one rule (in this process only) and runs the
cells about it on the lab: a cell that still passes proves nothing.

Also the kernel's own answer for a refusal the table classifies: FICLONE
from an active swap file (ETXTBSY), with GNU cp as the reference.
"""

from __future__ import annotations

import errno
import importlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from probe import _platform, clone_or_copy, reflink
from probe.conformance import Column, LabSite, NotHere, Status, run_case, scenario
from probe.conformance._batch import BatchOutcome
from probe.conformance._model import Check
from probe.lab import Lab
from probe.pytest_plugin import require

_CALL_REFUSALS = ("ENOTTY", "EPERM", "EACCES", "EBADF", "ETXTBSY")


@pytest.fixture(scope="module")
def lab_site(cowprobe_lab: Lab) -> Iterator[LabSite]:
    site = LabSite(cowprobe_lab)
    with site:  # __enter__ is typed as the base Site
        yield site


def _run_column(site: LabSite, sid: str) -> dict[str, tuple[Status, str]]:
    s = scenario(sid)
    spec = s.simulated
    assert not isinstance(spec, NotHere)
    out = {}
    for v in spec:
        res = run_case(site, s, Column.SIMULATED, v)
        require(res.status is not Status.NA, res.detail)
        out[v.label] = (res.status, res.detail)
    return out


def test_field_refusals_row_covers_every_call_refusal() -> None:
    # DESIGN.md's "field refusals" row (ENOTTY / EPERM at FICLONE:
    # UNSUPPORTED, copy) had no scenario: emptying the call-refusal table
    # passed the whole suite.
    spec = scenario("field-refusals").simulated
    assert not isinstance(spec, NotHere)
    single = {v.expect.errno for v in spec if v.expect and v.expect.errno}
    assert single == set(_CALL_REFUSALS)
    copies = sorted(v.label for v in spec if v.expect and v.expect.errno is None)
    assert copies == [
        "ENOTTY at FICLONE, then a copy (syscall layer, btrfs)",
        "EPERM at FICLONE, then a copy (syscall layer, btrfs)",
    ]


def test_field_refusals_pass_on_the_real_library(lab_site: LabSite) -> None:
    got = _run_column(lab_site, "field-refusals")
    assert len(got) == 12
    assert {k: v for k, v in got.items() if v[0] is not Status.PASS} == {}


def test_field_refusals_fail_without_the_call_refusal_rule(
    lab_site: LabSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = _platform.current()
    broken = host._replace(errnos=host.errnos._replace(call_refusals=frozenset()))
    monkeypatch.setattr(_platform, "current", lambda: broken)
    got = _run_column(lab_site, "field-refusals")
    assert len(got) == 12
    passed = [label for label, (status, _) in got.items() if status is Status.PASS]
    assert passed == []
    for e in _CALL_REFUSALS:
        _, detail = got[f"{e} at FICLONE (syscall layer, btrfs)"]
        assert detail.startswith(f"expected UNSUPPORTED ({e}), got ERROR ({e})"), detail
    _, detail = got["EPERM at FICLONE, then a copy (syscall layer, btrfs)"]
    assert detail.startswith("expected COPIED, got ERROR (EPERM)"), detail


def test_per_file_etxtbsy_cell_fails_when_etxtbsy_switches_the_pair_off(
    lab_site: LabSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = importlib.import_module("probe.materialize._policy")
    monkeypatch.setattr(policy, "is_per_file", lambda err, table=None: err == errno.EINVAL)
    got = _run_column(lab_site, "batch-one-refused")
    assert {k: v[0] for k, v in got.items()} == {
        "EINVAL at FICLONE for job 0 (syscall layer, btrfs)": Status.PASS,
        "EINVAL at FICLONE for job 0 (syscall layer, xfs)": Status.PASS,
        "ETXTBSY at FICLONE for job 0 (syscall layer, btrfs)": Status.FAIL,
        "ETXTBSY at FICLONE for job 0 (syscall layer, xfs)": Status.FAIL,
    }


def test_a_vanished_job_reported_failed_is_a_deviation() -> None:
    # The check accepted "failed" for the vanished blob: a classifier that
    # turned the vanish into a hard error passed the row.
    dests = [Path("/nonexistent/cowprobe-truth/blob-0")]
    outcome = BatchOutcome(["failed"], [True])
    assert outcome.problems(frozenset({Check.VANISHED_JOB_REPORTED}), [b"x"], dests) == [
        "the vanished blob was reported 'failed', not 'vanished'"
    ]
    ok = BatchOutcome(["vanished"], [False])
    assert ok.problems(frozenset({Check.VANISHED_JOB_REPORTED}), [b"x"], dests) == []


def test_vanished_batch_cells_fail_when_the_vanish_is_an_error(
    lab_site: LabSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = importlib.import_module("probe.materialize._worker")
    real = worker.classify
    monkeypatch.setattr(
        worker, "classify", lambda err, gone, *a, **kw: real(err, lambda: False, *a, **kw)
    )
    s = scenario("batch-one-vanished")
    assert not isinstance(s.real, NotHere)
    res = run_case(lab_site, s, Column.REAL, s.real[0])
    assert (res.status, res.detail) == (
        Status.FAIL, "the vanished blob was reported 'failed', not 'vanished'"
    )


# -- the kernel's answer: an active swap file -------------------------------


@pytest.fixture
def active_swap(cowprobe_lab: Lab) -> Iterator[Path]:
    """A 16 MiB swap file on the lab's btrfs, swapped on for the test."""
    require(os.geteuid() == 0, "root (swapon)")
    for tool in ("mkswap", "swapon", "swapoff", "chattr"):
        require(shutil.which(tool) is not None, tool)
    d = cowprobe_lab.scratch_dir("btrfs", "swap")
    subprocess.run(["chattr", "+C", str(d)], check=True)  # btrfs swap files are NOCOW
    swap = d / "swap"
    with open(swap, "wb") as fh:
        fh.truncate(0)
        for _ in range(16):
            fh.write(b"\0" * (1 << 20))
    swap.chmod(0o600)
    subprocess.run(["mkswap", str(swap)], check=True, capture_output=True)
    on = subprocess.run(["swapon", str(swap)], capture_output=True, text=True, check=False)
    require(on.returncode == 0, f"swapon of a btrfs file: {on.stderr.strip()}")
    try:
        yield swap
    finally:
        subprocess.run(["swapoff", str(swap)], check=True)


def test_ficlone_of_an_active_swap_file_is_etxtbsy_unsupported(active_swap: Path) -> None:
    d = active_swap.parent
    cp = subprocess.run(["cp", "--reflink=always", str(active_swap), str(d / "cp")],
                        capture_output=True, text=True, check=False)
    assert cp.returncode == 1 and "Text file busy" in cp.stderr, cp.stderr
    (d / "cp").unlink(missing_ok=True)  # cp leaves its empty dest
    before = sorted(os.listdir(d))
    res = reflink(active_swap, d / "clone")
    assert (res.outcome.value, res.errno_name, res.leftover) == (
        "unsupported", "ETXTBSY", None
    )
    assert sorted(os.listdir(d)) == before
    copied = clone_or_copy(active_swap, d / "copy")
    assert (copied.cloned, copied.attempt and copied.attempt.errno_name) == (False, "ETXTBSY")
    assert (d / "copy").stat().st_size == active_swap.stat().st_size
    assert sorted(os.listdir(d)) == sorted([*before, "copy"])
