"""probe.materialize against faults injected by fakefs (vanish, EIO, ENOSPC).

A FUSE mount never clones (the kernel answers EXDEV/EOPNOTSUPP itself), so
these tests are about what the batch does around the clone: whether a
vanished source touches the reflink state, and whether a failing copy
fallback leaves partial files or damages an existing dest.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

import fakefs as fakefs_mod
from probe.materialize import materialize
from probe.materialize._report import JobStatus


def _leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if ".cowprobe-" in p.name]


def test_vanish_mid_batch_leaves_reflinks_on(fakefs: fakefs_mod.FakeFS, btrfs_dir: Path) -> None:
    # Sources written to the backing store directly, so the mount's first
    # lookup of each is the one the vanish rule fires on.
    for i in range(4):
        (fakefs.backing / f"s{i}").write_bytes(os.urandom(5000) + bytes([i]))
    local = btrfs_dir / "local"
    local.mkdir()
    for i in range(4):
        (local / f"b{i}").write_bytes(os.urandom(6000))
    fakefs.add_fault("lookup:s0:vanish")
    out = btrfs_dir / "out"
    jobs = []
    for i in range(4):
        jobs.append((str(local / f"b{i}"), str(out / f"b{i}")))
        jobs.append((str(fakefs.mountpoint / f"s{i}"), str(out / f"s{i}")))
    report = materialize(jobs, workers=1)
    by_dest = {Path(r.dest).name: r for r in report.results}
    gone = by_dest["s0"]
    assert gone.status is JobStatus.VANISHED
    assert gone.errno == errno.ENOENT and gone.path == str(fakefs.mountpoint / "s0")
    assert not (out / "s0").exists()
    # btrfs -> btrfs kept cloning after the vanish, without a failed call.
    for i in range(4):
        assert by_dest[f"b{i}"].status is JobStatus.CLONED
        assert (out / f"b{i}").read_bytes() == (local / f"b{i}").read_bytes()
    pairs = {p.source_dev: p for p in report.pairs}
    fuse_dev = os.stat(fakefs.mountpoint / "s1").st_dev
    btrfs_pair = pairs[os.stat(local).st_dev]
    assert btrfs_pair.failed_clone_calls == 0 and btrfs_pair.disabled_errno is None
    # The vanish did not switch the fakefs pair off either: its first clone
    # syscall came from s1, after the vanish, and the kernel's EXDEV did.
    fuse_pair = pairs[fuse_dev]
    assert fuse_pair.clone_calls == 1 and fuse_pair.disabled_errno == errno.EXDEV
    for i in range(1, 4):
        assert by_dest[f"s{i}"].status is JobStatus.COPIED
        assert (out / f"s{i}").read_bytes() == (fakefs.backing / f"s{i}").read_bytes()


def test_eio_on_read_during_copy_keeps_existing_dest(
    fakefs: fakefs_mod.FakeFS, btrfs_dir: Path
) -> None:
    (fakefs.backing / "bad").write_bytes(os.urandom(300_000))
    (fakefs.backing / "good").write_bytes(os.urandom(300_000))
    wt = btrfs_dir / "wt"
    wt.mkdir()
    (wt / "bad").write_bytes(b"old contents")
    fakefs.add_fault("read:bad:EIO")
    report = materialize(
        [(str(fakefs.mountpoint / n), str(wt / n)) for n in ("bad", "good")], workers=1
    )
    bad, good = report.results
    assert bad.status is JobStatus.FAILED and bad.errno == errno.EIO
    assert bad.path == str(fakefs.mountpoint / "bad")
    assert (wt / "bad").read_bytes() == b"old contents"
    assert good.status is JobStatus.COPIED
    assert (wt / "good").read_bytes() == (fakefs.backing / "good").read_bytes()
    assert _leftovers(wt) == []
    assert fakefs.counters()["injected"] >= 1


def test_enospc_on_write_during_copy_leaves_no_partial_file(
    fakefs: fakefs_mod.FakeFS, btrfs_dir: Path
) -> None:
    src = btrfs_dir / "src"
    src.mkdir()
    (src / "a").write_bytes(os.urandom(200_000))
    (src / "b").write_bytes(os.urandom(200_000))
    existing = fakefs.backing / "old"
    existing.mkdir()
    (existing / "a").write_bytes(b"keep me")
    fakefs.add_fault("write:*:ENOSPC")
    report = materialize(
        [
            (str(src / "a"), str(fakefs.mountpoint / "old" / "a")),
            (str(src / "b"), str(fakefs.mountpoint / "new" / "sub" / "b")),
        ],
        workers=1,
    )
    for r in report.results:
        assert r.status is JobStatus.FAILED and r.errno == errno.ENOSPC, r
        # ENOSPC is an error, never a silent fallback or a partial dest.
    assert (existing / "a").read_bytes() == b"keep me"
    assert _leftovers(existing) == []
    # The directory made for the failed job is taken back, not left hidden.
    assert sorted(p.name for p in fakefs.backing.iterdir()) == ["old"]


# --- failure paths found by the fault-schedule torture (tests/torture) ----


def _cowprobe_entries(root: Path) -> list[str]:
    """Every temporary or staged name below ``root``, at any depth."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if ".cowprobe-" in p.name)


