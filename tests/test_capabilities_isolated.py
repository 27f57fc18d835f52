"""The isolated probe (``isolate=True``; ``--timeout`` on the command line):
the probe runs in a child interpreter, so its time limit holds even inside a
call the filesystem never answers, and the report says where it stopped and
what it may have left behind."""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _fakefs_util import fakefs_over

from probe.capabilities import (
    PRIVATE_PREFIX,
    CapabilityReport,
    PairReport,
    ProbePathError,
    Status,
    probe_capabilities,
    probe_pair,
)
from probe.cli import EXIT_USAGE, main
from probe.lab import Lab

C = Status.COULD_NOT_TELL
#: One create that the daemon answers only after this long: a stalled
#: server, as far as the probe can tell.
STALL = 5.0


@pytest.fixture
def fake(cowprobe_lab: Lab) -> Iterator[tuple[Any, Path, Path]]:
    yield from fakefs_over(cowprobe_lab, "btrfs")


def _answers(rep: CapabilityReport | PairReport) -> list[tuple[str, Status, int | None]]:
    return [(c.name, c.status, c.errno) for c in rep.capabilities]


def test_an_isolated_probe_answers_as_one_in_this_process(btrfs_dir: Path) -> None:
    here = probe_capabilities(btrfs_dir)
    there = probe_capabilities(btrfs_dir, isolate=True, timeout=60)
    assert _answers(there) == _answers(here)
    assert there.identity is not None and here.identity is not None
    assert (there.identity.device, there.identity.mount_point, there.identity.magic) == (
        here.identity.device, here.identity.mount_point, here.identity.magic)
    assert there.leftover is None
    (btrfs_dir / "b").mkdir()
    pair = probe_pair(btrfs_dir, btrfs_dir / "b", isolate=True)
    assert _answers(pair) == _answers(probe_pair(btrfs_dir, btrfs_dir / "b"))
    assert sorted(p.name for p in btrfs_dir.iterdir()) == ["b"]


def test_bad_input_is_refused_as_in_this_process(tmp_path: Path) -> None:
    with pytest.raises(ProbePathError, match="no such directory"):
        probe_capabilities(tmp_path / "missing", isolate=True, timeout=5)
    with pytest.raises(ValueError, match="hook"):
        probe_capabilities(tmp_path, isolate=True, hook=lambda name, ctx: None)
    assert list(tmp_path.iterdir()) == []


def _stuck_pid(leftover: str) -> int | None:
    m = re.search(r"the probe process (\d+) is stuck", leftover)
    return int(m.group(1)) if m else None


def _settle(leftover: str, mnt: Path, backing: Path) -> None:
    """What the report says is left is what is left, once the stuck child
    is gone; then remove it, as the report tells a person to."""
    pid = _stuck_pid(leftover)
    if pid is not None:
        os.waitpid(pid, 0)  # ends when the stalled create returns
    named = re.findall(rf"{re.escape(str(mnt))}/(\S+) may be left behind", leftover)
    left = sorted(str(p.relative_to(backing)) for p in backing.rglob(f"{PRIVATE_PREFIX}*"))
    assert sorted(named) == left
    for rel in left:
        shutil.rmtree(backing / rel)


@pytest.mark.parametrize("kind", ["directory", "pair"])
def test_a_call_the_filesystem_never_answers_is_cut_off(
        fake: tuple[Any, Path, Path], kind: str) -> None:
    fs, mnt, backing = fake
    if kind == "pair":
        (mnt / "a").mkdir()
        (mnt / "b").mkdir()
    fs.add_fault(f"create:*:delay={STALL}s:times=1")
    t0 = time.perf_counter()
    rep: CapabilityReport | PairReport = (
        probe_capabilities(mnt, timeout=0.5, isolate=True) if kind == "directory"
        else probe_pair(mnt / "a", mnt / "b", timeout=0.5, isolate=True))
    took = time.perf_counter() - t0
    # The first create never came back in time: the time limit held inside
    # it (half a second, the grace steps, and well short of the stall).
    assert took < STALL / 2, took
    assert all(c.status is C for c in rep.capabilities)
    first, *rest = rep.capabilities
    assert "did not answer within 0.5 s: stopped while this was being probed" in (
        first.reason or ""), first
    assert all((c.reason or "").startswith("not probed: ") for c in rep.capabilities[1:])
    assert rest
    if isinstance(rep, CapabilityReport):
        assert rep.identity is not None and rep.identity.magic_name == "fuse"
    assert rep.leftover is not None and "may be left behind" in rep.leftover
    _settle(rep.leftover, mnt, backing)


