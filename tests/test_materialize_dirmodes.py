"""The directories a mirror makes: their modes (as GNU ``cp -r`` gives them),
their privacy while they are filled, a source directory that cannot be
listed, and a DEST_DIR below a file."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _files import NOBODY, importable_copy, world_dir, write_file

from probe import JobResult, materialize, mirror
from probe.cli import EXIT_USAGE, main
from probe.pytest_plugin import require

#: source directories (relative path, mode), parents before children; each
#: holds a file, so a directory the mirror cannot fill shows
DIRS = (("sticky", 0o1777), ("setgid", 0o2755), ("private", 0o700), ("ro", 0o500),
        ("ro/inner", 0o555), ("open", 0o777), ("wx", 0o300), ("none", 0o000))
_ACL_DEFAULT = "system.posix_acl_default"


def _umask() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        return next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))


def _source(src: Path) -> None:
    src.mkdir()
    for rel, _mode in DIRS:
        (src / rel).mkdir()
        write_file(src / rel / "f", rel.encode())
    # Children first: a directory's mode must not stop its child's chmod.
    for rel, mode in reversed(DIRS):
        (src / rel).chmod(mode)
    src.chmod(0o750)


def _modes(top: Path) -> dict[str, int]:
    out = {".": stat.S_IMODE(top.lstat().st_mode)}
    for rel, _mode in DIRS:
        out[rel] = stat.S_IMODE((top / rel).lstat().st_mode)
    return out


def _acls(top: Path) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for rel in (".", *(r for r, _ in DIRS)):
        try:
            out[rel] = os.getxattr(top / rel, "system.posix_acl_access")
        except OSError:
            out[rel] = None
    return out


def _default_acl(d: Path) -> None:
    """Owner rwx, owning group rwx under a mask of r-x, other nothing: a
    default ACL that masks differently from any umask."""
    entries = ((0x01, 7), (0x04, 7), (0x10, 5), (0x20, 0))
    blob = (2).to_bytes(4, "little") + b"".join(
        tag.to_bytes(2, "little") + perm.to_bytes(2, "little") + b"\xff" * 4
        for tag, perm in entries)
    try:
        os.setxattr(d, _ACL_DEFAULT, blob)
    except OSError as err:
        require(False, f"a default ACL on {d} ({err.strerror})")


@pytest.mark.parametrize("parent", ["plain", "default-acl"])
@pytest.mark.parametrize("kind", ["btrfs", "xfs", "ext4"])
def test_created_directories_get_the_modes_cp_r_gives_them(
    request: pytest.FixtureRequest, kind: str, parent: str
) -> None:
    base: Path = request.getfixturevalue(f"{kind}_dir")
    src = base / "src"
    _source(src)
    into = base / "into"
    into.mkdir()
    if parent == "default-acl":
        _default_acl(into)
    # GNU cp, on the same filesystem under the same umask, is the oracle.
    subprocess.run(["cp", "-r", str(src), str(into / "by-cp")], check=True)
    # A fresh worktree (one staged root), and new directories in an
    # existing one (a staged root each).
    existing = into / "existing"
    existing.mkdir(mode=0o711)
    existing.chmod(0o711)
    report = mirror(src, [into / "fresh", existing])
    assert report.ok, report.to_dict()

    cp = _modes(into / "by-cp")
    assert _modes(into / "fresh") == cp
    assert {k: v for k, v in _modes(existing).items() if k != "."} == {
        k: v for k, v in cp.items() if k != "."}
    assert _acls(into / "fresh") == _acls(into / "by-cp")
    if parent == "plain":
        # What cp's rule is: the source's bits, sticky included, under the
        # umask; mkdir drops a set-ID bit it is given.
        umask = _umask()
        assert cp == {"." if r == "" else r: m & 0o1777 & ~umask
                      for r, m in (("", 0o750), *DIRS)}
    # A read-only source directory still got its file, and its child.
    for top in (into / "fresh", existing):
        assert (top / "ro" / "inner" / "f").read_bytes() == b"ro/inner"
        assert (top / "none" / "f").read_bytes() == b"none"


def test_a_directory_that_was_there_keeps_its_mode(btrfs_dir: Path) -> None:
    src = btrfs_dir / "src"
    _source(src)
    wt = btrfs_dir / "wt"
    (wt / "private").mkdir(parents=True)
    # cp -r into existing directories leaves their modes alone (without -p).
    wt.chmod(0o705)
    (wt / "private").chmod(0o777)
    assert mirror(src, [wt]).ok
    assert stat.S_IMODE(wt.stat().st_mode) == 0o705
    assert stat.S_IMODE((wt / "private").stat().st_mode) == 0o777
    assert stat.S_IMODE((wt / "ro").stat().st_mode) == 0o500 & ~_umask()


def test_stopped_mirror_publishes_what_it_made_with_the_source_modes(ext4_dir: Path) -> None:
    src = ext4_dir / "src"
    (src / "private").mkdir(parents=True)
    write_file(src / "private" / "f", b"x")
    (src / "private").chmod(0o700)
    src.chmod(0o750)
    os.mkfifo(src / "pipe")
    wt = ext4_dir / "wt"
    # The FIFO stops the directories and links; the finished file is still
    # published, and so its directories are, and with their sources' modes.
    report = mirror(src, [wt], stop_on_error=True)
    assert not report.ok and report.files.ok
    assert (wt / "private" / "f").read_bytes() == b"x"
    assert stat.S_IMODE((wt / "private").stat().st_mode) == 0o700
    assert stat.S_IMODE(wt.stat().st_mode) == 0o750 & ~_umask()


def _staged_dir_modes(parent: Path) -> dict[str, int]:
    """The modes of every directory in ``parent``'s staged trees (the
    batch's hidden ``.NAME.cowprobe-*`` roots), as they are right now."""
    seen: dict[str, int] = {}
    for entry in os.scandir(parent):
        if ".cowprobe-" in entry.name and entry.is_dir(follow_symlinks=False):
            for top, dirs, _files in os.walk(entry.path):
                seen[top] = stat.S_IMODE(os.lstat(top).st_mode)
                for d in dirs:
                    seen[os.path.join(top, d)] = stat.S_IMODE(
                        os.lstat(os.path.join(top, d)).st_mode)
    return seen


