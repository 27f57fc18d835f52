"""probe.materialize on real lab filesystems (btrfs, XFS reflink=1, ext4)."""

from __future__ import annotations

import errno
import os
import re
import stat
import threading
from pathlib import Path

import pytest

from probe import _linux
from probe.materialize import materialize, mirror
from probe.materialize._policy import EINVAL_LIMIT
from probe.materialize._report import JobResult, JobStatus, MaterializeReport

MODES = (0o644, 0o755, 0o600, 0o640, 0o711)


def make_tree(root: Path, n: int, *, sizes: tuple[int, ...] = (0, 1, 4096, 70_000)) -> list[Path]:
    files = []
    for i in range(n):
        p = root / f"d{i % 3}" / f"f{i:03d}.bin"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(sizes[i % len(sizes)]))
        p.chmod(MODES[i % len(MODES)])
        files.append(p)
    return files


def jobs_for(src_root: Path, files: list[Path], worktrees: list[Path]) -> list[tuple[str, str]]:
    return [(str(f), str(wt / f.relative_to(src_root))) for f in files for wt in worktrees]


def assert_exact(jobs: list[tuple[str, str]], mode: int | None = None) -> None:
    for src, dst in jobs:
        s, d = Path(src), Path(dst)
        assert d.read_bytes() == s.read_bytes(), dst
        want = stat.S_IMODE(s.stat().st_mode) if mode is None else mode
        assert stat.S_IMODE(d.stat().st_mode) == want, dst
        assert d.stat().st_ino != s.stat().st_ino


def no_temporaries(*roots: Path) -> None:
    for root in roots:
        left = [p for p in root.rglob("*") if ".cowprobe-" in p.name]
        assert not left, left


@pytest.mark.parametrize(
    ("kind", "clones"), [("btrfs", True), ("xfs", True), ("ext4", False)]
)
def test_every_dest_exact_with_mode_and_counts(
    request: pytest.FixtureRequest, kind: str, clones: bool
) -> None:
    base: Path = request.getfixturevalue(f"{kind}_dir")
    src = base / "src"
    files = make_tree(src, 30)
    wts = [base / "wt1", base / "wt2", base / "wt3"]
    (base / "wt2").mkdir()  # one worktree exists (per-file temp + rename), two do not
    jobs = jobs_for(src, files, wts)
    report = materialize(jobs, measure_sharing=True, workers=2)
    assert report.ok
    assert_exact(jobs)
    no_temporaries(base)
    assert report.files == len(jobs) == 90
    assert report.bytes == sum(Path(s).stat().st_size for s, _ in jobs)
    if clones:
        assert (report.cloned, report.copied) == (90, 0)
        assert report.failed_clone_calls == 0
        assert report.bytes_cloned == report.bytes
        # The 70 000-byte files are real extents everywhere: shared after cloning.
        assert report.bytes_shared is not None and report.bytes_shared >= 70_000 * 3
    else:
        assert (report.cloned, report.copied) == (0, 90)
        # One failed FICLONE for the pair, then straight to copies.
        assert report.failed_clone_calls == 1
        (pair,) = report.pairs
        assert pair.disabled_errno == errno.EOPNOTSUPP
        assert report.bytes_shared == 0


def test_caller_mode_overrides_source_mode(btrfs_dir: Path) -> None:
    files = make_tree(btrfs_dir / "src", 6)
    jobs = jobs_for(btrfs_dir / "src", files, [btrfs_dir / "wt"])
    report = materialize(jobs, mode=0o604)
    assert report.ok and report.cloned == 6
    assert_exact(jobs, mode=0o604)


