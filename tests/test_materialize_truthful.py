"""What the materializer reports is what happened, checked through faults at
the real system calls (fakefs's syscall layer, on lab btrfs): a clone that
fails for real is counted as a clone call, and a publish whose merge fails
part way reports the entries that did reach their place as done."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from _fresh import fresh_thread

import fakefs
from probe import JobResult, JobStatus, materialize


def _sources(src: Path, names: list[str]) -> list[Path]:
    files = []
    for name in names:
        f = src / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(os.urandom(8192))
        files.append(f)
    return files


@fresh_thread
def test_a_real_error_from_the_clone_fails_the_job_and_counts_the_call(btrfs_dir: Path) -> None:
    a, b = _sources(btrfs_dir / "src", ["a", "b"])
    wt = btrfs_dir / "wt"
    # wt does not exist, so its files are cloned into a staged copy of it:
    # the glob matches b there, whatever the staged directory is called.
    with fakefs.syscall_faults(["FICLONE:*/b:ENOSPC"], root=btrfs_dir) as h:
        report = materialize([(str(a), str(wt / "a")), (str(b), str(wt / "b"))], workers=1)
    ra, rb = report.results
    assert ra.status is JobStatus.CLONED, ra
    assert rb.status is JobStatus.FAILED and rb.errno == errno.ENOSPC, rb
    assert [f["hits"] for f in h.faults()] == [1]  # the ENOSPC reached the clone
    assert (report.clone_calls, report.failed_clone_calls) == (2, 1)
    assert sorted(os.listdir(wt)) == ["a"]


@fresh_thread
def test_a_merge_failing_part_way_reports_what_reached_its_place(btrfs_dir: Path) -> None:
    src = btrfs_dir / "src"
    f0, f1 = _sources(src, ["d0/f", "d1/f"])
    wt = btrfs_dir / "wt"

    def on_result(_r: JobResult) -> None:
        # Someone else makes the worktree while our staged copy of it fills:
        # the publish must merge into theirs, entry by entry.
        if not wt.exists():
            wt.mkdir()
            (wt / "theirs").write_bytes(b"theirs")

    # The staged root lists d0 before d1 (btrfs reads a directory in
    # creation order), so d0 is in place when the move of d1 fails.
    with fakefs.syscall_faults(["rename,renameat,renameat2:wt/d1:EIO"], root=btrfs_dir) as h:
        report = materialize([(str(f0), str(wt / "d0" / "f")), (str(f1), str(wt / "d1" / "f"))],
                             workers=1, on_result=on_result)
    r0, r1 = report.results
    assert [f["hits"] for f in h.faults()] == [1]
    assert r0.status is JobStatus.CLONED, r0
    assert (wt / "d0" / "f").read_bytes() == f0.read_bytes()
    assert r1.status is JobStatus.FAILED and r1.errno == errno.EIO, r1
    assert sorted(os.listdir(wt)) == ["d0", "theirs"]
    # The rest of the staged tree was taken back, not left hidden beside wt.
    assert sorted(os.listdir(btrfs_dir)) == ["src", "wt"]