def test_report_timeout_on_the_command_line_is_a_hard_bound(
        fake: tuple[Any, Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    fs, mnt, backing = fake
    fs.add_fault(f"create:*:delay={STALL}s:times=1")
    t0 = time.perf_counter()
    code = main(["report", str(mnt), "--timeout", "0.5", "--format", "json"])
    took = time.perf_counter() - t0
    out, err = capsys.readouterr()
    assert took < STALL / 2, took
    (col,) = json.loads(out)["filesystems"]
    reasons = [c["reason"] for c in col["capabilities"].values()]
    assert "stopped while this was being probed" in reasons[0]
    assert code == 1 and "may be left behind" in err  # probe files not removed: exit 1
    _settle(col["leftover"], mnt, backing)


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(x) for x in f.read().split()]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_killed_command_leaves_no_probe_directory(
        fake: tuple[Any, Path, Path], sig: signal.Signals) -> None:
    # A signal to cowprobe while its probe child waits in a create. SIGKILL:
    # the child dies with its parent as SIGTERM (PDEATHSIG). SIGTERM: the
    # command stops its child itself and exits 143. Either way, once the
    # create returns the child removes its private directory and goes -- it
    # starts no further capability (an orphan would go on probing for nobody).
    fs, mnt, backing = fake
    rid = fs.add_fault("create:*:delay=500ms:times=1")
    fs.clear_trace()
    cli = subprocess.Popen([sys.executable, "-m", "probe.cli", "report", str(mnt),
                            "--timeout", "60"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not any(r["id"] == rid and r["hits"] for r in fs.faults()):
            assert cli.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)  # polling the daemon's count, not waiting in its place
        (child,) = _children(cli.pid)
        pidfd = os.pidfd_open(child)
        cli.send_signal(sig)
        _out, err = cli.communicate(timeout=30)
        if sig == signal.SIGTERM:
            # The command waited for its child's clean-up before it exited:
            # when `timeout 10 cowprobe report ...` returns, nothing is left.
            assert list(backing.rglob(f"{PRIVATE_PREFIX}*")) == []
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        assert poller.poll(30_000), "the probe child outlived its parent"
        os.close(pidfd)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    assert cli.returncode == (-signal.SIGKILL if sig == signal.SIGKILL else 128 + sig), err
    if sig == signal.SIGTERM:
        assert err.strip().splitlines()[-1] == "cowprobe: terminated (SIGTERM)"
    assert list(backing.rglob(f"{PRIVATE_PREFIX}*")) == []
    assert [r["op"] for r in fs.trace()].count("create") == 1


def test_a_child_that_never_starts_is_not_blamed_on_the_filesystem(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An interpreter that never gets going (here: a process that only
    # waits to be stopped) is the machine's fault: the report must say so,
    # not "the filesystem did not answer", and nothing was created.
    fake_python = tmp_path / "python"
    fake_python.write_text("#!/bin/sh\nexec sleep 600\n")
    fake_python.chmod(0o755)
    probed = tmp_path / "probed"
    probed.mkdir()
    monkeypatch.setattr(sys, "executable", str(fake_python))
    rep = probe_capabilities(probed, timeout=0.2, isolate=True)
    assert {c.reason for c in rep.capabilities} == {
        "not probed: the probe process did not start within 0.2 s"}
    assert rep.identity is None and rep.leftover is None
    assert list(probed.iterdir()) == []


def test_report_timeout_also_bounds_the_check_of_each_path(
        fake: tuple[Any, Path, Path], btrfs_dir: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    # The command checks every PATH before it probes any (a typo in the
    # third writes nothing); under --timeout that check cannot hang either,
    # and a path that does not answer it is a column of its own, "could
    # not tell" and why, beside the paths that did answer -- not exit 2.
    # A pair holding it is that check's outcome too: probing it would
    # wait the limit out again, behind the stalled lookup.
    fs, mnt, backing = fake
    (backing / "d").mkdir()  # made behind the mount: its first stat is a LOOKUP
    fs.add_fault(f"lookup:d:delay={STALL}s:times=1")
    t0 = time.perf_counter()
    code = main(["report", "--format", "json", str(mnt / "d"), str(btrfs_dir),
                 "--pair", str(btrfs_dir), str(mnt / "d"), "--timeout", "0.5"])
    took = time.perf_counter() - t0
    out, err = capsys.readouterr()
    assert took < STALL / 2, took
    doc = json.loads(out)
    hung, fine = doc["filesystems"]
    late = "the filesystem did not answer within 0.5 s (opening the directory)"
    why = f"not probed: {late}"
    assert hung["path"] == str(mnt / "d") and hung["limitation"] == why
    assert {(c["status"], c["reason"]) for c in hung["capabilities"].values()} == {
        (C.value, why)}
    assert fine["path"] == str(btrfs_dir)
    assert fine["capabilities"]["reflink"]["status"] == Status.SUPPORTED.value
    (pair,) = doc["pairs"]
    pair_why = f"not probed: {mnt / 'd'}: {late}"
    assert (pair["source"], pair["dest"], pair["limitation"]) == (
        str(btrfs_dir), str(mnt / "d"), pair_why)
    assert {(c["status"], c["reason"]) for c in pair["capabilities"].values()} == {
        (C.value, pair_why)}
    assert pair["leftover"] is None  # a stuck check is named once, by the column
    pid = _stuck_pid(hung["leftover"] or "")
    # Exit 1 exactly when the report names something left (a stuck check).
    assert code == (1 if hung["leftover"] else 0), (code, err)
    if pid is not None:
        assert f"warning: {hung['leftover']}" in err
        os.waitpid(pid, 0)
    assert list((backing / "d").iterdir()) == []
    assert list(btrfs_dir.iterdir()) == []


def test_report_timeout_still_refuses_a_missing_path(
        btrfs_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["report", str(btrfs_dir), str(btrfs_dir / "typo"), "--timeout", "5"])
    out, err = capsys.readouterr()
    assert code == EXIT_USAGE and out == ""
    assert err.strip() == f"cowprobe report: {btrfs_dir / 'typo'}: no such directory"
    assert list(btrfs_dir.iterdir()) == []