@pytest.mark.parametrize("how", ["mirror", "materialize"])
def test_no_directory_is_open_to_others_while_it_is_filled(btrfs_dir: Path, how: str) -> None:
    src = btrfs_dir / "src"
    for rel in ("a", "a/b", "c"):
        (src / rel).mkdir(parents=True)
        (src / rel).chmod(0o777)
        for i in range(3):
            write_file(src / rel / f"f{i}", bytes([i]) * 100)
    src.chmod(0o755)
    looked: list[int] = []
    open_to_others: dict[str, int] = {}

    # Called by the worker as each file is in: the staged trees are then
    # mid-fill, and nobody but their owner may look into any of them.
    def look(_r: JobResult) -> None:
        modes = _staged_dir_modes(btrfs_dir)
        looked.append(len(modes))
        open_to_others.update({k: v for k, v in modes.items() if v & 0o077})

    wt = btrfs_dir / "wt"
    if how == "mirror":
        assert mirror(src, [wt], workers=1, on_result=look).ok
    else:
        jobs = [(p, wt / p.relative_to(src)) for p in sorted(src.rglob("f*"))]
        assert materialize(jobs, workers=1, on_result=look, worktrees=[wt]).ok
    assert len(looked) == 9 and min(looked) >= 2
    assert open_to_others == {}
    # Once published: the source's bits under the umask for the mirror,
    # mkdir's own 0777 under the umask for a plain batch's parents.
    umask = _umask()
    for rel in (".", "a", "a/b", "c"):
        want = 0o755 if how == "mirror" and rel == "." else 0o777
        assert stat.S_IMODE((wt / rel).stat().st_mode) == want & ~umask, rel


# Run as nobody from a copy of the probe package in the world-readable
# directory: the checkout may sit where nobody can read (CI's does). With
# "appear", the worktree is made while the batch runs (after its first
# file), so the publish merges the staged tree into it entry by entry.
_AS_NOBODY = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
import probe
wt = sys.argv[3]
def appear(_result):
    if not os.path.isdir(wt):
        os.mkdir(wt)
