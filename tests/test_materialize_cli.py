"""`cowprobe materialize` on the lab: tree mirroring, symlinks, special files."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from probe.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main


def _tree(src: Path) -> None:
    (src / "a" / "b").mkdir(parents=True)
    (src / "empty").mkdir()
    (src / "a" / "x.sh").write_bytes(b"#!/bin/sh\necho hi\n" * 400)
    (src / "a" / "x.sh").chmod(0o755)
    (src / "a" / "b" / "y").write_bytes(os.urandom(10_000))
    (src / "a" / "b" / "y").chmod(0o600)
    (src / "link").symlink_to("a/x.sh")
    (src / "a" / "dangling").symlink_to("/nonexistent/target")


def test_mirrors_tree_into_worktrees(btrfs_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = btrfs_dir / "src"
    _tree(src)
    wts = [btrfs_dir / "wt1", btrfs_dir / "wt2"]
    code = main(["materialize", "--json", "--verify", str(src), *map(str, wts)])
    doc = json.loads(capsys.readouterr().out)
    assert code == EXIT_OK and doc["ok"]
    assert doc["totals"]["cloned"] == 4 and doc["totals"]["symlinks"] == 4
    assert doc["totals"]["bytes_shared"] >= 10_000
    for wt in wts:
        for rel in ("a/x.sh", "a/b/y"):
            assert (wt / rel).read_bytes() == (src / rel).read_bytes()
            assert stat.S_IMODE((wt / rel).stat().st_mode) == stat.S_IMODE(
                (src / rel).stat().st_mode)
        assert (wt / "link").is_symlink() and os.readlink(wt / "link") == "a/x.sh"
        assert os.readlink(wt / "a" / "dangling") == "/nonexistent/target"
        assert (wt / "empty").is_dir()


def test_fifo_is_reported_not_hung_on(ext4_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = ext4_dir / "src"
    _tree(src)
    os.mkfifo(src / "a" / "pipe")
    wt = ext4_dir / "wt"
    code = main(["materialize", "--no-progress", str(src), str(wt)])
    out, err = capsys.readouterr()
    assert code == EXIT_FAILED
    assert "a FIFO" in err and str(src / "a" / "pipe") in err
    assert "copied" in out
    assert not (wt / "a" / "pipe").exists()
    assert (wt / "a" / "b" / "y").read_bytes() == (src / "a" / "b" / "y").read_bytes()


@pytest.mark.parametrize("case", ["missing-src", "dest-inside-src", "dest-is-file", "bad-mode"])
def test_usage_errors_change_nothing(
    btrfs_dir: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    src = btrfs_dir / "src"
    _tree(src)
    (btrfs_dir / "file").write_bytes(b"x")
    args = {
        "missing-src": [str(btrfs_dir / "nope"), str(btrfs_dir / "wt")],
        "dest-inside-src": [str(src), str(src / "wt")],
        "dest-is-file": [str(src), str(btrfs_dir / "file")],
        "bad-mode": ["--mode", "9z", str(src), str(btrfs_dir / "wt")],
    }[case]
    if case == "bad-mode":
        # argparse rejects the value itself: it exits, with the usage status.
        with pytest.raises(SystemExit) as exited:
            main(["materialize", *args])
        assert exited.value.code == EXIT_USAGE
    else:
        assert main(["materialize", *args]) == EXIT_USAGE
    assert "materialize" in capsys.readouterr().err
    assert sorted(p.name for p in btrfs_dir.iterdir()) == ["file", "src"]
    assert not (src / "wt").exists()


def _files(top: Path) -> dict[str, bytes]:
    return {str(p.relative_to(top)): p.read_bytes() for p in top.rglob("*") if p.is_file()}


def test_src_inside_dest_is_refused_only_where_it_would_write_over_itself(
    btrfs_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wt = btrfs_dir / "wt"
    src = wt / "t"
    (src / "t").mkdir(parents=True)
    (src / "f").write_bytes(b"outer")
    (src / "t" / "f").write_bytes(b"inner")  # mirrored to wt/t/f: src/f itself
    before = _files(btrfs_dir)
    assert main(["materialize", str(src), str(wt)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "would write over SRC_DIR itself" in err and err.count("\n") == 1, err
    assert _files(btrfs_dir) == before
    # A template kept inside its worktree, with no entry named like itself:
    # mirrored, and the template untouched.
    (src / "t" / "f").unlink()
    (src / "t").rmdir()
    assert main(["materialize", str(src), str(wt)]) == EXIT_OK
    assert (wt / "f").read_bytes() == b"outer" == (src / "f").read_bytes()


@pytest.mark.parametrize("order", ["outer-first", "nested-first"])
def test_nested_dest_dirs_are_refused_where_their_mirrors_overlap(
    btrfs_dir: Path, order: str, capsys: pytest.CaptureFixture[str]
) -> None:
    src = btrfs_dir / "src"
    (src / "sub").mkdir(parents=True)
    (src / "x").write_bytes(b"top")
    (src / "sub" / "x").write_bytes(b"inner")  # wt/sub/x for both mirrors
    wt = btrfs_dir / "wt"
    dests = [str(wt), str(wt / "sub")]
    if order == "nested-first":
        dests.reverse()
    assert main(["materialize", str(src), *dests]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"DEST_DIR {wt / 'sub'} is 'sub' in DEST_DIR {wt}" in err and err.count("\n") == 1
    assert not wt.exists()
    # Without an entry "sub" in SRC_DIR nothing overlaps: both are mirrored.
    (src / "sub" / "x").unlink()
    (src / "sub").rmdir()
    assert main(["materialize", str(src), *dests]) == EXIT_OK
    assert (wt / "x").read_bytes() == b"top" == (wt / "sub" / "x").read_bytes()
