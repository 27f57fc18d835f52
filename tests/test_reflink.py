"""try_reflink / reflink through the real kernel, on the lab's filesystems.

Every row of the DESIGN.md scenario matrix that needs no fault injection,
plus the seed's tests. Each test asks the kernel: the outcome, the errno and
the on-disk state (inodes, FIEMAP's shared flag, leftover files) are what
the filesystem really did.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from _kernel_view import dir_flags

from probe import ReflinkOutcome, ReflinkResult, SpecialFileError, reflink, try_reflink
from probe._linux import FS_NOCOW_FL, get_inode_flags
from probe._linux import shared_bytes as _fd_shared_bytes
from probe._outcome import HOST_ERRNOS
from probe._platform import Platform, linux, open_source
from probe._reflink import reflink_at
from probe.lab import Lab

# Well above btrfs's max_inline (2 KiB): small files live inside btrfs
# metadata, where FIEMAP reports them inline and never shared.
SIZE = 256 * 1024
COW_KINDS = ("btrfs", "xfs")
NO_REFLINK_KINDS = ("ext4", "tmpfs", "xfs-noreflink")
HANG_GUARD_S = 30.0


def write_file(path: Path, data: bytes, mode: int = 0o644) -> Path:
    # Not tests/_files.write_file: fsynced, so FIEMAP sees real extents
    # rather than delayed allocation when a test counts shared bytes.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    return path


def shared_bytes(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        return _fd_shared_bytes(fd)
    finally:
        os.close(fd)


def guarded(fn: Callable[[], object], fifo: Path | None = None) -> BaseException | None:
    """Run ``fn`` in a thread and return what it raised (None if nothing).

    A hang guard, not synchronisation: the call must return at once; if it
    is still blocked after HANG_GUARD_S the test fails -- and a writer is
    opened on ``fifo`` first so the stuck thread can finish.
    """
    box: list[BaseException | None] = [None]

    def run() -> None:
        try:
            fn()
        except BaseException as err:
            box[0] = err

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(HANG_GUARD_S)
    if t.is_alive():
        if fifo is not None:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"call still blocked after {HANG_GUARD_S}s (a FIFO must never block)")
    return box[0]


@pytest.fixture
def btrfs(lab: Lab) -> Path:
    return lab.scratch_dir("btrfs", "reflink")


# ------------------------------------------------------------------ CLONED


@pytest.mark.parametrize("kind", COW_KINDS)
def test_clone_shares_blocks_with_a_distinct_inode(lab: Lab, kind: str) -> None:
    d = lab.scratch_dir(kind, "reflink")
    data = os.urandom(SIZE)
    src = write_file(d / "src", data)
    assert shared_bytes(src) == 0, "a fresh file must not start out shared"

    result = reflink(src, d / "dst")

    assert result == ReflinkResult(ReflinkOutcome.CLONED, None)
    s, t = os.stat(src), os.stat(d / "dst")
    assert (s.st_dev, s.st_ino) != (t.st_dev, t.st_ino)
    assert t.st_nlink == 1, "a clone is its own inode, not a hardlink"
    assert (d / "dst").read_bytes() == data
    # FIEMAP's shared flag: the kernel really points both files at the
    # same blocks (a copy would allocate new ones).
    assert shared_bytes(d / "dst") >= SIZE
    assert shared_bytes(src) >= SIZE


@pytest.mark.parametrize("kind", COW_KINDS)
def test_plain_copy_shows_no_shared_extents(lab: Lab, kind: str) -> None:
    # The control for the test above: FIEMAP's flag must tell a clone from
    # a copy, or that test proves nothing.
    d = lab.scratch_dir(kind, "reflink")
    data = os.urandom(SIZE)
    write_file(d / "src", data)
    write_file(d / "copy", (d / "src").read_bytes())
    assert shared_bytes(d / "copy") == 0
    assert shared_bytes(d / "src") == 0


@pytest.mark.parametrize("kind", COW_KINDS)
def test_writes_are_isolated_in_both_directions(lab: Lab, kind: str) -> None:
    d = lab.scratch_dir(kind, "reflink")
    data = os.urandom(SIZE)
    src = write_file(d / "src", data)
    dst = d / "dst"
    assert try_reflink(src, dst) is ReflinkOutcome.CLONED

    # In place, through O_RDWR without truncation: the write that would
    # corrupt every other "copy" if these were hardlinks.
    fd = os.open(dst, os.O_RDWR)
    try:
        os.pwrite(fd, b"D" * 4096, 8192)
    finally:
        os.close(fd)
    assert src.read_bytes() == data
    expect_dst = data[:8192] + b"D" * 4096 + data[8192 + 4096 :]
    assert dst.read_bytes() == expect_dst

    fd = os.open(src, os.O_RDWR)
    try:
        os.pwrite(fd, b"S" * 4096, 65536)
    finally:
        os.close(fd)
    assert dst.read_bytes() == expect_dst
    assert src.read_bytes() == data[:65536] + b"S" * 4096 + data[65536 + 4096 :]


@pytest.mark.parametrize("kind", COW_KINDS)
def test_successful_reflink_yields_distinct_inode(lab: Lab, kind: str) -> None:
    """Seed: successful_reflink_yields_distinct_inode -- here without the
    seed's soft skip: the lab guarantees a filesystem that clones."""
    d = lab.scratch_dir(kind, "seed")
    src = write_file(d / "src.txt", b"reflink inode test")
    assert try_reflink(src, d / "dst.txt") is ReflinkOutcome.CLONED
    assert os.stat(src).st_ino != os.stat(d / "dst.txt").st_ino
    assert (d / "dst.txt").read_bytes() == b"reflink inode test"


