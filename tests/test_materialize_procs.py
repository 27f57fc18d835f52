"""Worker processes (``processes=``, ``cowprobe materialize --processes``):
the same results as in-process, really on several processes, failures and
dead children reported, and no child outliving an interrupted or killed
parent (issue 15, item 3). Real filesystems, real processes, real signals;
every wait is on an observable (a pid, a file count) with a deadline."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _files import staged_files, tree, write_file

from probe import JobStatus, materialize, mirror
from probe._liveness import start_ticks
from probe.materialize import _worker

#: one unit of work is at most 512 dest files: this many files make several
_DIRS, _PER_DIR = 8, 150


def _children(pid: int, *, zombies: bool = False) -> list[int]:
    """Children of ``pid`` from /proc: running ones, and unreaped ones too
    with ``zombies``."""
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                text = f.read()
        except OSError:
            continue
        rest = text[text.rindex(b")") + 2 :].split()
        if int(rest[1]) == pid and (zombies or rest[0] not in (b"Z", b"X")):
            kids.append(int(entry))
    return kids


def _alive(pid: int) -> bool:
    return start_ticks(pid) is not None


def _tree_jobs(base: Path) -> list[tuple[Path, Path]]:
    """A ``_tree`` under base/src and its jobs into base/wt, in tree order."""
    src, wt = base / "src", base / "wt"
    _tree(src)
    return [(src / f"d{d:02d}" / f"f{i:04d}", wt / f"d{d:02d}" / f"f{i:04d}")
            for d in range(_DIRS) for i in range(_PER_DIR)]


def _tree(src: Path, dirs: int = _DIRS, per_dir: int = _PER_DIR) -> None:
    tree(src, dirs, per_dir)


def _mixed_tree(src: Path) -> None:
    _tree(src)
    (src / "d00" / "link").symlink_to("f0000")
    (src / "d03" / "dangling").symlink_to("/nonexistent")
    (src / "empty" / "deeper").mkdir(parents=True)
    os.mkfifo(src / "d05" / "fifo")
    write_file(src / "d07" / "secret", b"s" * 100, mode=0o600)


def _normal(report: Any, wts: dict[str, str]) -> dict[str, Any]:
    """A report's content with worktree paths named by role, and without
    what legitimately differs (timings, thread and process counts)."""
    doc = report.to_dict(jobs=True)
    for key in ("seconds", "workers", "processes"):
        doc["totals"].pop(key)
    text = repr(doc)
    for path, role in wts.items():
        text = text.replace(path, role)
    return {"doc": text}


@pytest.fixture
def no_other_threads() -> Iterator[None]:
    # Forking needs a single-threaded process: a test that means to use
    # processes must not silently run in-process instead. An earlier test's
    # syscall_faults() block leaves the seccomp answering thread running
    # until the block's thread is gone; it then ends by itself.
    for t in threading.enumerate():
        if t is not threading.main_thread():
            t.join(timeout=60)
    assert threading.active_count() == 1, threading.enumerate()
    yield


def test_results_identical_to_in_process_for_a_mixed_tree(
    btrfs_dir: Path, ext4_dir: Path, no_other_threads: None
) -> None:
    src = btrfs_dir / "src"
    _mixed_tree(src)
    runs = {}
    for procs in (1, 2):
        fresh_clone = btrfs_dir / f"fresh-{procs}"  # same fs: clones
        fresh_copy = ext4_dir / f"fresh-{procs}"  # across filesystems: copies
        existing = btrfs_dir / f"existing-{procs}"  # replaced files, and a planted symlink
        (existing / "d01").mkdir(parents=True)
        write_file(existing / "d01" / "f0003", b"old")
        (existing / "d02").symlink_to("/nonexistent-target")
        report = mirror(src, [fresh_clone, fresh_copy, existing], processes=procs,
                        workers=1 if procs == 1 else None)
        runs[procs] = (report, {str(fresh_clone): "FRESH_CLONE", str(fresh_copy): "FRESH_COPY",
                                str(existing): "EXISTING"})
        for wt in (fresh_clone, fresh_copy):
            for d in range(_DIRS):
                for i in (0, _PER_DIR - 1):
                    rel = f"d{d:02d}/f{i:04d}"
                    assert (wt / rel).read_bytes() == (src / rel).read_bytes()
            assert os.readlink(wt / "d00" / "link") == "f0000"
            assert (wt / "empty" / "deeper").is_dir()
        assert (existing / "d01" / "f0003").read_bytes() == (src / "d01" / "f0003").read_bytes()
        assert os.readlink(existing / "d02") == "/nonexistent-target"
    one, two = runs[1][0], runs[2][0]
    assert one.files.processes == 1 and one.files.worker_pids == ()
    # Really several processes, and none of them this one.
    assert two.files.processes == 2
    assert len(set(two.files.worker_pids)) == 2 and os.getpid() not in two.files.worker_pids
    assert not any(_alive(p) for p in two.files.worker_pids)
    files = two.files
    assert files.cloned > 0 and files.copied > 0 and files.failed > 0
    assert {r.errno for r in files.failures} == {errno.ELOOP}
    # The ext4 pair gave up cloning after one failed call, as in-process.
    assert [p.failed_clone_calls for p in files.pairs if p.copied] == [1]
    assert _normal(two, runs[2][1]) == _normal(one, runs[1][1])


def test_a_failing_job_in_a_child_is_reported(
    btrfs_dir: Path, immutable_dir: Path, no_other_threads: None
) -> None:
    jobs = _tree_jobs(btrfs_dir)
    # The last directory's files go into an immutable one (EPERM): long
    # after the first source, which the parent runs itself.
    jobs[-5:] = [(s, immutable_dir / f"x{n}") for n, (s, _d) in enumerate(jobs[-5:])]
    report = materialize(jobs, processes=2)
    assert report.processes == 2
    failed = [r for r in report.results if r.status is JobStatus.FAILED]
    assert [(r.dest, r.errno) for r in failed] == [
        (str(immutable_dir / f"x{n}"), errno.EPERM) for n in range(5)]
    assert report.cloned == len(jobs) - 5
    assert sorted(os.listdir(immutable_dir)) == ["dst"]


def test_stop_on_error_in_a_child_stops_the_batch(
    btrfs_dir: Path, immutable_dir: Path, no_other_threads: None
) -> None:
    jobs = _tree_jobs(btrfs_dir)
    jobs[_PER_DIR + 1] = (jobs[_PER_DIR + 1][0], immutable_dir / "x")
    report = materialize(jobs, processes=2, stop_on_error=True)
    assert report.processes == 2
    assert report.failed == 1 and report.failures[0].errno == errno.EPERM
    assert report.skipped > 0
    assert report.cloned + report.failed + report.skipped == len(jobs)


def test_a_child_that_dies_fails_its_jobs_and_publishes_no_torn_file(
    btrfs_dir: Path, no_other_threads: None
) -> None:
    src = btrfs_dir / "src"
    _tree(src, dirs=20, per_dir=500)
    wt = btrfs_dir / "wt"
    killed: list[int] = []

    def kill_children(_r: object) -> None:
        # Called first for the parent's own first source, right after the
        # fork: the children have barely started.
        if not killed:
            killed.extend(_children(os.getpid()))
            for pid in killed:
                os.kill(pid, signal.SIGKILL)

    report = mirror(src, [wt], processes=2, on_result=kill_children).files
    assert len(killed) == 2 and set(killed) == set(report.worker_pids)
    failed = report.failures
    assert failed, "every job reported OK although its worker was killed"
    assert all("was killed by SIGKILL" in (r.error or "") for r in failed)
    assert report.files + len(failed) == 20 * 500
    for r in report.results:
        dest = Path(r.dest)
        if r.ok:
            assert dest.read_bytes() == Path(r.source).read_bytes()
        else:
            assert not dest.exists(), f"{dest} published although its job failed"
    assert [p.name for p in btrfs_dir.iterdir() if ".cowprobe-" in p.name] == []


@pytest.mark.parametrize(
    ("worktree", "hook"),
    [("new", "create_dest"), ("existing", "create_dest"), ("existing", "check_replaceable")],
)
def test_a_child_killed_mid_unit_reports_what_is_on_disk(
    btrfs_dir: Path, no_other_threads: None, monkeypatch: pytest.MonkeyPatch,
    worktree: str, hook: str,
) -> None:
    """Each child is SIGKILLed at its 40th file, part way through a unit
    whose results it never sends: at its create (nothing of that file made)
    or between its mark and its rename (the temporary made, not renamed).
    The 39 files before it in each child are in place and must be reported
    so; everything else FAILED with the dest as it was, and no temporary
    left anywhere."""
    src, wt = btrfs_dir / "src", btrfs_dir / "wt"
    jobs = _tree_jobs(btrfs_dir)
    if worktree == "existing":
        for _s, dest in jobs:
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(b"old")
    parent = os.getpid()
    real = getattr(_worker, hook)
    calls = [0]

    def die_at_40th(*args: Any, **kwargs: Any) -> Any:
        if os.getpid() != parent:
            calls[0] += 1  # this child's own copy of the counter
            if calls[0] == 40:
                os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)

    monkeypatch.setattr(_worker, hook, die_at_40th)
    seen: list[object] = []
    report = mirror(src, [wt], processes=2, on_result=seen.append).files
    assert len(report.worker_pids) == 2
    assert len(seen) == len(report.results) == len(jobs), "a settled job missed the callback"
    # The parent's first source, and 39 files from each child.
    assert [r.status for r in report.results].count(JobStatus.CLONED) == 1 + 2 * 39
    assert report.files == 1 + 2 * 39
    # The settled jobs count in the pair counters too: one clone call each.
    assert sum(p.cloned for p in report.pairs) == 1 + 2 * 39
    assert sum(p.clone_calls for p in report.pairs) == 1 + 2 * 39
    # Which child held which job the parent cannot know: it names both.
    assert {r.error for r in report.failures} == {"; ".join(
        f"worker process {pid} was killed by SIGKILL before reporting this job"
        for pid in report.worker_pids)}
    for r in report.results:
        dest = Path(r.dest)
        if r.ok:
            assert dest.read_bytes() == Path(r.source).read_bytes(), dest
        elif worktree == "existing":
            assert dest.read_bytes() == b"old", f"{dest} changed although its job failed"
        else:
            assert not dest.exists(), f"{dest} published although its job failed"
    assert [str(p) for p in btrfs_dir.rglob("*") if ".cowprobe-" in p.name] == []


def test_a_thread_in_the_caller_keeps_the_batch_in_process(btrfs_dir: Path) -> None:
    src = btrfs_dir / "src"
    _tree(src)
    release = threading.Event()
    t = threading.Thread(target=release.wait)
    t.start()
    try:
        report = mirror(src, [btrfs_dir / "wt"], processes=2)
    finally:
        release.set()
        t.join()
    assert report.ok and report.files.processes == 1 and report.files.worker_pids == ()


def test_bad_process_counts_are_refused(btrfs_dir: Path) -> None:
    with pytest.raises(ValueError, match="processes"):
        materialize([], processes=0)
    with pytest.raises(ValueError, match="workers and processes"):
        materialize([], processes=2, workers=2)


# --- real processes, real signals --------------------------------------------

_N_DIRS, _N_PER_DIR = 20, 1000
_LIBRARY_CALLER = """
import signal, sys
import probe

