"""Issue 14 on the lab: never means a physical copy, holes stay holes,
arguments are checked, every accepted name works, fsync publishes."""

from __future__ import annotations

import errno
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from probe import SpecialFileError, clone_or_copy
from probe._linux import shared_bytes
from probe.lab import Lab

COWPROBE = [sys.executable, "-m", "probe.cli"]
GIB = 1 << 30


def _data(path: Path, size: int = 4 << 20) -> Path:
    path.write_bytes(os.urandom(size))
    return path


def _shared(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        return shared_bytes(fd)
    finally:
        os.close(fd)


@pytest.fixture(params=["btrfs", "xfs"])
def cow_dir(request: pytest.FixtureRequest, cowprobe_lab: Lab) -> Path:
    return cowprobe_lab.scratch_dir(request.param, "never")


def test_reflink_never_shares_no_extent(cow_dir: Path) -> None:
    src = _data(cow_dir / "src")
    res = clone_or_copy(src, cow_dir / "dst", reflink="never")
    assert not res.cloned and res.attempt is None
    assert (cow_dir / "dst").read_bytes() == src.read_bytes()
    # copy_file_range on btrfs/XFS clones: "never" must not have used it.
    assert _shared(cow_dir / "dst") == 0
    assert _shared(src) == 0


def test_cli_reflink_never_shares_no_extent(cow_dir: Path) -> None:
    src = _data(cow_dir / "src")
    proc = subprocess.run(
        [*COWPROBE, "clone", "--reflink", "never", str(src), str(cow_dir / "dst")],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert (cow_dir / "dst").read_bytes() == src.read_bytes()
    assert _shared(cow_dir / "dst") == 0


def test_reflink_auto_still_shares(cow_dir: Path) -> None:
    """The peer of the two tests above: FIEMAP does see sharing here."""
    src = _data(cow_dir / "src")
    assert clone_or_copy(src, cow_dir / "dst").cloned
    assert _shared(cow_dir / "dst") > 0


def _sparse(path: Path, size: int = GIB) -> bytes:
    """A file of ``size`` bytes with 64 KiB of data at its start, middle
    and end; the data, for checking."""
    chunk = os.urandom(64 * 1024)
    with open(path, "wb") as f:
        for off in (0, size // 2, size - len(chunk)):
            f.seek(off)
            f.write(chunk)
    return chunk


@pytest.mark.parametrize(
    ("src_kind", "dst_kind", "reflink"),
    [
        ("ext4", "ext4", "auto"),
        ("xfs", "xfs", "never"),
        ("btrfs", "btrfs", "never"),
        ("ext4", "xfs", "auto"),
        ("btrfs", "ext4", "auto"),
    ],
)
def test_sparse_copy_stays_sparse(
    cowprobe_lab: Lab, src_kind: str, dst_kind: str, reflink: str
) -> None:
    src = cowprobe_lab.scratch_dir(src_kind, "sparse") / "src"
    chunk = _sparse(src)
    dst = cowprobe_lab.scratch_dir(dst_kind, "sparse") / "dst"
    res = clone_or_copy(src, dst, reflink=reflink)  # type: ignore[arg-type]
    assert not res.cloned
    st_src, st_dst = src.stat(), dst.stat()
    assert st_dst.st_size == GIB == res.copied_bytes
    # Allocated like the source (filesystems round to their own extents),
    # not the 1 GiB a zero-writing copy allocates.
    assert st_dst.st_blocks * 512 <= max(4 * st_src.st_blocks * 512, 4 << 20)
    with open(dst, "rb") as f:
        assert f.read(len(chunk)) == chunk
        f.seek(GIB // 2)
        assert f.read(len(chunk)) == chunk
        f.seek(GIB // 2 - 4096)
        assert f.read(4096) == b"\0" * 4096
        f.seek(GIB - len(chunk))
        assert f.read() == chunk


def test_sparse_file_larger_than_a_tiny_filesystem_copies(cowprobe_lab: Lab) -> None:
    src = cowprobe_lab.scratch_dir("ext4", "sparse-big") / "src"
    chunk = _sparse(src, 16 * GIB)
    tiny = cowprobe_lab.make_tiny("ext4", 16)
    dst = tiny.mountpoint / "dst"
    clone_or_copy(src, dst)
    assert dst.stat().st_size == 16 * GIB
    with open(dst, "rb") as f:
        f.seek(16 * GIB - len(chunk))
        assert f.read() == chunk


def test_trailing_hole_keeps_the_size(ext4_dir: Path) -> None:
    src = ext4_dir / "src"
    with open(src, "wb") as f:
        f.write(b"head")
        f.truncate(64 << 20)
    clone_or_copy(src, ext4_dir / "dst")
    dst = ext4_dir / "dst"
    assert dst.stat().st_size == 64 << 20
    with open(dst, "rb") as f:
        assert f.read(4) == b"head"


@pytest.mark.parametrize("mode", [-1, 0o10000, 0o100644, True, "644", 0o4755, 0o2755])
def test_bad_modes_are_value_errors_and_write_nothing(tmpfs_dir: Path, mode: object) -> None:
    src = tmpfs_dir / "src"
    src.write_bytes(b"x")
    with pytest.raises(ValueError, match="mode"):
        clone_or_copy(src, tmpfs_dir / "dst", mode=mode)  # type: ignore[arg-type]
    assert sorted(os.listdir(tmpfs_dir)) == ["src"]


def test_sticky_and_plain_modes_are_accepted(tmpfs_dir: Path) -> None:
    src = tmpfs_dir / "src"
    src.write_bytes(b"x")
    clone_or_copy(src, tmpfs_dir / "dst", mode=0o1640)
    assert stat.S_IMODE((tmpfs_dir / "dst").stat().st_mode) == 0o1640


def test_setuid_source_bits_are_not_copied(tmpfs_dir: Path) -> None:
    src = tmpfs_dir / "src"
    src.write_bytes(b"x")
    src.chmod(0o4755)
    clone_or_copy(src, tmpfs_dir / "dst")
    assert stat.S_IMODE((tmpfs_dir / "dst").stat().st_mode) == 0o755


@pytest.mark.parametrize("reflink", [True, False, None, "bogus", "AUTO", 1])
def test_bad_reflink_values_are_value_errors(tmpfs_dir: Path, reflink: object) -> None:
    src = tmpfs_dir / "src"
    src.write_bytes(b"x")
    with pytest.raises(ValueError, match="reflink must be"):
        clone_or_copy(src, tmpfs_dir / "dst", reflink=reflink)  # type: ignore[arg-type]
    assert sorted(os.listdir(tmpfs_dir)) == ["src"]


@pytest.mark.parametrize("kind", ["btrfs", "ext4"])
def test_255_byte_multibyte_names_work_when_replacing(cowprobe_lab: Lab, kind: str) -> None:
    d = cowprobe_lab.scratch_dir(kind, "names")
    name = "é" * 127 + "x"  # 255 bytes in UTF-8, 128 characters
    assert len(os.fsencode(name)) == 255
    (d / name).write_bytes(b"old")  # forces the temporary + rename path
    src = _data(d / "src", 4096)
    clone_or_copy(src, d / name)
    assert (d / name).read_bytes() == src.read_bytes()
    assert sorted(os.listdir(d)) == sorted([name, "src"])


def test_undecodable_long_names_work(ext4_dir: Path) -> None:
    raw = b"\xff" * 200 + b"-" * 55
    name = os.fsdecode(raw)
    src = _data(ext4_dir / "src", 4096)
    clone_or_copy(src, ext4_dir / name)
    clone_or_copy(src, ext4_dir / name)  # replace: temporary built from it
    assert os.listdir(os.fsencode(ext4_dir)) == [b"src", raw] or sorted(
        os.listdir(os.fsencode(ext4_dir))
    ) == sorted([b"src", raw])


@pytest.mark.parametrize("kind", ["btrfs", "ext4"])
def test_fsync_publishes_and_replaces(cowprobe_lab: Lab, kind: str) -> None:
    d = cowprobe_lab.scratch_dir(kind, "fsync")
    src = _data(d / "src", 1 << 20)
    (d / "dst").write_bytes(b"old")
    res = clone_or_copy(src, d / "dst", fsync=True)
    assert res.cloned == (kind == "btrfs")
    assert (d / "dst").read_bytes() == src.read_bytes()
    # The exchange left the old file under a temporary; it must be gone.
    assert sorted(os.listdir(d)) == ["dst", "src"]
    assert res.leftovers == ()


def _entries(d: Path) -> dict[str, tuple[int, bytes]]:
    return {p.name: (p.lstat().st_ino, p.read_bytes() if p.is_file() else b"")
            for p in d.iterdir()}


@pytest.mark.parametrize("spelling", ["a", "./a", "sub/../a", "link"])
def test_the_source_own_entry_is_refused_and_kept(tmpfs_dir: Path, spelling: str) -> None:
    # Without the check each of these "copied a -> a": the file replaced by
    # a new inode holding its own bytes, other hard links left on the old.
    (tmpfs_dir / "a").write_bytes(b"mine")
    (tmpfs_dir / "sub").mkdir()
    (tmpfs_dir / "link").symlink_to("a")
    before = _entries(tmpfs_dir)
    cwd = os.getcwd()
    os.chdir(tmpfs_dir)
    try:
        with pytest.raises(ValueError, match="are the same file"):
            clone_or_copy(spelling, "a")
    finally:
        os.chdir(cwd)
    assert _entries(tmpfs_dir) == before, "nothing replaced, no temporary left"


def test_another_hard_link_of_the_source_is_replaced(tmpfs_dir: Path) -> None:
    src = tmpfs_dir / "a"
    src.write_bytes(b"shared")
    os.link(src, tmpfs_dir / "h")
    (tmpfs_dir / "d").mkdir()
    os.link(src, tmpfs_dir / "d" / "a")  # same name, another directory
    for dest in (tmpfs_dir / "h", tmpfs_dir / "d" / "a"):
        clone_or_copy(src, dest)
        assert dest.read_bytes() == b"shared"
        assert dest.stat().st_ino != src.stat().st_ino, "its own inode now"
    assert src.stat().st_nlink == 1


def _special(path: Path, kind: str) -> None:
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(str(path))
    else:  # the kernel's /dev/null, by its numbers: root makes it anywhere
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))


@pytest.mark.parametrize("kind", ["fifo", "socket", "chardev"])
def test_a_special_file_at_dest_is_refused_and_kept(tmpfs_dir: Path, kind: str) -> None:
    # The rename used to put a regular file in its place: `clone img
    # /dev/sdb` replaced the device's name (found with /dev/full).
    (tmpfs_dir / "a").write_bytes(b"data")
    dest = tmpfs_dir / "dest"
    _special(dest, kind)
    before = _entries(tmpfs_dir)
    with pytest.raises(SpecialFileError, match="not a regular file: not replaced") as info:
        clone_or_copy(tmpfs_dir / "a", dest)
    assert info.value.errno == errno.EEXIST and info.value.filename == str(dest)
    assert _entries(tmpfs_dir) == before, "the node kept, no temporary left"
