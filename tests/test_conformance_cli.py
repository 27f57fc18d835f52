"""`cowprobe conformance` from the command line: the matrix, the JUnit file
a JUnit parser accepts, exit codes -- and proof that the suite can fail."""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import pytest

from probe._outcome import ErrnoTable
from probe.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from probe.conformance import SCENARIOS, Column, NotHere
from probe.lab import Lab, missing_prerequisites
from probe.pytest_plugin import require, strict_mode

# A skip outside CI; under CI=true (strict mode) a missing junitparser must
# fail the run, not quietly drop the JUnit checks.
junitparser = (
    importlib.import_module("junitparser") if strict_mode() else pytest.importorskip("junitparser")
)


def _need_lab() -> None:
    why = missing_prerequisites()
    require(not why, "; ".join(why))


def _cases(path: Path) -> list[object]:
    xml = junitparser.JUnitXml.fromfile(str(path))
    return [case for suite in xml for case in suite]


def _status(case: object) -> str:
    result = list(case.result)  # type: ignore[attr-defined]
    if not result:
        return "pass"
    return "skipped" if isinstance(result[0], junitparser.Skipped) else "fail"


def test_lab_run_passes_and_writes_junit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _need_lab()
    junit = tmp_path / "conformance.xml"
    code = main(["conformance", "--no-progress", "--junit", str(junit)])
    out = capsys.readouterr().out
    assert code == EXIT_OK, out
    cases = _cases(junit)
    statuses = [_status(c) for c in cases]
    assert "fail" not in statuses
    # Every scenario row appears; every column DESIGN.md says applies has a
    # passing case on the lab (a not-applicable cell never counts).
    passed = {
        (c.classname, c.name.split(":")[0])  # type: ignore[attr-defined]
        for c, st in zip(cases, statuses, strict=True)
        if st == "pass"
    }
    for s in SCENARIOS:
        assert any(c.classname == f"conformance.{s.id}" for c in cases)  # type: ignore[attr-defined]
        for column in Column:
            if isinstance(s.column(column), NotHere):
                continue
            key = (f"conformance.{s.id}", column.value)
            require(
                key in passed,
                f"{s.id} / {column.value} did not pass on the lab (n/a: a prerequisite is missing)",
            )
    suite = next(iter(junitparser.JUnitXml.fromfile(str(junit))))
    props = {p.name: p.value for p in suite.properties()}
    assert props["kernel.release"] == os.uname().release
    assert props["btrfs.fstype"] == "btrfs"
    assert props["xfs-noreflink.fstype"] == "xfs"
    assert "relatime" in props["ext4.mount_options"]
    assert "ro" in props["btrfs-ro.mount_options"].split(",")
    assert "passed, 0 failed" in out


def test_markdown_matrix(capsys: pytest.CaptureFixture[str]) -> None:
    _need_lab()
    code = main(["conformance", "--no-progress", "--markdown", "--scenario", "clone-on-cow",
                 "--scenario", "kernel-lacks-the-call"])
    out = capsys.readouterr().out
    assert code == EXIT_OK
    lines = out.splitlines()
    assert lines[0] == "| scenario | expected | real filesystem | simulated (fakefs) |"
    row = next(line for line in lines if line.startswith("| clone on a CoW fs |"))
    assert "| pass (3): btrfs, xfs reflink=1, btrfs -> bind mount of btrfs |" in row
    # The simulated clone runs through a real FICLONE (syscall layer).
    assert "| pass (2): FICLONE trapped, no errno (syscall layer, btrfs)" in row
    enosys = next(line for line in lines if line.startswith("| kernel lacks the call |"))
    assert enosys.count("n/a: ") == 1 and "pass (2): ENOSYS at FICLONE" in enosys


def test_broken_classifier_makes_the_suite_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A classifier that no longer treats EXDEV as "unsupported" must turn the
    run red: the cross-filesystem row deviates, the JUnit file says so, and
    the exit code is non-zero."""
    _need_lab()
    # The descriptor itself, whatever kind (property, cached_property): the
    # patch below is a property, which wins over any value already cached
    # in an instance's __dict__.
    good = ErrnoTable.__dict__["unsupported"]

    def broken(self: ErrnoTable) -> frozenset[int]:
        return frozenset(good.__get__(self, ErrnoTable) - {self.EXDEV})

    monkeypatch.setattr(ErrnoTable, "unsupported", property(broken))
    junit = tmp_path / "broken.xml"
    code = main(["conformance", "--no-progress", "--junit", str(junit),
                 "--scenario", "cross-filesystem", "--scenario", "clone-on-cow"])
    out = capsys.readouterr().out
    assert code == EXIT_FAILED
    assert (
        "DEVIATION cross-filesystem [real] btrfs -> xfs: expected UNSUPPORTED (EXDEV), "
        "got ERROR (EXDEV)" in out
    )
    failed = [c for c in _cases(junit) if _status(c) == "fail"]
    names = {c.name for c in failed}  # type: ignore[attr-defined]
    assert "real: btrfs -> xfs" in names and "real: btrfs -> tmpfs" in names
    # The rows the broken rule does not touch still pass: the failure is
    # the classifier's, not the runner's.
    assert all(c.classname == "conformance.cross-filesystem" for c in failed)  # type: ignore[attr-defined]


def test_dirs_mode_needs_both_and_real_directories(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["conformance", "--source-dir", str(tmp_path)]) == EXIT_USAGE
    assert "go together" in capsys.readouterr().err
    missing = tmp_path / "nope"
    argv = ["conformance", "--source-dir", str(tmp_path), "--dest-dir", str(missing)]
    assert main(argv) == EXIT_USAGE
    assert f"--dest-dir {missing}: not a directory" in capsys.readouterr().err


def test_dirs_mode_json(cowprobe_lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    src = cowprobe_lab.scratch_dir("xfs", "cli-src")
    dst = cowprobe_lab.scratch_dir("xfs", "cli-dst")
    code = main(["conformance", "--no-progress", "--json", "--source-dir", str(src),
                 "--dest-dir", str(dst), "--scenario", "clone-on-cow",
                 "--scenario", "fs-without-reflink"])
    doc = json.loads(capsys.readouterr().out)
    assert code == EXIT_OK
    by = {(c["scenario"], c["variant"]): c for c in doc["cases"]}
    assert by["clone-on-cow", "source-dir -> dest-dir"]["status"] == "pass"
    assert by["clone-on-cow", "source-dir -> dest-dir"]["observed"] == "CLONED"
    na = by["fs-without-reflink", "source-dir -> dest-dir"]
    assert na["status"] == "n/a" and "does not answer EOPNOTSUPP (it clones)" in na["detail"]
    assert doc["properties"]["source-dir.fstype"] == "xfs"
    assert list(src.iterdir()) == [] and list(dst.iterdir()) == []