def test_clone_keeps_the_source_mode_under_a_restrictive_umask(btrfs: Path) -> None:
    # FICLONE copies data only; the exec bit is the library's job, and the
    # umask must not eat it.
    src = write_file(btrfs / "tool", os.urandom(SIZE), mode=0o751)
    old = os.umask(0o077)
    try:
        assert try_reflink(src, btrfs / "copy") is ReflinkOutcome.CLONED
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(btrfs / "copy").st_mode) == 0o751


def test_clone_across_a_bind_mount_of_btrfs(lab: Lab, btrfs: Path) -> None:
    bind = lab.bind_mount("btrfs")
    through = bind / btrfs.relative_to(lab.path("btrfs"))
    data = os.urandom(SIZE)
    src = write_file(btrfs / "src", data)
    dst = through / "dst"
    assert os.stat(bind).st_dev == os.stat(lab.path("btrfs")).st_dev

    # Linux >= 5.18 clones across two mounts of one filesystem (before, EXDEV).
    assert reflink(src, dst) == ReflinkResult(ReflinkOutcome.CLONED, None)
    assert dst.read_bytes() == data
    assert shared_bytes(dst) >= SIZE


def test_a_symlinked_source_is_followed(btrfs: Path) -> None:
    data = os.urandom(SIZE)
    write_file(btrfs / "real", data)
    (btrfs / "link").symlink_to("real")
    assert try_reflink(btrfs / "link", btrfs / "dst") is ReflinkOutcome.CLONED
    assert (btrfs / "dst").read_bytes() == data
    assert not (btrfs / "dst").is_symlink()


# ------------------------------------------------------------- UNSUPPORTED


@pytest.mark.parametrize("kind", NO_REFLINK_KINDS)
def test_filesystem_without_reflink_is_unsupported(lab: Lab, kind: str) -> None:
    d = lab.scratch_dir(kind, "reflink")
    src = write_file(d / "src", os.urandom(SIZE))
    before = set(os.listdir(d))

    result = reflink(src, d / "dst")

    assert result == ReflinkResult(ReflinkOutcome.UNSUPPORTED, errno.EOPNOTSUPP)
    assert result.errno_name == "EOPNOTSUPP"
    assert set(os.listdir(d)) == before, "the dest created for the clone must be removed"
    assert try_reflink(src, d / "dst") is ReflinkOutcome.UNSUPPORTED


@pytest.mark.parametrize(("src_kind", "dst_kind"), [("btrfs", "xfs"), ("xfs", "tmpfs")])
def test_cross_filesystem_is_unsupported_exdev(lab: Lab, src_kind: str, dst_kind: str) -> None:
    src = write_file(lab.scratch_dir(src_kind, "cross") / "src", os.urandom(SIZE))
    dst_dir = lab.scratch_dir(dst_kind, "cross")

    result = reflink(src, dst_dir / "dst")

    assert result == ReflinkResult(ReflinkOutcome.UNSUPPORTED, errno.EXDEV)
    assert os.listdir(dst_dir) == []


