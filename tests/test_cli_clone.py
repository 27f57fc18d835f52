"""`cowprobe clone` through the real kernel on the lab."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from probe.lab import Lab

COWPROBE = [sys.executable, "-m", "probe.cli"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COWPROBE, *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def btrfs(cowprobe_lab: Lab) -> Path:
    return cowprobe_lab.scratch_dir("btrfs", "cli-clone")


@pytest.fixture
def ext4(cowprobe_lab: Lab) -> Path:
    return cowprobe_lab.scratch_dir("ext4", "cli-clone")


def test_clone_on_btrfs_reports_cloned(btrfs: Path) -> None:
    src = btrfs / "src"
    src.write_bytes(os.urandom(128 * 1024))
    src.chmod(0o751)
    proc = _run("clone", "--json", str(src), str(btrfs / "dst"))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["action"] == "cloned"
    assert (btrfs / "dst").read_bytes() == src.read_bytes()
    assert stat.S_IMODE((btrfs / "dst").stat().st_mode) == 0o751


def test_clone_on_ext4_copies_and_says_why(ext4: Path) -> None:
    src = ext4 / "src"
    src.write_bytes(b"x" * 70000)
    proc = _run("clone", str(src), str(ext4 / "dst"))
    assert proc.returncode == 0, proc.stderr
    expected = f"copied {src} -> {ext4 / 'dst'} (reflink unsupported: EOPNOTSUPP)"
    assert proc.stdout.strip() == expected
    assert (ext4 / "dst").read_bytes() == src.read_bytes()


def test_reflink_always_fails_cleanly_and_keeps_existing_dest(ext4: Path) -> None:
    src = ext4 / "src"
    src.write_bytes(b"new")
    dst = ext4 / "dst"
    dst.write_bytes(b"old")
    proc = _run("clone", "--reflink", "always", "--json", str(src), str(dst))
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["errno"] == "EOPNOTSUPP"
    assert dst.read_bytes() == b"old"
    assert sorted(p.name for p in ext4.iterdir()) == ["dst", "src"], "no temporary left behind"


def test_bad_input_exits_2(tmp_path: Path) -> None:
    missing = _run("clone", str(tmp_path / "nope"), str(tmp_path / "dst"))
    assert missing.returncode == 2
    assert "No such file or directory" in missing.stderr
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    # A FIFO source must be refused at once, not block waiting for a writer:
    # the subprocess timeout is the hang guard.
    proc = _run("clone", str(fifo), str(tmp_path / "dst"))
    assert proc.returncode == 2
    assert "FIFO" in proc.stderr
    assert not (tmp_path / "dst").exists()


def test_clone_onto_itself_exits_2_and_keeps_the_file(ext4: Path) -> None:
    src = ext4 / "a"
    src.write_bytes(b"keep")
    ino = src.stat().st_ino
    proc = _run("clone", str(src), f"{ext4}/./a")
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith("are the same file (DEST untouched)"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert (src.stat().st_ino, src.read_bytes()) == (ino, b"keep")


@pytest.mark.parametrize("case", ["no such directory", "a directory", "a device"])
def test_a_bad_dest_is_one_line_exit_2_and_kept(tmp_path: Path, case: str) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"x")
    dest, line = {
        "no such directory": (tmp_path / "nodir" / "d", f"{tmp_path / 'nodir'}: "
                              "No such file or directory"),
        "a directory": (tmp_path / "dir", f"{tmp_path / 'dir'}: destination is a directory"),
        "a device": (tmp_path / "null", f"{tmp_path / 'null'}: destination is a character "
                     "device, not a regular file: not replaced"),
    }[case]
    if case == "a directory":
        dest.mkdir()
    elif case == "a device":
        os.mknod(dest, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    before = _nodes(tmp_path)
    proc = _run("clone", str(src), str(dest))
    # A typo in DEST is bad input (2), said as "PATH: what", not as
    # Python's "[Errno 2] ...: 'PATH'" -- and a device's name is never
    # replaced by a regular file.
    assert (proc.returncode, proc.stderr) == (2, f"cowprobe clone: {line} (DEST untouched)\n")
    assert _nodes(tmp_path) == before


def _nodes(d: Path) -> dict[str, tuple[int, int, int]]:
    return {p.name: (p.lstat().st_ino, p.lstat().st_mode, p.lstat().st_rdev) for p in d.iterdir()}


def test_a_read_only_dest_names_no_leftover_that_does_not_exist(
    tmp_path: Path, read_only_dir: Path
) -> None:
    # EROFS comes before any lookup, so the failed unlink of our temporary
    # (never made) said nothing about whether it was there.
    src = tmp_path / "a"
    src.write_bytes(b"data")
    res = _run("clone", "--json", str(src), str(read_only_dir / "new"))
    assert res.returncode == 1, res.stderr
    assert "could not be removed" not in res.stderr
    doc = json.loads(res.stdout)
    assert doc.get("leftovers", []) == [], doc
    assert os.listdir(read_only_dir) == []
