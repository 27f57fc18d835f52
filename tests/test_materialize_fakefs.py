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

import fakefs as fakefs_mod
from probe._materialize import materialize
from probe._materialize_report import JobStatus


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