def test_ext4_unsupported_does_not_stop_btrfs_cloning(btrfs_dir: Path, ext4_dir: Path) -> None:
    files = make_tree(btrfs_dir / "src", 40)
    # Interleaved: every source goes to ext4 first, then btrfs, so the ext4
    # verdict is reached before most btrfs clones.
    jobs = jobs_for(btrfs_dir / "src", files, [ext4_dir / "wt", btrfs_dir / "wt"])
    report = materialize(jobs, workers=2)
    assert report.ok
    assert_exact(jobs)
    by_dest = {r.dest: r for r in report.results}
    for _src, dst in jobs:
        want = JobStatus.CLONED if dst.startswith(str(btrfs_dir)) else JobStatus.COPIED
        assert by_dest[dst].status is want, dst
    ext4_dev = os.stat(ext4_dir).st_dev
    btrfs_dev = os.stat(btrfs_dir / "wt").st_dev
    pairs = {p.dest_dev: p for p in report.pairs}
    assert pairs[ext4_dev].failed_clone_calls == 1
    assert pairs[ext4_dev].clone_calls == 1
    assert pairs[ext4_dev].disabled_errno == errno.EXDEV
    assert pairs[btrfs_dev].cloned == 40
    assert pairs[btrfs_dev].failed_clone_calls == 0
    assert pairs[btrfs_dev].disabled_errno is None


def test_concurrent_deleter_leaves_reflinks_on(btrfs_dir: Path) -> None:
    src = btrfs_dir / "src"
    files = make_tree(src, 60, sizes=(8192,))
    content = {str(f): f.read_bytes() for f in files}
    jobs = jobs_for(src, files, [btrfs_dir / "wt"])
    doomed = [str(f) for f in files[30:40]]
    go, done = threading.Event(), threading.Event()

    def deleter() -> None:
        go.wait()
        for p in doomed:
            os.unlink(p)
        done.set()

    thread = threading.Thread(target=deleter)
    thread.start()
    finished = 0

    def on_result(_r: JobResult) -> None:
        # After the 10th file, a separate thread deletes ten sources further
        # on while the batch waits: a real concurrent unlink, sequenced by
        # events rather than by timing.
        nonlocal finished
        finished += 1
        if finished == 10:
            go.set()
            assert done.wait(30)

    try:
        report = materialize(jobs, workers=1, on_result=on_result)
    finally:
        go.set()
        thread.join()
    vanished = {r.source for r in report.results if r.status is JobStatus.VANISHED}
    assert vanished == set(doomed)
    for r in report.results:
        if r.status is JobStatus.VANISHED:
            assert r.errno == errno.ENOENT and r.path == r.source
            assert not Path(r.dest).exists()
        else:
            # Every job after the vanished ones still cloned.
            assert r.status is JobStatus.CLONED
            assert Path(r.dest).read_bytes() == content[r.source]
    (pair,) = report.pairs
    assert pair.disabled_errno is None and pair.failed_clone_calls == 0
    assert pair.cloned == 50
    assert report.failed == 10 and not report.ok


def _nocow_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        # NOCOW only sticks to an empty file.
        _linux.set_inode_flags(fd, _linux.get_inode_flags(fd) | _linux.FS_NOCOW_FL)
        os.write(fd, data)
    finally:
        os.close(fd)


def test_nocow_einval_is_per_file(btrfs_dir: Path) -> None:
    src = btrfs_dir / "src"
    src.mkdir()
    files = []
    for i in range(12):
        p = src / f"f{i:02d}"
        if i < 3 or i == 7:
            _nocow_file(p, os.urandom(8192))
        else:
            p.write_bytes(os.urandom(8192))
        files.append(p)
    jobs = jobs_for(src, files, [btrfs_dir / "wt"])
    report = materialize(jobs, workers=1)
    assert report.ok
    assert_exact(jobs)
    for i, r in enumerate(report.results):
        if i < 3 or i == 7:
            assert r.status is JobStatus.COPIED and r.reflink_errno == errno.EINVAL
        else:
            assert r.status is JobStatus.CLONED
    (pair,) = report.pairs
    assert pair.disabled_errno is None
    assert pair.failed_clone_calls == 4


def test_einval_on_every_file_gives_up_after_the_limit(btrfs_dir: Path) -> None:
    src = btrfs_dir / "src"
    src.mkdir()
    files = []
    for i in range(EINVAL_LIMIT + 5):
        p = src / f"f{i:02d}"
        _nocow_file(p, os.urandom(4096))
        files.append(p)
    jobs = jobs_for(src, files, [btrfs_dir / "wt"])
    report = materialize(jobs, workers=2)
    assert report.ok and report.copied == len(files)
    assert_exact(jobs)
    (pair,) = report.pairs
    assert pair.disabled_errno == errno.EINVAL
    assert pair.clone_calls == pair.failed_clone_calls == EINVAL_LIMIT


