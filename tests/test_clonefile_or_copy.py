"""clonefile_or_copy on every lab filesystem, through the real kernel.

The contract: on return dest holds exactly the source's bytes and mode
(cloned where the filesystem can, copied where not); an existing dest is
replaced only by a complete file, and survives every failure intact, with no
temporary file left behind.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from _files import write_file
from _kernel_view import dir_flags

from probe import SpecialFileError, clonefile_or_copy
from probe._linux import FS_NOCOW_FL, get_inode_flags
from probe.lab import KINDS, Lab

SIZE = 256 * 1024
CLONES = {"btrfs": True, "xfs": True, "xfs-noreflink": False, "ext4": False, "tmpfs": False}
HANG_GUARD_S = 30.0


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_077() -> Iterator[None]:
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def d(lab: Lab, kind: str) -> Path:
    return lab.scratch_dir(kind, "cloc")


# ---------------------------------------------------------------- success


@pytest.mark.parametrize("size", [0, 1, 4097, SIZE])
def test_exact_bytes_on_every_filesystem(kind: str, d: Path, size: int) -> None:
    data = os.urandom(size)
    write_file(d / "src", data)
    cloned = clonefile_or_copy(d / "src", d / "dst")
    assert (d / "dst").read_bytes() == data
    if size >= 4096:  # an empty or tiny file may clone or copy; big ones must follow the fs
        assert cloned is CLONES[kind]
    assert sorted(os.listdir(d)) == ["dst", "src"], "no temporary file may remain"


@pytest.mark.usefixtures("umask_077")
@pytest.mark.parametrize("mode", [0o755, 0o640, 0o600, 0o444])
def test_mode_follows_the_source_on_every_filesystem(d: Path, mode: int) -> None:
    write_file(d / "src", os.urandom(SIZE), mode=mode)
    clonefile_or_copy(d / "src", d / "dst")
    assert mode_of(d / "dst") == mode


def test_creates_destination_with_source_bytes(d: Path) -> None:
    """Seed: clonefile_or_copy_creates_destination_with_source_bytes."""
    write_file(d / "src.txt", b"hello reflink")
    clonefile_or_copy(d / "src.txt", d / "dst.txt")
    assert (d / "dst.txt").read_bytes() == b"hello reflink"


def test_overwrites_existing_destination(d: Path) -> None:
    """Seed: clonefile_or_copy_overwrites_existing_destination."""
    write_file(d / "src.txt", b"new content")
    write_file(d / "dst.txt", b"old content", mode=0o600)
    clonefile_or_copy(d / "src.txt", d / "dst.txt")
    assert (d / "dst.txt").read_bytes() == b"new content"
    assert mode_of(d / "dst.txt") == 0o644
    assert sorted(os.listdir(d)) == ["dst.txt", "src.txt"]


def test_writing_to_destination_does_not_mutate_source(d: Path) -> None:
    """Seed: writing_to_destination_does_not_mutate_source -- in place, too."""
    data = os.urandom(SIZE)
    write_file(d / "src.txt", data)
    clonefile_or_copy(d / "src.txt", d / "dst.txt")
    (d / "dst.txt").write_bytes(b"mutated dest")
    fd = os.open(d / "dst.txt", os.O_WRONLY)
    try:
        os.pwrite(fd, b"X" * 100, 0)
    finally:
        os.close(fd)
    assert (d / "src.txt").read_bytes() == data


def test_a_symlink_at_dest_is_replaced_not_followed(d: Path) -> None:
    data = os.urandom(SIZE)
    write_file(d / "src", data)
    write_file(d / "target", b"target bytes")
    (d / "dst").symlink_to("target")
    clonefile_or_copy(d / "src", d / "dst")
    assert not (d / "dst").is_symlink()
    assert (d / "dst").read_bytes() == data
    assert (d / "target").read_bytes() == b"target bytes"


@pytest.mark.parametrize(("src_kind", "dst_kind"), [("btrfs", "xfs"), ("xfs", "ext4")])
def test_across_filesystems_copies(lab: Lab, src_kind: str, dst_kind: str) -> None:
    data = os.urandom(SIZE)
    src = write_file(lab.scratch_dir(src_kind, "cloc") / "src", data, mode=0o750)
    dst = lab.scratch_dir(dst_kind, "cloc") / "dst"
    assert clonefile_or_copy(src, dst) is False
    assert dst.read_bytes() == data
    assert mode_of(dst) == 0o750


def test_into_a_nocow_directory_copies(lab: Lab) -> None:
    src = write_file(lab.scratch_dir("btrfs", "cloc") / "src", os.urandom(SIZE))
    nocow = lab.scratch_dir("btrfs", "cloc-nocow")
    dir_flags(nocow, add=FS_NOCOW_FL)
    assert clonefile_or_copy(src, nocow / "dst") is False
    assert (nocow / "dst").read_bytes() == src.read_bytes()
    # Copied for the reason under test: the dest really is NOCOW (the
    # temporary it was built as inherited the directory's +C).
    fd = os.open(nocow / "dst", os.O_RDONLY)
    try:
        assert get_inode_flags(fd) & FS_NOCOW_FL
    finally:
        os.close(fd)


# -------------------------------------------------- failures keep the dest


def assert_dest_intact(directory: Path, names: set[str], dst: Path, old: bytes) -> None:
    assert dst.read_bytes() == old
    assert set(os.listdir(directory)) == names, "a temporary file was left behind"


def test_fifo_source_fails_at_once_and_keeps_dest(d: Path) -> None:
    fifo = d / "fifo"
    os.mkfifo(fifo)
    write_file(d / "dst", b"old bytes")
    box: list[BaseException | None] = [None]

    def run() -> None:
        try:
            clonefile_or_copy(fifo, d / "dst")
        except BaseException as err:
            box[0] = err

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(HANG_GUARD_S)  # a hang guard, not synchronisation
    if t.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # free the stuck thread
        pytest.fail("clonefile_or_copy blocked on a FIFO source")
    assert isinstance(box[0], SpecialFileError)
    assert_dest_intact(d, {"fifo", "dst"}, d / "dst", b"old bytes")


def test_missing_source_is_a_loud_error_and_keeps_dest(d: Path) -> None:
    write_file(d / "dst", b"old bytes")
    with pytest.raises(FileNotFoundError) as exc:
        clonefile_or_copy(d / "missing", d / "dst")
    assert exc.value.errno == errno.ENOENT
    assert_dest_intact(d, {"dst"}, d / "dst", b"old bytes")


def test_directory_at_dest_is_refused_and_kept(d: Path) -> None:
    write_file(d / "src", b"x" * 4096)
    (d / "dst").mkdir()
    write_file(d / "dst" / "inside", b"keep")
    with pytest.raises(IsADirectoryError):
        clonefile_or_copy(d / "src", d / "dst")
    assert (d / "dst" / "inside").read_bytes() == b"keep"


@pytest.mark.parametrize(("tiny_kind", "size_mb"), [("ext4", 8), ("tmpfs", 2)])
def test_enospc_on_a_full_filesystem_keeps_dest(lab: Lab, tiny_kind: str, size_mb: int) -> None:
    """The copy fallback's ENOSPC is an error, never a silent short file."""
    tiny = lab.make_tiny(tiny_kind, size_mb)
    dst = write_file(tiny.mountpoint / "dst", b"old bytes")
    # Fill every last block; the filler stays, so nothing can be written.
    fd = os.open(tiny.mountpoint / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        chunk = b"\0" * (64 * 1024)
        with pytest.raises(OSError) as full:
            while True:
                os.write(fd, chunk)
        assert full.value.errno == errno.ENOSPC
        # A write() is allowed to be partial before it fails; finish the
        # last partial block too.
        with pytest.raises(OSError):
            while True:
                os.write(fd, b"\0")
    finally:
        os.close(fd)
    src = write_file(lab.scratch_dir("btrfs", "cloc-big") / "src", os.urandom(4 * SIZE))

    with pytest.raises(OSError) as exc:
        clonefile_or_copy(src, dst)

    assert exc.value.errno == errno.ENOSPC
    assert ".tmp" not in str(exc.value), "the error must name the dest, not our temporary"
    names = {"dst", "filler"} | ({"lost+found"} if tiny_kind == "ext4" else set())
    assert_dest_intact(tiny.mountpoint, names, dst, b"old bytes")


def test_readonly_destination_is_erofs_and_keeps_dest(lab: Lab) -> None:
    d = lab.scratch_dir("btrfs", "cloc-ro")
    write_file(d / "src", os.urandom(SIZE))
    write_file(d / "dst", b"old bytes")
    ro = lab.readonly_bind("btrfs") / d.relative_to(lab.path("btrfs"))

    with pytest.raises(OSError) as exc:
        clonefile_or_copy(ro / "src", ro / "dst")

    assert exc.value.errno == errno.EROFS
    # The operation's own error, not one from cleaning up after it, and
    # naming the dest the caller gave rather than the hidden temporary.
    assert exc.value.__context__ is None, repr(exc.value.__context__)
    assert exc.value.filename == str(ro / "dst")
    assert ".tmp" not in str(exc.value)
    assert_dest_intact(d, {"src", "dst"}, d / "dst", b"old bytes")


def test_immutable_directory_is_eperm_and_keeps_dest(lab: Lab, immutable_dir: Path) -> None:
    src = write_file(lab.scratch_dir("btrfs", "cloc") / "src", os.urandom(SIZE))
    with pytest.raises(PermissionError) as exc:
        clonefile_or_copy(src, immutable_dir / "dst")
    assert exc.value.errno == errno.EPERM
    assert exc.value.filename == str(immutable_dir / "dst")
    assert_dest_intact(immutable_dir, {"dst"}, immutable_dir / "dst", b"old bytes")


@pytest.mark.parametrize("which", ["source", "destination"])
def test_nul_in_a_path_is_a_value_error(d: Path, which: str) -> None:
    write_file(d / "src", b"x")
    args = [str(d / "src"), str(d / "dst")]
    args[0 if which == "source" else 1] += "\0"
    with pytest.raises(ValueError, match=which):
        clonefile_or_copy(*args)
    assert os.listdir(d) == ["src"]