def stop(signum, frame):
    raise SystemExit(128 + signum)

signal.signal(signal.SIGTERM, stop)
probe.mirror(sys.argv[1], [sys.argv[2]], processes=2)
"""


def _leave_nothing(proc: subprocess.Popen[bytes], kids: list[int]) -> None:
    """However the test went: the batch process and its workers are gone."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for pid in _wait_gone(kids):
        os.kill(pid, signal.SIGKILL)


def _start(base: Path, caller: str) -> tuple[subprocess.Popen[bytes], list[int]]:
    """The batch in a process of its own, once its workers are forked and
    the staging is filling; (the process, its worker pids)."""
    src, wt = base / "src", base / "wt"
    _tree(src, dirs=_N_DIRS, per_dir=_N_PER_DIR)
    if caller == "cli":
        cmd = [sys.executable, "-m", "probe.cli", "materialize", "--no-progress",
               "--processes", "2", str(src), str(wt)]
    else:
        cmd = [sys.executable, "-c", _LIBRARY_CALLER, str(src), str(wt)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    kids: list[int] = []
    while len(kids) < 2 or staged_files(base, "wt") < 500:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no workers or no staging appeared"
        if len(kids) < 2:
            kids = _children(proc.pid)
        time.sleep(0.001)
    return proc, kids


def _wait_gone(pids: list[int]) -> list[int]:
    """The pids still running after a generous deadline (PR_SET_PDEATHSIG
    acts at once; the deadline only guards a hang)."""
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.005)
    return [p for p in pids if _alive(p)]