def _with_fifo(base: Path) -> tuple[list[tuple[str, str]], str]:
    files = make_tree(base / "src", 9, sizes=(5000,))
    fifo = base / "src" / "fifo"
    os.mkfifo(fifo)
    srcs = [*files[:4], fifo, *files[4:]]
    return [(str(s), str(base / "wt" / s.name)) for s in srcs], str(fifo)


def test_carry_on_reports_every_failure(btrfs_dir: Path) -> None:
    jobs, fifo = _with_fifo(btrfs_dir)
    jobs.insert(2, (str(btrfs_dir / "src" / "missing"), str(btrfs_dir / "wt" / "missing")))
    report = materialize(jobs, workers=1)
    assert not report.ok
    assert report.cloned == 9 and report.skipped == 0
    fails = {r.source: r for r in report.failures}
    assert fails[fifo].status is JobStatus.FAILED and fails[fifo].errno == errno.EINVAL
    assert fails[fifo].path == fifo
    missing = fails[str(btrfs_dir / "src" / "missing")]
    assert missing.status is JobStatus.VANISHED and missing.errno == errno.ENOENT
    assert not (btrfs_dir / "wt" / "fifo").exists()


def test_stop_on_error_skips_the_rest(btrfs_dir: Path) -> None:
    jobs, _fifo = _with_fifo(btrfs_dir)
    report = materialize(jobs, workers=1, stop_on_error=True)
    statuses = [r.status for r in report.results]
    assert statuses[:4] == [JobStatus.CLONED] * 4
    assert statuses[4] is JobStatus.FAILED
    assert statuses[5:] == [JobStatus.SKIPPED] * 5
    assert [p.name for p in (btrfs_dir / "wt").iterdir()] != []
    assert_exact(jobs[:4])
    for _s, d in jobs[4:]:
        assert not Path(d).exists()


def test_existing_dests_replaced_atomically_and_kept_on_failure(xfs_dir: Path) -> None:
    src = xfs_dir / "src"
    files = make_tree(src, 4, sizes=(3000,))
    wt = xfs_dir / "wt"
    wt.mkdir()
    old_inodes = {}
    for f in files:
        d = wt / f.relative_to(src)
        d.parent.mkdir(parents=True, exist_ok=True)
        d.write_bytes(b"old")
        old_inodes[str(d)] = d.stat().st_ino
    # A symlink at a dest is replaced, never written through.
    victim = xfs_dir / "victim"
    victim.write_bytes(b"victim")
    link_dest = wt / "d0" / "link.bin"
    link_dest.symlink_to(victim)
    jobs = jobs_for(src, files, [wt])
    jobs.append((str(files[0]), str(link_dest)))
    missing_dest = wt / "d1" / "keep.bin"
    missing_dest.write_bytes(b"keep me")
    jobs.append((str(src / "gone.bin"), str(missing_dest)))
    report = materialize(jobs)
    assert report.cloned == 5 and report.vanished == 1
    assert_exact(jobs[:5])
    for _s, dest in jobs[:4]:
        assert os.stat(dest).st_ino != old_inodes[dest]
    assert not link_dest.is_symlink() and victim.read_bytes() == b"victim"
    assert missing_dest.read_bytes() == b"keep me"
    no_temporaries(wt)


