"""What the materializer reports is what happened, checked through faults at
the real system calls (fakefs's syscall layer, on lab btrfs): a clone that
fails for real is counted as a clone call, and a publish whose merge fails
part way reports the entries that did reach their place as done, and two
jobs writing one file by two paths are refused before anything is written."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import pytest
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


def _listing(root: Path) -> dict[str, bytes | str]:
    return {str(p.relative_to(root)): (os.readlink(p) if p.is_symlink() else
                                       p.read_bytes() if p.is_file() else "dir")
            for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("wt/dl/g", "wt/d/g"),  # dl -> d: the same directory through a symlink
        ("wt/a/../d/g", "wt/d/g"),  # ".." over an existing directory
        ("wt/dl/new/g", "wt/d/new/g"),  # a missing directory staged under each
    ],
)
def test_one_file_by_two_paths_is_refused_before_anything_is_written(
    btrfs_dir: Path, first: str, second: str
) -> None:
    # Without the check both jobs reported success and the file held only
    # the second one's bytes: the first job's report was a lie.
    a, b = _sources(btrfs_dir / "src", ["a", "b"])
    (btrfs_dir / "wt" / "d").mkdir(parents=True)
    (btrfs_dir / "wt" / "a").mkdir()
    (btrfs_dir / "wt" / "dl").symlink_to("d")
    before = _listing(btrfs_dir)
    with pytest.raises(ValueError, match=re.escape(
            f"job 1: destination '{btrfs_dir}/{second}' is the file job 0 writes as "
            f"'{btrfs_dir}/{first}'")):
        materialize([(str(a), f"{btrfs_dir}/{first}"), (str(b), f"{btrfs_dir}/{second}")])
    assert _listing(btrfs_dir) == before


def test_two_files_in_one_directory_by_two_paths_both_land(btrfs_dir: Path) -> None:
    # Two spellings of one (missing) directory: each is staged, the second
    # merged into the first's published directory; both files are there.
    a, b = _sources(btrfs_dir / "src", ["a", "b"])
    (btrfs_dir / "wt" / "d").mkdir(parents=True)
    (btrfs_dir / "wt" / "dl").symlink_to("d")
    report = materialize([(str(a), f"{btrfs_dir}/wt/dl/new/f"),
                          (str(b), f"{btrfs_dir}/wt/d/new/g")])
    assert report.ok, report.results
    assert sorted(os.listdir(btrfs_dir / "wt" / "d" / "new")) == ["f", "g"]
    assert (btrfs_dir / "wt" / "d" / "new" / "f").read_bytes() == a.read_bytes()
    assert (btrfs_dir / "wt" / "d" / "new" / "g").read_bytes() == b.read_bytes()