def _local_source(fakefs: fakefs_mod.FakeFS, name: str, size: int) -> Path:
    # Beside the mount, not on it: only the dest side is under test here.
    src = fakefs.backing.parent / "src" / name
    src.parent.mkdir(exist_ok=True)
    src.write_bytes(os.urandom(size))
    return src


def test_temporary_is_removed_when_the_create_fails_after_making_it(
    fakefs: fakefs_mod.FakeFS,
) -> None:
    # FUSE's open(O_CREAT) is a CREATE followed by a GETATTR; failing the
    # GETATTR fails the open, but the file exists. remove_created() could
    # not have removed it (no descriptor), so the job must unlink it by name.
    src = _local_source(fakefs, "a", 70_001)
    (fakefs.backing / "wt").mkdir()
    fakefs.add_fault("getattr:wt/.a.cowprobe-*.tmp:EIO:nth=1")
    (res,) = materialize([(str(src), str(fakefs.mountpoint / "wt" / "a"))], workers=1).results
    assert res.status is JobStatus.FAILED and res.errno == errno.EIO, res
    assert res.path == str(fakefs.mountpoint / "wt" / "a")
    assert fakefs.counters()["injected"] == 1
    assert sorted(os.listdir(fakefs.backing / "wt")) == []


def test_failed_job_in_a_staged_directory_is_not_published(fakefs: fakefs_mod.FakeFS) -> None:
    # In a staged directory the dest is made under its final name; a job
    # failing after its create must take the file back, or the publish
    # renames a torn file into place beside its finished siblings.
    a = _local_source(fakefs, "a", 70_001)
    b = _local_source(fakefs, "b", 13)
    fakefs.add_fault("getattr:.new.cowprobe-*.tmp/a:EIO:nth=1")
    report = materialize(
        [(str(a), str(fakefs.mountpoint / "new" / "a")),
         (str(b), str(fakefs.mountpoint / "new" / "b"))],
        workers=1,
    )
    ra, rb = report.results
    assert ra.status is JobStatus.FAILED and ra.errno == errno.EIO, ra
    assert rb.status is JobStatus.COPIED, rb
    assert sorted(os.listdir(fakefs.backing / "new")) == ["b"]
    assert (fakefs.backing / "new" / "b").read_bytes() == b.read_bytes()
    assert _cowprobe_entries(fakefs.backing) == []


def test_failed_fstat_of_a_new_staged_directory_removes_it(
    fakefs: fakefs_mod.FakeFS,
) -> None:
    # The second GETATTR of the staged root is the fstat that describes it,
    # after the directory was made and opened.
    a = _local_source(fakefs, "a", 100)
    fakefs.add_fault("getattr:.new.cowprobe-*.tmp:EIO:nth=2")
    (res,) = materialize([(str(a), str(fakefs.mountpoint / "new" / "a"))], workers=1).results
    assert res.status is JobStatus.FAILED and res.errno == errno.EIO, res
    assert fakefs.counters()["injected"] == 1
    assert os.listdir(fakefs.backing) == []


@pytest.mark.parametrize("errname", ["EIO", "ENOSPC", "EACCES"])
def test_publish_failure_fails_the_jobs_and_removes_the_staged_tree(
    fakefs: fakefs_mod.FakeFS, errname: str
) -> None:
    a = _local_source(fakefs, "a", 70_001)
    b = _local_source(fakefs, "b", 13)
    fakefs.add_fault(f"rename:.new.cowprobe-*.tmp:{errname}")
    report = materialize(
        [(str(a), str(fakefs.mountpoint / "new" / "a")),
         (str(b), str(fakefs.mountpoint / "new" / "x" / "b"))],
        workers=1,
    )
    for r in report.results:
        assert r.status is JobStatus.FAILED and r.errno == getattr(errno, errname), r
        assert r.path is not None and r.path.startswith(str(fakefs.mountpoint / "new"))
    # Finished files and all: the staged tree is private, so it goes, rather
    # than stay as a hidden directory that nothing will ever remove.
    assert os.listdir(fakefs.backing) == []


# nth=2: the GETATTR of the root in the open of the root itself (the first
# is in the open of the missing dir), so the batch stages the mount point and
# the publish then meets it, on another filesystem: the merge branch. No
# nth: every GETATTR of the root fails, the publish's open of it too.
@pytest.mark.parametrize("trigger", [":nth=2", ""])
def test_enoent_for_the_mount_root_reports_enoent_and_leaves_nothing_outside(
    fakefs: fakefs_mod.FakeFS, trigger: str
) -> None:
    # A FUSE root whose GETATTR says ENOENT looks missing, so the batch
    # stages it -- in the directory holding the mount point, another
    # filesystem. The publish must then report the lookup's ENOENT (not
    # the EXDEV of a merge across the mount) and take the staged tree back.
    a = _local_source(fakefs, "a", 70_001)
    outside = fakefs.mountpoint.parent
    before = sorted(os.listdir(outside))
    fakefs.add_fault(f"getattr:.:ENOENT{trigger}")
    (res,) = materialize([(str(a), str(fakefs.mountpoint / "new" / "a"))], workers=1).results
    fakefs.clear_faults()
    assert res.status is JobStatus.FAILED and res.errno == errno.ENOENT, res
    assert res.path is not None and res.path.startswith(str(fakefs.mountpoint))
    assert ".cowprobe-" not in (res.error or ""), res.error
    assert sorted(os.listdir(outside)) == before
    assert os.listdir(fakefs.backing) == []