def test_a_special_file_at_a_dest_is_kept_and_its_job_fails(xfs_dir: Path) -> None:
    # Into a directory that existed the rename used to put a regular file
    # where a FIFO or device node was; the other jobs go on.
    src = xfs_dir / "src"
    files = make_tree(src, 3, sizes=(100,))
    wt = xfs_dir / "wt"
    jobs = jobs_for(src, files, [wt])
    for _s, dest in jobs:
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
    fifo, dev = Path(jobs[0][1]), Path(jobs[1][1])
    os.mkfifo(fifo)
    os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    nodes = {p: (p.lstat().st_ino, p.lstat().st_mode) for p in (fifo, dev)}
    report = materialize(jobs)
    assert report.cloned == 1 and report.failed == 2
    assert_exact(jobs[2:])
    by_dest = {r.dest: r for r in report.results}
    for p, what in ((fifo, "a FIFO"), (dev, "a character device")):
        r = by_dest[str(p)]
        assert (r.status, r.errno) == (JobStatus.FAILED, errno.EEXIST)
        assert f"destination is {what}, not a regular file: not replaced" in (r.error or "")
        assert (p.lstat().st_ino, p.lstat().st_mode) == nodes[p]
    no_temporaries(wt)
    # The mirror's symlinks keep to the rule too.
    (src / "link").symlink_to("d0")
    os.mkfifo(wt / "link")
    rep = mirror(src, [wt])
    (bad,) = rep.failed_entries
    assert (bad.kind, bad.dest, bad.errno) == ("symlink", str(wt / "link"), errno.EEXIST)
    assert "destination is a FIFO" in (bad.error or "")
    assert stat.S_ISFIFO((wt / "link").lstat().st_mode)
    no_temporaries(wt)


def test_dir_appearing_meanwhile_is_merged_not_replaced(btrfs_dir: Path) -> None:
    files = make_tree(btrfs_dir / "src", 6, sizes=(4096,))
    wt = btrfs_dir / "wt"
    jobs = jobs_for(btrfs_dir / "src", files, [wt])
    seen = 0

    def on_result(_r: JobResult) -> None:
        # Someone else creates the worktree (with a file of theirs) while
        # our staged copy of it is being filled.
        nonlocal seen
        seen += 1
        if seen == 1:
            (wt / "d0").mkdir(parents=True)
            (wt / "d0" / "theirs").write_bytes(b"theirs")

    report = materialize(jobs, workers=1, on_result=on_result)
    assert report.ok and report.cloned == 6
    assert_exact(jobs)
    assert (wt / "d0" / "theirs").read_bytes() == b"theirs"
    no_temporaries(btrfs_dir)
    assert sorted(p.name for p in btrfs_dir.iterdir()) == ["src", "wt"]


def test_failed_jobs_leave_no_new_directories(btrfs_dir: Path) -> None:
    report = materialize([(str(btrfs_dir / "nope"), str(btrfs_dir / "wt" / "a" / "b" / "f"))])
    assert report.vanished == 1
    assert sorted(p.name for p in btrfs_dir.iterdir()) == []


def test_one_directory_spelled_two_ways_is_one_directory(btrfs_dir: Path) -> None:
    # "wt/./d" and "wt//d" are wt/d: one staged directory, published once
    # with both files (two cache entries for it each thought they made it).
    (btrfs_dir / "src").mkdir()
    for n in ("a", "b"):
        (btrfs_dir / "src" / n).write_bytes(n.encode() * 5000)
    wt = f"{btrfs_dir}/wt"
    report = materialize([(f"{btrfs_dir}/src/a", f"{wt}/./d/f"),
                          (f"{btrfs_dir}/src/b", f"{wt}//d/g")], worktrees=[wt])
    assert report.ok, report.results
    assert sorted(os.listdir(f"{wt}/d")) == ["f", "g"]
    assert (btrfs_dir / "wt" / "d" / "g").read_bytes() == b"b" * 5000
    no_temporaries(btrfs_dir)