on_result = appear if sys.argv[4] == "appear" else None
report = probe.mirror(sys.argv[2], [wt], workers=1, on_result=on_result)
print(json.dumps(report.to_dict()))
"""


@pytest.fixture
def arena() -> Iterator[Path]:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        require(False, "root and setpriv (to run the mirror as nobody)")
    with world_dir("cowprobe-dirmodes-") as base:
        importable_copy(base)
        src = base / "src"
        _source(src)
        src.chmod(0o755)
        # The tree must be readable by nobody, read-only directories included.
        for rel, mode in DIRS:
            (src / rel).chmod(mode | 0o005)
        out = base / "out"
        out.mkdir()
        os.chown(out, 65534, 65534)
        yield base


def _mirror_as_nobody(arena: Path, how: str) -> dict[str, Any]:
    python = os.path.realpath(sys.executable)
    run = subprocess.run(
        [*NOBODY, python, "-I", "-B", "-c", _AS_NOBODY, str(arena / "lib"), str(arena / "src"),
         str(arena / "out" / "wt"), how],
        cwd=arena, capture_output=True, text=True, check=False, timeout=120)
    assert run.returncode == 0, run.stderr
    doc: dict[str, Any] = json.loads(run.stdout)
    return doc


def _assert_filled_read_only_dirs(wt: Path) -> None:
    # nobody filled its read-only directories, and they ended read-only.
    umask = _umask()
    for rel, mode in DIRS:
        assert (wt / rel / "f").read_bytes() == rel.encode(), rel
        assert stat.S_IMODE((wt / rel).stat().st_mode) == (mode | 0o005) & 0o1777 & ~umask, rel
        assert (wt / rel).stat().st_uid == 65534


def test_unreadable_source_directory_is_reported_with_its_errno_as_nobody(
    arena: Path,
) -> None:
    src = arena / "src"
    # Root's, and root's alone: nobody may see that it exists, not list it.
    (src / "secret").mkdir(mode=0o700)
    write_file(src / "secret" / "key", b"root only", 0o600)
    (src / "secret").chmod(0o700)
    doc = _mirror_as_nobody(arena, "")
    failed = [e for e in doc["entries"] if e["status"] == "failed"]
    assert failed == [{
        "kind": "directory", "source": str(src / "secret"), "dest": None,
        "status": "failed", "errno": "EACCES",
        "error": f"not copied: cannot list the directory: {os.strerror(errno.EACCES)}",
    }]
    assert doc["totals"]["failed"] == 0 and doc["totals"]["failed_entries"] == 1
    wt = arena / "out" / "wt"
    assert not os.path.lexists(wt / "secret")
    _assert_filled_read_only_dirs(wt)


def test_read_only_directories_are_merged_into_a_worktree_that_appeared_as_nobody(
    arena: Path,
) -> None:
    # A directory moved into another parent needs its own write bit, and a
    # merge empties the staged tree: read-only modes must come after that.
    doc = _mirror_as_nobody(arena, "appear")
    assert doc["ok"], doc
    wt = arena / "out" / "wt"
    assert sorted(os.listdir(arena / "out")) == ["wt"]
    _assert_filled_read_only_dirs(wt)


def test_dest_dir_below_a_file_is_bad_usage_and_writes_nothing(
    btrfs_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = btrfs_dir / "src"
    (src / "d").mkdir(parents=True)
    write_file(src / "d" / "f", b"x")
    write_file(btrfs_dir / "file", b"a file")
    for bad in (btrfs_dir / "file" / "sub", btrfs_dir / "file" / "sub" / "deeper"):
        # A good DEST_DIR first: refused before any worktree is written.
        code = main(["materialize", "--no-progress", str(src), str(btrfs_dir / "wt"), str(bad)])
        assert code == EXIT_USAGE
        assert capsys.readouterr().err == (
            f"cowprobe materialize: DEST_DIR {bad}: {os.strerror(errno.ENOTDIR)}\n")
        assert sorted(p.name for p in btrfs_dir.iterdir()) == ["file", "src"]
        with pytest.raises(NotADirectoryError) as raised:
            mirror(src, [btrfs_dir / "wt", bad])
        assert raised.value.filename == str(bad)
        assert sorted(p.name for p in btrfs_dir.iterdir()) == ["file", "src"]