def test_btrfs_nocow_dest_against_a_cow_source_is_unsupported_einval(lab: Lab, btrfs: Path) -> None:
    nocow = lab.scratch_dir("btrfs", "nocow")
    dir_flags(nocow, add=FS_NOCOW_FL)
    # The premise: a file created in a +C directory inherits NOCOW.
    probe = nocow / "probe"
    probe.touch()
    fd = os.open(probe, os.O_RDONLY)
    try:
        assert get_inode_flags(fd) & FS_NOCOW_FL
    finally:
        os.close(fd)
    probe.unlink()
    src = write_file(btrfs / "src", os.urandom(SIZE))

    result = reflink(src, nocow / "dst")

    assert result == ReflinkResult(ReflinkOutcome.UNSUPPORTED, errno.EINVAL)
    assert os.listdir(nocow) == []


# --------------------------------------------------------- SOURCE_VANISHED


def test_try_reflink_missing_source_reports_vanished_not_unsupported(btrfs: Path) -> None:
    """Seed: a missing source is SOURCE_VANISHED (per-blob), never the
    batch-wide UNSUPPORTED, no syscall is issued and no dest is created."""
    src, dst = btrfs / "does-not-exist.txt", btrfs / "dst.txt"
    assert not src.exists()

    assert reflink(src, dst) == ReflinkResult(ReflinkOutcome.SOURCE_VANISHED, None)
    assert try_reflink(src, dst) is ReflinkOutcome.SOURCE_VANISHED
    assert not dst.exists()
    assert not os.path.lexists(dst)


def test_source_under_a_file_counts_as_vanished(btrfs: Path) -> None:
    # ENOTDIR: a parent of the source became a file (a pruned directory
    # replaced by something else) -- the source is just as gone.
    write_file(btrfs / "parent", b"x")
    assert try_reflink(btrfs / "parent" / "blob", btrfs / "dst") is ReflinkOutcome.SOURCE_VANISHED
    assert not (btrfs / "dst").exists()


def test_source_vanishing_between_precheck_and_open(btrfs: Path) -> None:
    """The TOCTOU window after the pre-check, made deterministic at the
    platform seam: the real unlink runs right before the real open, so the
    kernel's own ENOENT reaches the classifier."""
    src = write_file(btrfs / "src", os.urandom(SIZE))
    real = linux()

    def clone_after_unlink(source: str, dest: str, dir_fd: int | None) -> None:
        os.unlink(source)
        real.clone(source, dest, dir_fd)

    plat = Platform("linux", HOST_ERRNOS, clone_after_unlink)
    result = reflink_at(str(src), str(btrfs / "dst"), None, platform=plat)

    assert result == ReflinkResult(ReflinkOutcome.SOURCE_VANISHED, errno.ENOENT)
    assert os.listdir(btrfs) == []


def test_concurrent_unlink_race(btrfs: Path) -> None:
    """A real race: one thread deletes sources while another clones them.

    Every attempt must end CLONED (the open won: the dest is a complete
    clone) or SOURCE_VANISHED (the unlink won: no dest at all) -- never an
    exception, never a half-made dest.
    """
    rounds = 300
    blobs = [os.urandom(64 * 1024) for _ in range(4)]
    srcs = [write_file(btrfs / f"src{i}", blobs[i % 4]) for i in range(rounds)]
    results: list[ReflinkOutcome | BaseException] = []
    gate = threading.Barrier(2)

    def deleter() -> None:
        for s in srcs:
            gate.wait()
            s.unlink()

    t = threading.Thread(target=deleter)
    t.start()
    try:
        for i, s in enumerate(srcs):
            gate.wait()  # both threads start this round together
            try:
                results.append(try_reflink(s, btrfs / f"dst{i}"))
            except BaseException as err:
                results.append(err)
    finally:
        t.join(HANG_GUARD_S)
    assert not t.is_alive()

    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == []
    for i, r in enumerate(results):
        dst = btrfs / f"dst{i}"
        if r is ReflinkOutcome.SOURCE_VANISHED:
            assert not os.path.lexists(dst), f"round {i}: vanished source left a dest"
        else:
            assert r is ReflinkOutcome.CLONED, f"round {i}: {r}"
            assert dst.read_bytes() == blobs[i % 4], f"round {i}: clone is incomplete"
    counts = {o: results.count(o) for o in ReflinkOutcome}
    print(f"race outcomes over {rounds} rounds: { {o.name: n for o, n in counts.items()} }")


# ------------------------------------------------------------------ errors


def test_enoent_with_the_source_present_is_an_error(btrfs: Path) -> None:
    src = write_file(btrfs / "src", os.urandom(SIZE))
    dst = btrfs / "no-such-dir" / "dst"

    with pytest.raises(FileNotFoundError) as exc:
        reflink(src, dst)

    assert exc.value.errno == errno.ENOENT
    assert exc.value.filename == str(dst), "the error must name the path that is missing"
    assert src.exists()


