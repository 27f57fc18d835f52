"""probe.mirror on the real lab: the whole tree in one call, one report, and
the worktree as a boundary nothing is written through."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

import probe
from probe import JobStatus, materialize, mirror
from probe.cli import EXIT_FAILED, main


def make_tree(src: Path) -> None:
    (src / "a" / "b").mkdir(parents=True)
    (src / "empty" / "deeper").mkdir(parents=True)
    (src / "a" / "x.sh").write_bytes(b"#!/bin/sh\necho hi\n" * 400)
    (src / "a" / "x.sh").chmod(0o755)
    (src / "a" / "b" / "y").write_bytes(os.urandom(70_000))
    (src / "a" / "b" / "y").chmod(0o600)
    (src / "top").write_bytes(b"")
    (src / "link").symlink_to("a/x.sh")
    (src / "a" / "dangling").symlink_to("/nonexistent/target")


def assert_mirrored(src: Path, wt: Path) -> None:
    for rel in ("a/x.sh", "a/b/y", "top"):
        s, d = src / rel, wt / rel
        assert d.read_bytes() == s.read_bytes(), rel
        assert stat.S_IMODE(d.stat().st_mode) == stat.S_IMODE(s.stat().st_mode), rel
    assert os.readlink(wt / "link") == "a/x.sh"
    assert os.readlink(wt / "a" / "dangling") == "/nonexistent/target"
    assert (wt / "empty" / "deeper").is_dir()


def leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if ".cowprobe-" in p.name)


@pytest.mark.parametrize(("kind", "clones"), [("btrfs", True), ("xfs", True), ("ext4", False)])
def test_mirror_is_one_call_with_one_report(
    request: pytest.FixtureRequest, kind: str, clones: bool
) -> None:
    base: Path = request.getfixturevalue(f"{kind}_dir")
    src = base / "src"
    make_tree(src)
    fresh, existing = base / "wt-fresh", base / "wt-existing"
    (existing / "a").mkdir(parents=True)
    (existing / "a" / "x.sh").write_bytes(b"old")
    (existing / "mine").write_bytes(b"not in the source: left alone")
    report = mirror(src, [fresh, existing], measure_sharing=True)
    assert isinstance(report, probe.MirrorReport)
    assert report.ok, report.to_dict()
    files = report.files
    assert (files.cloned, files.copied) == ((6, 0) if clones else (0, 6))
    assert report.symlinks == 4 and report.failed_entries == []
    for wt in (fresh, existing):
        assert_mirrored(src, wt)
    assert (existing / "mine").read_bytes() == b"not in the source: left alone"
    assert leftovers(base) == []
    doc = report.to_dict()
    assert doc["ok"] and doc["totals"]["symlinks"] == 4 and doc["totals"]["failed_entries"] == 0
    assert {e["status"] for e in doc["entries"]} == {"created"}


def test_fresh_worktree_of_an_empty_tree_is_created(btrfs_dir: Path) -> None:
    (btrfs_dir / "src").mkdir()
    report = mirror(btrfs_dir / "src", [btrfs_dir / "wt"])
    assert report.ok and report.files.results == ()
    assert (btrfs_dir / "wt").is_dir() and leftovers(btrfs_dir) == []


@pytest.mark.parametrize("link", ["absolute", "relative", "deep"])
def test_symlink_in_the_worktree_is_never_followed(btrfs_dir: Path, link: str) -> None:
    # The classic extraction attack: A/lib -> /elsewhere, then mirroring a
    # tree with lib/evil must not put evil into /elsewhere.
    elsewhere = btrfs_dir / "elsewhere"
    elsewhere.mkdir()
    src, wt = btrfs_dir / "B", btrfs_dir / "A"
    prefix = Path("x/y") if link == "deep" else Path()
    (src / prefix / "lib" / "sub").mkdir(parents=True)
    (src / prefix / "lib" / "evil").write_bytes(b"payload" * 1000)
    (src / prefix / "lib" / "sub" / "deeper").write_bytes(b"payload")
    (src / prefix / "lib" / "evil-link").symlink_to("/etc/passwd")
    (src / "fine").write_bytes(b"ok")
    (wt / prefix).mkdir(parents=True)
    target = os.path.relpath(elsewhere, wt / prefix) if link == "relative" else str(elsewhere)
    (wt / prefix / "lib").symlink_to(target)

    report = mirror(src, [wt])

    assert list(elsewhere.iterdir()) == []
    assert os.readlink(wt / prefix / "lib") == target
    assert (wt / "fine").read_bytes() == b"ok"
    assert not report.ok
    by_dest = {Path(r.dest).relative_to(wt): r for r in report.files.results}
    for rel in ("lib/evil", "lib/sub/deeper"):
        r = by_dest[prefix / rel]
        assert r.status is JobStatus.FAILED and r.errno == errno.ELOOP, r
        assert r.error is not None and "symlink" in r.error
    failed = {(e.kind, e.dest): e for e in report.failed_entries}
    lib = str(wt / prefix / "lib")
    assert failed[("directory", lib)].errno == errno.ELOOP
    assert ("symlink", os.path.join(lib, "evil-link")) in failed
    assert leftovers(btrfs_dir) == []


def test_symlink_where_the_source_has_a_file_is_replaced_not_written_through(
    btrfs_dir: Path,
) -> None:
    outside = btrfs_dir / "outside"
    outside.write_bytes(b"keep")
    src, wt = btrfs_dir / "src", btrfs_dir / "wt"
    src.mkdir()
    wt.mkdir()
    (src / "f").write_bytes(b"new content")
    (src / "l").symlink_to("f")
    (wt / "f").symlink_to(outside)
    (wt / "l").symlink_to(outside)
    assert mirror(src, [wt]).ok
    assert outside.read_bytes() == b"keep"
    assert not (wt / "f").is_symlink() and (wt / "f").read_bytes() == b"new content"
    assert os.readlink(wt / "l") == "f"


def test_cli_refuses_the_attack_too(btrfs_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    elsewhere = btrfs_dir / "elsewhere"
    elsewhere.mkdir()
    (btrfs_dir / "B" / "lib").mkdir(parents=True)
    (btrfs_dir / "B" / "lib" / "evil").write_bytes(b"x")
    (btrfs_dir / "A").mkdir()
    (btrfs_dir / "A" / "lib").symlink_to(elsewhere)
    assert main(["materialize", "--no-progress", str(btrfs_dir / "B"),
                 str(btrfs_dir / "A")]) == EXIT_FAILED
    assert list(elsewhere.iterdir()) == []
    assert "ELOOP" in capsys.readouterr().err


@pytest.mark.parametrize("dest", ["outside/f", "wt/../outside/f"])
def test_materialize_refuses_a_dest_outside_its_worktrees(btrfs_dir: Path, dest: str) -> None:
    (btrfs_dir / "s").write_bytes(b"x")
    with pytest.raises(ValueError, match="worktree"):
        materialize([(str(btrfs_dir / "s"), str(btrfs_dir / dest))],
                    worktrees=[btrfs_dir / "wt"])
    assert sorted(p.name for p in btrfs_dir.iterdir()) == ["s"]


def test_interrupted_batch_publishes_nothing(btrfs_dir: Path) -> None:
    # Any BaseException in the batch (here from the result callback, as a
    # KeyboardInterrupt would arrive): no staged tree is renamed into place,
    # and none is left under its hidden name.
    src = btrfs_dir / "src"
    for i in range(200):
        (src / f"d{i % 4}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i % 4}" / f"f{i}").write_bytes(os.urandom(100))
    existing = btrfs_dir / "existing"
    existing.mkdir()
    seen = []

    def interrupt(r: probe.JobResult) -> None:
        seen.append(r)
        if len(seen) == 50:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        mirror(src, [btrfs_dir / "fresh", existing], on_result=interrupt, workers=2)
    assert not (btrfs_dir / "fresh").exists()
    # The existing worktree's missing subdirectories were staged too.
    assert list(existing.iterdir()) == []
    assert leftovers(btrfs_dir) == []


@pytest.mark.parametrize("kind", ["btrfs", "ext4"])
def test_fsync_mirror_is_complete(request: pytest.FixtureRequest, kind: str) -> None:
    base: Path = request.getfixturevalue(f"{kind}_dir")
    make_tree(base / "src")
    (base / "old").mkdir()
    report = mirror(base / "src", [base / "new", base / "old"], fsync=True)
    assert report.ok
    assert_mirrored(base / "src", base / "new")
    assert_mirrored(base / "src", base / "old")
    assert leftovers(base) == []


def test_one_path_for_dest_dirs_is_refused(btrfs_dir: Path) -> None:
    (btrfs_dir / "src").mkdir()
    with pytest.raises(TypeError, match="list"):
        mirror(btrfs_dir / "src", str(btrfs_dir / "wt"))
    assert not (btrfs_dir / "wt").exists()


def test_worktree_spelled_with_a_trailing_slash_is_one_worktree(btrfs_dir: Path) -> None:
    make_tree(btrfs_dir / "src")
    report = mirror(btrfs_dir / "src", [f"{btrfs_dir / 'wt'}/"])
    assert report.ok
    assert_mirrored(btrfs_dir / "src", btrfs_dir / "wt")
    assert leftovers(btrfs_dir) == []
