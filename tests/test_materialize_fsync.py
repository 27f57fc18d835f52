"""fsync=True in the materializer: each file synced before it is put into
place, its directory after; a failed fsync fails the job and keeps the old
dest. The FUSE mount is where fsync can be made to fail (fakefs forwards
FSYNC and FSYNCDIR to its rules) and where the order is visible (its trace).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import fakefs as fakefs_mod
from probe import JobStatus, materialize, mirror
from probe.cli import EXIT_FAILED, main


def _leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if ".cowprobe-" in p.name)


def _sources(base: Path, n: int) -> list[Path]:
    (base / "src").mkdir()
    out = []
    for i in range(n):
        p = base / "src" / f"f{i}"
        p.write_bytes(os.urandom(3000))
        out.append(p)
    return out


def test_each_file_is_synced_before_its_rename(
    fakefs: fakefs_mod.FakeFS, btrfs_dir: Path
) -> None:
    srcs = _sources(btrfs_dir, 3)
    (fakefs.backing / "wt").mkdir()
    report = materialize([(str(s), str(fakefs.mountpoint / "wt" / s.name)) for s in srcs],
                         fsync=True, workers=1)
    assert report.ok
    ops = [(e["op"], e.get("path", "")) for e in fakefs.trace()]
    for s in srcs:
        # Both calls name the file's staging temporary (a rename's trace path
        # is its old name). Match the name's start: a plain substring test
        # also found "f1" inside another file's random temp suffix.
        mine = f".{s.name}.cowprobe-"
        renames = [i for i, (op, p) in enumerate(ops)
                   if op == "rename" and Path(p).name.startswith(mine)]
        syncs = [i for i, (op, p) in enumerate(ops)
                 if op == "fsync" and Path(p).name.startswith(mine)]
        assert renames and syncs and max(syncs) < renames[0], (s.name, ops)
    assert any(op == "fsyncdir" for op, _p in ops)


def test_failed_fsync_keeps_the_old_dest(fakefs: fakefs_mod.FakeFS, btrfs_dir: Path) -> None:
    srcs = _sources(btrfs_dir, 2)
    wt = fakefs.backing / "wt"
    wt.mkdir()
    for s in srcs:
        (wt / s.name).write_bytes(b"old")
    fakefs.add_fault("fsync:*:EIO")
    report = materialize([(str(s), str(fakefs.mountpoint / "wt" / s.name)) for s in srcs],
                         fsync=True)
    assert len(report.results) == len(srcs)
    for r in report.results:
        assert r.status is JobStatus.FAILED and r.errno == errno.EIO, r
    assert [(wt / s.name).read_bytes() for s in srcs] == [b"old", b"old"]
    assert _leftovers(fakefs.backing) == []
    assert fakefs.counters()["injected"] >= 1


def test_failed_fsync_publishes_no_fresh_worktree(
    fakefs: fakefs_mod.FakeFS, btrfs_dir: Path
) -> None:
    _sources(btrfs_dir, 2)
    fakefs.add_fault("fsync:*/f1:EIO")
    report = mirror(btrfs_dir / "src", [fakefs.mountpoint / "fresh"], fsync=True)
    by_name = {Path(r.dest).name: r for r in report.files.results}
    assert by_name["f1"].status is JobStatus.FAILED and by_name["f1"].errno == errno.EIO
    # f0 made it; the worktree appears without the file whose fsync failed.
    assert by_name["f0"].ok
    assert sorted(p.name for p in (fakefs.backing / "fresh").iterdir()) == ["f0"]
    assert _leftovers(fakefs.backing) == []


def test_failed_directory_fsync_fails_the_jobs(
    fakefs: fakefs_mod.FakeFS, btrfs_dir: Path
) -> None:
    srcs = _sources(btrfs_dir, 2)
    (fakefs.backing / "wt").mkdir()
    fakefs.add_fault("fsyncdir:*:EIO")
    report = materialize([(str(s), str(fakefs.mountpoint / "wt" / s.name)) for s in srcs],
                         fsync=True)
    assert len(report.results) == len(srcs)
    for r in report.results:
        assert r.status is JobStatus.FAILED and r.errno == errno.EIO, r
        assert r.error is not None and "synced" in r.error


def test_cli_fsync_flag_reaches_the_batch(fakefs: fakefs_mod.FakeFS, btrfs_dir: Path) -> None:
    _sources(btrfs_dir, 1)
    (fakefs.backing / "wt").mkdir()
    (fakefs.backing / "wt" / "f0").write_bytes(b"old")
    fakefs.add_fault("fsync:*:EIO")
    code = main(["materialize", "--no-progress", "--fsync", str(btrfs_dir / "src"),
                 str(fakefs.mountpoint / "wt")])
    assert code == EXIT_FAILED
    assert (fakefs.backing / "wt" / "f0").read_bytes() == b"old"