def test_immutable_dest_dir_is_an_eperm_error(btrfs: Path, immutable_dir: Path) -> None:
    src = write_file(btrfs / "src", os.urandom(SIZE))
    with pytest.raises(PermissionError) as exc:
        reflink(src, immutable_dir / "new")
    assert exc.value.errno == errno.EPERM
    assert os.listdir(immutable_dir) == ["dst"]


def test_readonly_bind_is_an_erofs_error(lab: Lab, btrfs: Path) -> None:
    ro = lab.readonly_bind("btrfs")
    src = write_file(btrfs / "src", os.urandom(SIZE))
    with pytest.raises(OSError) as exc:
        reflink(src, ro / btrfs.relative_to(lab.path("btrfs")) / "dst")
    assert exc.value.errno == errno.EROFS
    assert os.listdir(btrfs) == ["src"]


@pytest.mark.parametrize("kind", ["btrfs", "ext4"])
def test_existing_dest_is_never_clobbered(lab: Lab, kind: str) -> None:
    d = lab.scratch_dir(kind, "exists")
    src = write_file(d / "src", os.urandom(SIZE))
    dst = write_file(d / "dst", b"old bytes", mode=0o640)
    ino = os.stat(dst).st_ino

    with pytest.raises(FileExistsError) as exc:
        reflink(src, dst)

    assert exc.value.errno == errno.EEXIST
    assert dst.read_bytes() == b"old bytes"
    st = os.stat(dst)
    assert (st.st_ino, stat.S_IMODE(st.st_mode)) == (ino, 0o640)


@pytest.mark.parametrize("target_exists", [True, False])
def test_symlink_at_dest_is_never_followed(btrfs: Path, target_exists: bool) -> None:
    src = write_file(btrfs / "src", os.urandom(SIZE))
    target = btrfs / "target"
    if target_exists:
        write_file(target, b"target bytes")
    (btrfs / "dst").symlink_to(target)

    with pytest.raises(FileExistsError):
        reflink(src, btrfs / "dst")

    assert (btrfs / "dst").is_symlink()
    if target_exists:
        assert target.read_bytes() == b"target bytes"
    else:
        assert not target.exists(), "a dangling symlink's target must not be created"


# --------------------------------------------------------------- bad input


def test_directory_source_is_refused(btrfs: Path) -> None:
    (btrfs / "adir").mkdir()
    with pytest.raises(IsADirectoryError):
        reflink(btrfs / "adir", btrfs / "dst")
    assert not os.path.lexists(btrfs / "dst")


def test_fifo_source_is_refused_without_blocking(btrfs: Path) -> None:
    fifo = btrfs / "fifo"
    os.mkfifo(fifo)
    err = guarded(lambda: reflink(fifo, btrfs / "dst"), fifo)
    assert isinstance(err, SpecialFileError), err
    assert "FIFO" in str(err)
    assert not os.path.lexists(btrfs / "dst")


def test_open_source_refuses_a_fifo_without_blocking(btrfs: Path) -> None:
    # The second line of defence, for a path swapped for a FIFO after the
    # pre-check: the open itself must not wait for a writer.
    fifo = btrfs / "fifo"
    os.mkfifo(fifo)
    err = guarded(lambda: open_source(str(fifo)), fifo)
    assert isinstance(err, SpecialFileError), err


def test_socket_source_is_refused(btrfs: Path) -> None:
    path = btrfs / "sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(path))
        with pytest.raises(SpecialFileError, match="socket"):
            reflink(path, btrfs / "dst")
    assert not os.path.lexists(btrfs / "dst")


def test_device_source_is_refused(btrfs: Path) -> None:
    err = guarded(lambda: reflink("/dev/null", btrfs / "dst"))
    assert isinstance(err, SpecialFileError), err
    assert "character device" in str(err)
    assert not os.path.lexists(btrfs / "dst")


@pytest.mark.parametrize("which", ["source", "destination"])
def test_nul_in_a_path_is_a_value_error_naming_the_argument(btrfs: Path, which: str) -> None:
    src = write_file(btrfs / "src", b"x" * 4096)
    args = [str(src), str(btrfs / "dst")]
    args[0 if which == "source" else 1] += "\0evil"
    with pytest.raises(ValueError, match=f"{which} path contains a NUL"):
        reflink(*args)
    with pytest.raises(ValueError, match=which):
        try_reflink(*args)
    assert os.listdir(btrfs) == ["src"]