@pytest.mark.parametrize(
    ("caller", "signum"),
    [("cli", signal.SIGINT), ("cli", signal.SIGTERM), ("library", signal.SIGTERM)],
)
def test_interrupted_parent_publishes_nothing_and_leaves_no_child(
    btrfs_dir: Path, caller: str, signum: int
) -> None:
    proc, kids = _start(btrfs_dir, caller)
    try:
        proc.send_signal(signum)  # the parent only: it must stop its children
        out, err = proc.communicate(timeout=120)
        # At once, no grace period: the parent reaps its workers before it
        # removes the staging, so none can write there (or anywhere) after.
        running = [p for p in kids if _alive(p)]
    finally:
        _leave_nothing(proc, kids)
    assert proc.returncode == 128 + signum, (out, err)
    assert b"Traceback" not in err
    assert running == []
    wt = btrfs_dir / "wt"
    assert not wt.exists(), f"{len(list(wt.rglob('f*')))} files published"
    assert [p.name for p in btrfs_dir.iterdir() if ".cowprobe-" in p.name] == []


def test_an_exception_in_the_parent_reaps_every_child_first(
    btrfs_dir: Path, no_other_threads: None
) -> None:
    src, wt = btrfs_dir / "src", btrfs_dir / "wt"
    _tree(src, dirs=20, per_dir=500)
    seen: list[int] = []

    def interrupt(_r: object) -> None:
        seen.extend(_children(os.getpid()))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        mirror(src, [wt], processes=2, on_result=interrupt)
    # Not one left running or unreaped: the staging was removed only after
    # nothing could write into it any more.
    assert len(seen) == 2
    assert _children(os.getpid(), zombies=True) == []
    assert not wt.exists()
    assert [p.name for p in btrfs_dir.iterdir() if ".cowprobe-" in p.name] == []


def test_sigkilled_parent_leaves_no_child(btrfs_dir: Path) -> None:
    proc, kids = _start(btrfs_dir, "cli")
    try:
        # Stopped, a worker can neither finish nor notice its report pipe
        # break (both of which would end it without PR_SET_PDEATHSIG); only
        # the SIGKILL the kernel sends it when its parent dies ends it.
        for pid in kids:
            os.kill(pid, signal.SIGSTOP)
        proc.kill()
        proc.wait()
        left = _wait_gone(kids)
    finally:
        _leave_nothing(proc, kids)
    assert left == [], f"worker processes {left} outlived their SIGKILLed parent"