@pytest.mark.parametrize(
    ("jobs", "message"),
    [
        ([("a", "x/f"), ("b", "x/f")], "already the destination of job 0"),
        ([("a", "x/f"), ("b", "x/./f")], "already the destination of job 0"),
        ([("a", "x/y/f"), ("b", "x//y/f")], "already the destination of job 0"),
        ([("a", "x/")], "names a directory"),
        ([("a", "")], "destination path is empty"),
        ([("a",)], "expected a (source, dest) pair"),
        ([("a", "a")], "source {a!r} and destination {a!r} are the same file"),
        ([("x/a", "x/./a")], "job 0: source {x/a!r} and destination {x/./a!r} are the same"),
        ([("b", "c"), ("a", "x/f"), ("x/f", "d")],
         "job 1: destination is the source {x/f!r} that job 2 reads"),
        ([("a", "x//f"), ("x/f", "y/f")], "job 0: destination is the source {x/f!r} that job 1"),
    ],
)
def test_bad_input_raises_before_touching_anything(
    btrfs_dir: Path, jobs: list[tuple[str, ...]], message: str
) -> None:
    # Plain strings: Path would drop the trailing slash of "x/".
    rooted = [tuple(f"{btrfs_dir}/{p}" if p else p for p in job) for job in jobs]
    # {p!r}: the rooted path p as the message quotes it
    message = re.sub(r"\{(.*?)!r\}", lambda m: repr(f"{btrfs_dir}/{m[1]}"), message)
    with pytest.raises((ValueError, TypeError), match=re.escape(message)):
        materialize(rooted)  # type: ignore[arg-type]
    assert list(btrfs_dir.iterdir()) == []


def test_report_json_shape(btrfs_dir: Path) -> None:
    files = make_tree(btrfs_dir / "src", 3)
    report: MaterializeReport = materialize(jobs_for(btrfs_dir / "src", files, [btrfs_dir / "w"]))
    doc = report.to_dict()
    assert doc["totals"]["cloned"] == 3 and doc["totals"]["failed_clone_calls"] == 0
    assert [j["status"] for j in doc["jobs"]] == ["cloned"] * 3


@pytest.mark.parametrize("fs", ["ext4_dir", "xfs_noreflink_dir"])
def test_copied_sparse_file_stays_sparse(fs: str, request: pytest.FixtureRequest) -> None:
    # The copy fallback's one whole-file copy_file_range would write the
    # holes out as zeros (ext4): a sparse source must keep its holes.
    d: Path = request.getfixturevalue(fs)
    src = d / "sparse"
    with open(src, "wb") as fh:
        fh.write(os.urandom(64 * 1024))
        fh.seek(256 * 1024 * 1024)
        fh.write(os.urandom(64 * 1024))
    report = materialize([(src, d / "wt" / "f")])
    assert report.ok and report.copied == 1
    dst = d / "wt" / "f"
    assert dst.read_bytes() == src.read_bytes()
    assert os.stat(dst).st_blocks <= 2 * os.stat(src).st_blocks, "holes were filled in"


@pytest.mark.parametrize("mode", [0o4755, 0o2755, 0o6777, 0o10000, -1])
def test_a_set_id_or_out_of_range_mode_is_refused_before_any_file(
    tmp_path: Path, mode: int
) -> None:
    # The same rule as clone_or_copy: a batch must not mint set-id files
    # (it published them with the bits already set).
    src = tmp_path / "s"
    src.write_bytes(b"x")
    with pytest.raises(ValueError, match="mode"):
        materialize([(src, tmp_path / "wt" / "s")], mode=mode)
    assert not (tmp_path / "wt").exists()


def test_a_merge_into_a_directory_made_meanwhile_never_replaces_a_special_file(
    tmp_path: Path,
) -> None:
    # The staged tree's final name appeared during the run, holding a FIFO
    # and a device node under names the batch wrote: the merge refuses
    # them (nothing replaced) rather than renaming files over them.
    from probe.materialize._publish import _move_dir

    staged, final = tmp_path / ".wt.stage", tmp_path / "wt"
    staged.mkdir()
    final.mkdir()
    for name in ("fifo", "dev", "plain"):
        (staged / name).write_bytes(b"new")
    os.mkfifo(final / "fifo")
    os.mknod(final / "dev", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    parent = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(OSError) as caught:
            _move_dir(parent, staged.name, parent, final.name, missing=None, placed=[])
    finally:
        os.close(parent)
    assert caught.value.errno == errno.EEXIST
    assert stat.S_ISFIFO(os.lstat(final / "fifo").st_mode)
    assert stat.S_ISCHR(os.lstat(final / "dev").st_mode)
