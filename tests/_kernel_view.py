"""What the kernel says is mounted or attached, asked through the same
tools a person would use (findmnt, losetup) -- independent of the lab's own
bookkeeping, so a leak the lab does not know about still shows.

Deliberately not ``probe._mounttable``: these checks are the oracle for the
lab's teardown, which reads the mount table through that module; a bug
there must not hide itself from the tests. findmnt's JSON output names
paths unescaped (its ``-r`` output would show a space as ``\x20``)."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

from probe._linux import FS_IMMUTABLE_FL, change_dir_flags


def mounts_under(root: Path) -> list[str]:
    out = subprocess.run(
        ["findmnt", "--list", "--json", "-o", "TARGET"], capture_output=True, text=True,
        check=True,
    ).stdout
    r = str(root)
    targets = [str(fs["target"]) for fs in json.loads(out)["filesystems"]]
    return [m for m in targets if m == r or m.startswith(r + "/")]


def loops_under(root: Path) -> list[str]:
    out = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if f"({root}/" in line]


def dir_flags(path: Path, add: int = 0, remove: int = 0) -> int:
    """A directory's inode flags (chattr), after adding/removing some.

    New files inherit FS_NOCOW_FL from their directory; FS_IMMUTABLE_FL
    makes the kernel refuse every change in it (EPERM, even for root).
    """
    return change_dir_flags(path, add, remove)


@contextlib.contextmanager
def immutable(path: Path) -> Iterator[Path]:
    """``chattr +i`` on a directory for the duration; always undone, since an
    immutable directory cannot be removed even by root."""
    dir_flags(path, add=FS_IMMUTABLE_FL)
    try:
        yield path
    finally:
        dir_flags(path, remove=FS_IMMUTABLE_FL)