def test_failed_staging_names_the_callers_directory(fakefs: fakefs_mod.FakeFS) -> None:
    a = _local_source(fakefs, "a", 10)
    fakefs.add_fault("mkdir:.new.cowprobe-*.tmp:EIO")
    (res,) = materialize([(str(a), str(fakefs.mountpoint / "new" / "a"))], workers=1).results
    assert res.status is JobStatus.FAILED and res.errno == errno.EIO, res
    assert res.error is not None and str(fakefs.mountpoint / "new") in res.error, res.error
    assert ".cowprobe-" not in res.error
    assert os.listdir(fakefs.backing) == []


def test_failed_unlink_in_a_staged_directory_is_retried_before_the_publish(
    fakefs: fakefs_mod.FakeFS,
) -> None:
    a = _local_source(fakefs, "a", 70_001)
    b = _local_source(fakefs, "b", 13)
    fakefs.add_fault("write:.new.cowprobe-*.tmp/a:EIO:nth=1")
    fakefs.add_fault("unlink:.new.cowprobe-*.tmp/a:EIO:nth=1")
    ra, rb = materialize(
        [(str(a), str(fakefs.mountpoint / "new" / "a")),
         (str(b), str(fakefs.mountpoint / "new" / "b"))],
        workers=1,
    ).results
    assert ra.status is JobStatus.FAILED and ra.errno == errno.EIO, ra
    assert rb.status is JobStatus.COPIED, rb
    assert fakefs.counters()["injected"] == 2
    assert sorted(os.listdir(fakefs.backing / "new")) == ["b"]
    assert _cowprobe_entries(fakefs.backing) == []


def test_torn_file_that_cannot_be_unlinked_keeps_its_directory_unpublished(
    fakefs: fakefs_mod.FakeFS,
) -> None:
    # The partial "a" cannot be removed at all: publishing the directory
    # would show it under its final name, so nothing is published and the
    # finished "b" fails too, with the errno that stopped it.
    a = _local_source(fakefs, "a", 70_001)
    b = _local_source(fakefs, "b", 13)
    fakefs.add_fault("write:.new.cowprobe-*.tmp/a:EIO:nth=1")
    fakefs.add_fault("unlink:.new.cowprobe-*.tmp/a:EACCES")
    ra, rb = materialize(
        [(str(a), str(fakefs.mountpoint / "new" / "a")),
         (str(b), str(fakefs.mountpoint / "new" / "b"))],
        workers=1,
    ).results
    fakefs.clear_faults()
    assert ra.status is JobStatus.FAILED and ra.errno == errno.EIO, ra
    assert rb.status is JobStatus.FAILED and rb.errno == errno.EACCES, rb
    assert rb.path == str(fakefs.mountpoint / "new")
    assert not (fakefs.backing / "new").exists()
    # Only the staged directory with the file no unlink could remove (the
    # rest of it was taken back) stays hidden.
    left = _cowprobe_entries(fakefs.backing)
    assert len(left) == 1 and sorted(os.listdir(fakefs.backing / left[0])) == ["a"]


def test_cli_collapses_failures_that_differ_only_in_the_file(
        fakefs: fakefs_mod.FakeFS, capsys: pytest.CaptureFixture[str]) -> None:
    from probe.cli import EXIT_FAILED, main

    src = fakefs.backing / "src"
    (src / "d").mkdir(parents=True)
    for i in range(40):
        (src / "d" / f"f{i:02d}").write_bytes(b"x" * 100)
    (src / "lone").write_bytes(b"y")
    # An existing worktree: each file is built under a temporary next to its
    # final name, and every one created under wt/d fails (CREATE is the
    # first operation on it).
    (fakefs.backing / "wt" / "d").mkdir(parents=True)
    fakefs.add_fault("create:wt/d/*:EIO")
    fakefs.add_fault("create:wt/.lone.*:ENOSPC")
    code = main(["materialize", "--no-progress", str(fakefs.mountpoint / "src"),
                 str(fakefs.mountpoint / "wt")])
    err = [ln for ln in capsys.readouterr().err.splitlines()
           if ln.startswith("cowprobe materialize: failed")]
    assert code == EXIT_FAILED
    assert len(err) == 2, err
    many = next(ln for ln in err if "entries" in ln)
    assert "(40 entries, first " in many and "EIO Input/output error" in many
    lone = next(ln for ln in err if "entries" not in ln)
    # The file's own line, its path and its reason (never our temporary).
    assert lone.startswith(f"cowprobe materialize: failed: {fakefs.mountpoint}/")
    assert lone.endswith("/lone: ENOSPC No space left on device"), lone
