"""`cowprobe lab up | clean | matrix`, run as a user would: a subprocess."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _kernel_view import loops_under, mounts_under

from probe.cli.lab import lab_matrix
from probe.conformance import SCENARIOS, NotHere
from probe.conformance._scenarios import LAB_PLACES
from probe.lab import Lab, cleanup_stale

COWPROBE = [sys.executable, "-m", "probe.cli"]


@pytest.fixture
def base() -> Iterator[Path]:
    # Private to this test: no other engineer's reaper races the checks.
    b = Path(tempfile.mkdtemp(prefix="cowprobe-test-cli-", dir="/tmp"))
    try:
        yield b
    finally:
        cleanup_stale(b)
        assert mounts_under(b) == []
        assert list(b.iterdir()) == [], "a lab root was left behind"
        b.rmdir()


def start_up(base: Path, *kinds: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    proc = subprocess.Popen(
        [*COWPROBE, "lab", "--base-dir", str(base), "up", "--json", "--kinds", *kinds],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:  # blocks until the lab is up and printed
        lines.append(line)
        if line == "}\n":
            break
    assert lines, f"lab up printed nothing (exit {proc.wait()})"
    return proc, json.loads("".join(lines))


# SIGHUP too: the terminal went away (its sigwait once swallowed it, and the
# lab outlived its terminal with a live owner no `lab clean` may reap).
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_up_keeps_the_lab_until_a_signal_then_tears_down(base: Path, sig: signal.Signals) -> None:
    proc, doc = start_up(base, "btrfs", "xfs", "tmpfs")
    root = Path(doc["root"])
    try:
        assert [fs["kind"] for fs in doc["filesystems"]] == ["btrfs", "xfs", "tmpfs"]
        assert sorted(mounts_under(root)) == sorted(fs["mountpoint"] for fs in doc["filesystems"])
        assert len(loops_under(root)) == 2
        # While it runs it is a live lab: nobody's cleanup may touch it.
        assert cleanup_stale(base) == []
        assert len(mounts_under(root)) == 3
    finally:
        proc.send_signal(sig)
        try:
            # The timeout only bounds a process that ignored the signal.
            _, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.communicate(timeout=120)
            pytest.fail(f"lab up ignored {sig.name}: the lab stayed up with a live owner")
    assert proc.returncode == 0, err
    assert "torn down" in err
    assert mounts_under(root) == [] and loops_under(root) == [] and not root.exists()


def test_clean_removes_a_killed_lab(base: Path) -> None:
    proc, doc = start_up(base, "ext4", "tmpfs")
    root = Path(doc["root"])
    proc.kill()
    proc.communicate(timeout=120)
    assert len(mounts_under(root)) == 2  # SIGKILL: nothing was torn down

    out = subprocess.run(
        [*COWPROBE, "lab", "--base-dir", str(base), "clean", "--json"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"removed": [str(root)]}
    assert mounts_under(root) == [] and loops_under(root) == [] and not root.exists()


def test_up_names_the_missing_prerequisite(base: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        [*COWPROBE, "lab", "--base-dir", str(base), "up", "--kinds", "btrfs"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PATH": str(tmp_path)},  # no mkfs, no losetup
    )
    assert out.returncode == 1
    assert "mkfs.btrfs missing (install btrfs-progs)" in out.stderr
    assert "losetup missing" in out.stderr


# The kernel's answers DESIGN.md promises, per (scenario id, set-up label).
DESIGN = {
    ("clone-on-cow", "btrfs"): "CLONED",
    ("clone-on-cow", "xfs reflink=1"): "CLONED",
    ("clone-on-cow", "btrfs -> bind mount of btrfs"): "CLONED",
    ("fs-without-reflink", "ext4"): "UNSUPPORTED (EOPNOTSUPP)",
    ("fs-without-reflink", "tmpfs"): "UNSUPPORTED (EOPNOTSUPP)",
    ("fs-without-reflink", "xfs reflink=0"): "UNSUPPORTED (EOPNOTSUPP)",
    ("cross-filesystem", "btrfs -> xfs"): "UNSUPPORTED (EXDEV)",
    ("cross-filesystem", "btrfs -> tmpfs"): "UNSUPPORTED (EXDEV)",
    ("cross-filesystem", "ext4 -> tmpfs"): "UNSUPPORTED (EXDEV)",
    ("per-file-refusal", "btrfs NOCOW dest vs COW source"): "UNSUPPORTED (EINVAL)",
    ("source-missing-before", "btrfs"): "SOURCE_VANISHED",
    ("source-vanishes-mid-flight", "btrfs, concurrent unlink"): "SOURCE_VANISHED (ENOENT)",
    ("enoent-source-present", "dest parent missing (btrfs)"): "ERROR (ENOENT)",
    ("other-failures", "read-only bind mount"): "ERROR (EROFS)",
    ("other-failures", "immutable dest dir (chattr +i)"): "ERROR (EPERM)",
    ("other-failures", "tiny full fs, copy over an existing dest"): "ERROR (ENOSPC)",
    ("batch-one-vanished", "btrfs, first blob deleted"): "7 cloned, 1 vanished",
    ("batch-onto-non-cow", "btrfs -> ext4"): "8 copied",
}


def test_matrix_matches_design(base: Path) -> None:
    out = subprocess.run(
        [*COWPROBE, "lab", "--base-dir", str(base), "matrix", "--json"],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    doc = json.loads(out.stdout)
    assert doc["ok"] is True
    assert all(c["ok"] and c["status"] == "pass" for c in doc["cells"]), [
        c for c in doc["cells"] if c["status"] != "pass"
    ]
    cells = {(c["scenario"], c["variant"]): c["observed"] for c in doc["cells"]}
    # One matrix: exactly the conformance scenarios' lab-only real cells.
    assert list(cells) == [(s.id, v.label) for s, v in lab_matrix()]
    assert {k: cells.get(k) for k in DESIGN} == DESIGN


def test_matrix_table_for_people(base: Path) -> None:
    out = subprocess.run(
        [*COWPROBE, "lab", "--base-dir", str(base), "matrix"],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "btrfs NOCOW dest vs COW source" in out.stdout and "EINVAL" in out.stdout
    # Not a terminal: plain aligned columns, so each row's verdict starts
    # where the header's does.
    lines = out.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("scenario "))
    assert set(lines[header + 1].replace(" ", "")) == {"-"}
    at = lines[header].index("verdict")
    rows = lines[header + 2:]
    # (a long cell continues on the next lines: those have no verdict)
    verdicts = [line[at:] for line in rows if line[at:].strip()]
    assert len(verdicts) >= 10 and set(verdicts) == {"pass"}, verdicts
    assert "│" not in out.stdout  # rich stays off outside a terminal


def test_matrix_is_the_scenario_data() -> None:
    cells = lab_matrix()
    # Every lab-only real variant of the data is a cell, and nothing else is.
    expected = [
        (s.id, v.label)
        for s in SCENARIOS
        if not isinstance(s.real, NotHere)
        for v in s.real
        if {v.source, v.dest} <= LAB_PLACES
    ]
    assert [(s.id, v.label) for s, v in cells] == expected
    assert {v.source for _, v in cells} >= {"btrfs", "xfs", "ext4", "tmpfs", "xfs-noreflink"}
    assert not any(v.faults or "fakefs" in (v.source, v.dest) for _, v in cells)


def test_clean_removes_a_killed_overlay_lab(base: Path) -> None:
    # The deepest stack the lab builds: overlay over a loop-mounted squashfs
    # lower and a tmpfs upper, plus overlay over a loop XFS. SIGKILL, then
    # the reaper must take it all down in the right order.
    proc, doc = start_up(base, "overlay-squashfs", "overlay-xfs")
    root = Path(doc["root"])
    assert {fs["fstype"] for fs in doc["filesystems"]} == {"overlay"}
    proc.kill()
    proc.communicate(timeout=120)
    assert len(mounts_under(root)) == 5  # 2 overlays, squashfs, tmpfs, xfs
    assert len(loops_under(root)) == 2
    assert cleanup_stale(base) == [root]
    assert mounts_under(root) == [] and loops_under(root) == [] and not root.exists()


# ------------------------------------------------- where the lab may build
#
# A missing --base-dir is refused (exit 2, one line), never made with
# `mkdir -p`: the parents would outlive the lab, and a mistyped base (the
# mountpoint of a big scratch disk) would quietly put the images on
# whatever filesystem holds its nearest existing parent.


def _tree(top: Path) -> list[str]:
    """Everything under ``top`` (names relative to it), without following
    a symlink: what a lab made, or removed, shows in the difference."""
    return sorted(str(p.relative_to(top)) for p in top.rglob("*"))


@contextlib.contextmanager
def _theirs(base: Path) -> Iterator[Path]:
    """A directory someone else made (with a file of theirs in it), inside
    ``base``; removed again afterwards -- only once nothing is mounted
    under it, so a leaked lab is reaped, never deleted through."""
    top = base / "existing"
    top.mkdir()
    (top / "theirs").write_text("keep me\n")
    try:
        yield top
    finally:
        for deep in sorted((p for p in top.rglob("*") if p.is_dir()), reverse=True):
            cleanup_stale(deep)  # a lab the code under test left in a made dir
        if mounts_under(top) == []:
            shutil.rmtree(top)


def _up_once(base_dir: Path, *lab_args: str) -> tuple[int, str, str]:
    """``cowprobe lab --base-dir BASE_DIR up --json --kinds tmpfs``: refused,
    or built, printed and then torn down by SIGTERM (so a lab that should
    not have been built ends all the same). (exit code, stdout, stderr)."""
    proc = subprocess.Popen(
        [*COWPROBE, "lab", *lab_args, "--base-dir", str(base_dir), "up", "--json",
         "--kinds", "tmpfs"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:  # EOF at once when refused
            lines.append(line)
            if line == "}\n":
                proc.send_signal(signal.SIGTERM)
                break
        # (communicate reads the pipes' descriptors, not what the loop
        # above has buffered: that part is in `lines` already)
        rest, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, "".join(lines) + rest, err


def test_up_refuses_a_missing_base_dir_and_makes_nothing(base: Path) -> None:
    with _theirs(base) as top:
        missing = top / "new" / "deeper"
        before = _tree(base)
        code, out, err = _up_once(missing)
        after = _tree(base)
    assert after == before  # no parent made (nor left), nothing of theirs gone
    assert err == f"cowprobe lab up: --base-dir {missing}: No such file or directory\n"
    assert (code, out) == (2, "")


def test_matrix_refuses_a_missing_base_dir_and_makes_nothing(base: Path) -> None:
    with _theirs(base) as top:
        missing = top / "new"
        before = _tree(base)
        out = subprocess.run(
            [*COWPROBE, "lab", "matrix", "--base-dir", str(missing)],
            check=False, capture_output=True, text=True, timeout=300,
        )
        after = _tree(base)
    assert after == before
    assert out.stderr == f"cowprobe lab matrix: --base-dir {missing}: No such file or directory\n"
    assert (out.returncode, out.stdout) == (2, "")


def test_up_in_an_existing_nested_base_dir_removes_only_its_root(base: Path) -> None:
    # A real build in a directory the lab did not make: teardown takes the
    # lab root and nothing else -- the base dir and what sits beside it stay.
    with _theirs(base) as top:
        deep = top / "a" / "b"
        deep.mkdir(parents=True)
        before = _tree(base)
        code, out, err = _up_once(deep)
        after = _tree(base)
        assert mounts_under(deep) == [] and loops_under(deep) == []
    assert code == 0, err
    root = Path(json.loads(out)["root"])
    assert root.parent == deep and not root.exists()
    assert after == before


@pytest.mark.parametrize("reap_stale", [True, False])
def test_the_library_refuses_a_missing_base_dir_too(base: Path, reap_stale: bool) -> None:
    # One rule for `Lab(base_dir=...)` and the CLI (which only words it).
    with _theirs(base) as top:
        missing = top / "new" / "deeper"
        before = _tree(base)
        with (pytest.raises(FileNotFoundError) as caught,
              Lab(("tmpfs",), base_dir=missing, reap_stale=reap_stale)):
            pass
        after = _tree(base)
    assert caught.value.filename == str(missing)
    assert caught.value.strerror == "No such file or directory"
    assert after == before
