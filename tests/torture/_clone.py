"""The ``clonefile_or_copy`` workloads: into a new dest, over an existing
one, fakefs -> real directory and real directory -> fakefs."""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import probe

from ._harness import Family, Outcome, check_error, check_file
from ._schedule import Fault

__all__ = ["CLONE_VARIANTS", "CloneWorkload"]

#: Not a multiple of any page, block or FUSE transfer size, and more than one
#: write's worth (64 KiB on this mount), so a short or lost chunk shows.
SIZE = 100_003
SRC_MODE = 0o751  # an exec bit: FICLONE and copies that forget fchmod lose it
OLD = b"the old destination, which a failed call must leave alone\n"
OLD_MODE = 0o640

CLONE_VARIANTS = ("new", "over", "fake-to-real", "real-to-fake")


def _data() -> bytes:
    return random.Random(8).randbytes(SIZE)  # noqa: S311 -- reproducible test data


def _put(path: Path, data: bytes, mode: int) -> None:
    path.write_bytes(data)
    os.chmod(path, mode)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    else:
        os.unlink(p)


def _empty(d: Path) -> None:
    """Make ``d`` an empty directory (removing whatever a run left)."""
    if d.is_dir() and not d.is_symlink():
        for entry in os.scandir(d):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
    else:
        if d.exists() or d.is_symlink():
            os.unlink(d)
        d.mkdir()


@dataclass
class CloneWorkload:
    fam: Family
    variant: str

    def __post_init__(self) -> None:
        self.name = f"clonefile_or_copy[{self.variant}]"
        self.data = _data()
        f = self.fam
        src_on_fake = self.variant != "real-to-fake"
        dst_on_fake = self.variant != "fake-to-real"
        self.src_store = (f.backing if src_on_fake else f.real) / "src"
        self.src = (f.mnt if src_on_fake else f.real) / "src"
        dname = "old" if self.variant == "over" else "new"
        self.dst_dir_store = (f.backing if dst_on_fake else f.real) / "d"
        self.dst_store = self.dst_dir_store / dname
        self.dst = (f.mnt if dst_on_fake else f.real) / "d" / dname
        self.existed = self.variant == "over"

    def reset(self) -> None:
        if not self.src_store.is_file() or self.src_store.read_bytes() != self.data:
            _put(self.src_store, self.data, SRC_MODE)
        os.chmod(self.src_store, SRC_MODE)
        for d in (self.fam.backing / "d", self.fam.real / "d"):
            _empty(d)
        if self.existed:
            _put(self.dst_store, OLD, OLD_MODE)

    def run(self) -> object:
        return probe.clonefile_or_copy(self.src, self.dst)

    def check(self, out: Outcome, fired: Sequence[Fault]) -> list[str]:
        problems = check_file(self.src_store, self.data, SRC_MODE, "source")
        if out.error is None:
            if out.value is not False:
                # FUSE never clones (the kernel answers EOPNOTSUPP/EXDEV itself)
                problems.append(f"returned {out.value!r}, want False (copied)")
            problems += check_file(self.dst_store, self.data, SRC_MODE, "dest")
        else:
            paths = {str(self.src), str(self.dst), str(self.dst.parent)}
            problems += check_error(out.error, fired, paths)
            if self.existed:
                problems += check_file(self.dst_store, OLD, OLD_MODE, "pre-existing dest")
            elif os.path.lexists(self.dst_store):
                problems.append(f"failed call left a dest behind: {self.dst_store}")
        want = {self.dst_store.name} if (out.error is None or self.existed) else set()
        extra = set(os.listdir(self.dst_dir_store)) - want
        problems += [f"stray entry {self.dst_dir_store / n}" for n in sorted(extra)]
        problems += self.fam.leftovers()
        return problems
