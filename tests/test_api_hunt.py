"""Findings of a hostile-user sweep of the library API, each pinned on real
filesystems: one path where a list of worktrees was wanted, a str job, a
file whose size says 0 while it has bytes, and a Ctrl-C landing between a
temporary's close and its rename."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from _files import open_fds, write_file

import probe
from probe import JobStatus


def _temporaries(d: Path) -> list[str]:
    return sorted(n for n in os.listdir(d) if ".cowprobe-" in n)


# --------------------------------------------------------------- arguments


def test_one_path_as_worktrees_is_refused(btrfs_dir: Path) -> None:
    # Iterated, "/…/wt" was the worktrees "/", "t", "m", "p", ...: "/" holds
    # every path, so a dest outside wt was written.
    write_file(btrfs_dir / "a", b"A")
    (btrfs_dir / "wt").mkdir()
    outside = btrfs_dir / "elsewhere"
    for one in (str(btrfs_dir / "wt"), btrfs_dir / "wt"):
        with pytest.raises(TypeError, match="worktrees must be a list of paths, not one path"):
            probe.materialize([(btrfs_dir / "a", outside)], worktrees=one)  # type: ignore[arg-type]
    assert not outside.exists()
    assert os.listdir(btrfs_dir / "wt") == []


@pytest.mark.parametrize(("option", "value", "error"), [
    ("workers", True, TypeError), ("workers", 1.5, TypeError), ("processes", 2.5, TypeError),
    ("workers", 0, ValueError), ("processes", -1, ValueError),
])
def test_worker_counts_are_whole_numbers(btrfs_dir: Path, option: str, value: object,
                                         error: type[Exception]) -> None:
    # workers=True passed a "< 1" check and came back as "workers=True" in
    # the report; 1.5 failed late in a range() (after the plan was made).
    write_file(btrfs_dir / "a", b"A")
    with pytest.raises(error, match=f"^{option} must be"):
        probe.materialize([(btrfs_dir / "a", btrfs_dir / "b")], **{option: value})  # type: ignore[arg-type]
    assert not (btrfs_dir / "b").exists()


def test_a_str_job_is_no_pair(btrfs_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # "xy" unpacks into ("x", "y"): one pair passed where a list of pairs is
    # wanted, ("ab", "cd"), copied a to b and c to d.
    monkeypatch.chdir(btrfs_dir)
    for name in ("a", "c", "x"):
        write_file(btrfs_dir / name, name.encode())
    for jobs in (["xy"], ("ab", "cd")):
        with pytest.raises(TypeError, match="job 0: expected a \\(source, dest\\) pair"):
            probe.materialize(jobs)  # type: ignore[arg-type]
    assert sorted(os.listdir(btrfs_dir)) == ["a", "c", "x"]


# --------------------------------------------------------------- bytes


def test_a_file_claiming_size_zero_is_copied_whole(btrfs_dir: Path) -> None:
    # /proc files say st_size 0 and have bytes: the batch copied none and
    # reported COPIED, where clone_or_copy (and cp) copy them whole.
    src = "/proc/version"
    want = Path(src).read_bytes()
    assert os.stat(src).st_size == 0 and want
    res = probe.materialize([(src, btrfs_dir / "v1"), (src, btrfs_dir / "v2")])
    assert [r.status for r in res.results] == [JobStatus.COPIED, JobStatus.COPIED]
    assert [r.bytes for r in res.results] == [len(want), len(want)]
    assert (btrfs_dir / "v1").read_bytes() == want
    assert (btrfs_dir / "v2").read_bytes() == want


def test_a_really_empty_file_still_copies_as_empty(btrfs_dir: Path, ext4_dir: Path) -> None:
    write_file(btrfs_dir / "empty", b"")
    res = probe.materialize([(btrfs_dir / "empty", ext4_dir / "e")])
    assert [(r.status, r.bytes) for r in res.results] == [(JobStatus.COPIED, 0)]
    assert (ext4_dir / "e").read_bytes() == b""


# --------------------------------------------------------------- Ctrl-C


@contextmanager
def _sigint_at(event: str, func: Any, caller: str) -> Iterator[None]:
    """A real SIGINT (Python's own handler raises KeyboardInterrupt) as the
    first call of ``func`` from the function ``caller`` is made ("c_call")
    or returns ("c_return") in this thread: where a Ctrl-C arriving during
    that syscall is raised. Deterministic, no timing."""

    def hook(frame: FrameType, ev: str, arg: Any) -> None:
        if ev == event and arg is func and frame.f_code.co_name == caller:
            sys.setprofile(None)
            signal.raise_signal(signal.SIGINT)

    sys.setprofile(hook)
    try:
        yield
    finally:
        sys.setprofile(None)


@pytest.mark.parametrize(
    ("event", "func", "caller", "replaced"),
    [
        ("c_return", os.open, "create_dest", False),  # the temporary just made
        ("c_return", os.close, "run_unit", False),  # closed, not yet renamed
        ("c_return", os.stat, "check_replaceable", False),
        ("c_call", os.replace, "run_unit", False),
        ("c_return", os.replace, "run_unit", True),  # renamed: the new file stays
    ],
    ids=["create", "close", "check", "before-rename", "after-rename"],
)
def test_ctrl_c_leaves_no_temporary_in_an_existing_directory(
    btrfs_dir: Path, event: str, func: Any, caller: str, replaced: bool
) -> None:
    # The temporary's owner (this process) lives on, so no later run would
    # ever reap it: it stayed beside the user's files for good.
    src, wt = btrfs_dir / "src", btrfs_dir / "wt"
    src.mkdir()
    wt.mkdir()
    for i in range(3):
        write_file(src / f"f{i}", b"new %d" % i)
    write_file(wt / "f0", b"old")
    jobs = [(src / f"f{i}", wt / f"f{i}") for i in range(3)]
    fds = open_fds()
    with _sigint_at(event, func, caller), pytest.raises(KeyboardInterrupt):
        probe.materialize(jobs, workers=1)
    assert _temporaries(wt) == []
    assert os.listdir(wt) == ["f0"]
    assert (wt / "f0").read_bytes() == (b"new 0" if replaced else b"old")
    if caller != "create_dest":  # there the descriptor is lost with the call's result
        assert open_fds() == fds


_PROCESSES_CALLER = """
import json, os, signal, sys
import probe

src, wt, flag = sys.argv[1:4]
parent = os.getpid()

def hook(frame, event, arg):
    # In one worker process, once its first file is closed: Ctrl-C for the
    # parent, which then SIGTERMs its children -- this one while it waits
    # here, between the close and the rename.
    if (event == "c_return" and arg is os.close and frame.f_code.co_name == "run_unit"
            and os.getpid() != parent):
        try:
            os.close(os.open(flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
        sys.setprofile(None)
        os.kill(parent, signal.SIGINT)
        signal.pause()

jobs = [(os.path.join(src, d, f), os.path.join(wt, d + f))
        for d in sorted(os.listdir(src)) for f in sorted(os.listdir(os.path.join(src, d)))]
sys.setprofile(hook)
try:
    probe.materialize(jobs, processes=2)
    print(json.dumps({"interrupted": False}))
except KeyboardInterrupt:
    sys.setprofile(None)
    print(json.dumps({"interrupted": True,
                      "left": sorted(n for n in os.listdir(wt) if ".cowprobe-" in n)}))
"""


def test_ctrl_c_leaves_no_worker_process_temporary(btrfs_dir: Path, tmp_path: Path) -> None:
    # A worker process stopped by the parent's SIGTERM between a file's
    # close and its rename left its temporary: the parent, interrupted,
    # settles no dead child's files.
    src, wt = btrfs_dir / "src", btrfs_dir / "wt"
    for d in ("d0", "d1"):  # two source directories: two units, two workers
        (src / d).mkdir(parents=True)
        for i in range(3):
            write_file(src / d / f"f{i}", b"%s %d" % (d.encode(), i))
    wt.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", _PROCESSES_CALLER, str(src), str(wt), str(tmp_path / "flag")],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "flag").exists(), "no worker process ran a job"
    assert json.loads(proc.stdout) == {"interrupted": True, "left": []}
    assert _temporaries(wt) == []
