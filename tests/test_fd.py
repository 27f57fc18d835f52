"""probe._fd on the real kernel: removal and directory opens that never
follow a symlink."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from probe._fd import DIR_FLAGS, open_dir_nofollow, remove_tree


def test_remove_tree_unlinks_symlinks_and_never_walks_into_them(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "keep").write_bytes(b"keep")
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "f").write_bytes(b"x")
    (tree / "a" / "to-dir").symlink_to(outside)
    (tree / "to-file").symlink_to(outside / "keep")
    fd = os.open(tmp_path, DIR_FLAGS)
    try:
        assert remove_tree(fd, "tree") == []
        assert remove_tree(fd, "tree") == []  # already gone: nothing to report
    finally:
        os.close(fd)
    assert not tree.exists()
    assert (outside / "keep").read_bytes() == b"keep" and (outside / "sub").is_dir()


def test_open_dir_nofollow_names_a_symlink_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to("real")
    (tmp_path / "file").write_bytes(b"")
    fd = os.open(tmp_path, DIR_FLAGS)
    try:
        os.close(open_dir_nofollow("real", fd))
        with pytest.raises(OSError) as link:
            open_dir_nofollow("link", fd)
        assert link.value.errno == errno.ELOOP and "symlink" in str(link.value)
        with pytest.raises(NotADirectoryError):
            open_dir_nofollow("file", fd)
    finally:
        os.close(fd)
