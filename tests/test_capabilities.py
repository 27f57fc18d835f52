"""The capability probe asked of every lab filesystem: each answer must be
the kernel's real behaviour there, every "yes" must have been verified,
and the probe must leave nothing behind -- also when a probe crashes, on
KeyboardInterrupt, on read-only and unwritable directories."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from _files import as_nobody, open_fds

from probe._linux import FS_IMMUTABLE_FL, get_inode_flags, set_inode_flags
from probe.capabilities import (
    CAPABILITY_NAMES,
    PRIVATE_PREFIX,
    CapabilityReport,
    ProbeContext,
    ProbePathError,
    Status,
    probe_capabilities,
    probe_pair,
    resolve_names,
)
from probe.lab import KINDS, Lab
from probe.pytest_plugin import require

S, U, C = Status.SUPPORTED, Status.UNSUPPORTED, Status.COULD_NOT_TELL
NOTSUP = errno.EOPNOTSUPP

_NO_CLONE = {
    "reflink": (U, NOTSUP),
    "clone_range": (U, NOTSUP),
    "dedupe": (U, NOTSUP),
    "fiemap_shared": (U, NOTSUP),
    # The copy works, and FIEMAP then shows it shares nothing: "no" with no
    # errno -- the check, not the kernel, said so.
    "copy_shares_blocks": (U, None),
}

#: No lower layer outside overlayfs (tests/test_capabilities_overlay.py has them).
_NOT_OVERLAY = dict.fromkeys(
    ("overlay_clone_lower", "overlay_copy_up", "overlay_rename_dir",
     "overlay_hardlink"), (U, None))

#: What the kernel (6.x) really does on each lab filesystem, found by
#: experiment; anything not listed is supported. tmpfs has user xattrs,
#: O_TMPFILE, O_DIRECT and punch hole on current kernels, but no FIEMAP and
#: no FALLOC_FL_ZERO_RANGE; without FIEMAP, whether a copy shares blocks
#: cannot be verified at all.
EXPECTED: dict[str, dict[str, tuple[Status, int | None]]] = {
    "btrfs": dict(_NOT_OVERLAY),
    "xfs": dict(_NOT_OVERLAY),
    "xfs-noreflink": {**_NO_CLONE, **_NOT_OVERLAY},
    "ext4": {**_NO_CLONE, **_NOT_OVERLAY},
    "tmpfs": {
        **_NO_CLONE,
        **_NOT_OVERLAY,
        "fiemap": (U, NOTSUP),
        "zero_range": (U, NOTSUP),
        "copy_shares_blocks": (C, NOTSUP),
    },
}
FSTYPE = {"btrfs": "btrfs", "xfs": "xfs", "xfs-noreflink": "xfs", "ext4": "ext4",
          "tmpfs": "tmpfs"}
MAGIC = {"btrfs": 0x9123683E, "xfs": 0x58465342, "xfs-noreflink": 0x58465342, "ext4": 0xEF53,
         "tmpfs": 0x01021994}


@pytest.fixture(scope="module")
def reports(cowprobe_lab: Lab) -> dict[str, tuple[Path, CapabilityReport, int, int]]:
    """One full probe per lab filesystem (fds before/after, for the leak check)."""
    out = {}
    for kind in KINDS:
        d = cowprobe_lab.scratch_dir(kind, "caps")
        before = open_fds()
        rep = probe_capabilities(d, label=kind)
        out[kind] = (d, rep, before, open_fds())
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_every_answer_is_the_kernels(reports: dict[str, tuple[Path, CapabilityReport, int, int]],
                                     kind: str) -> None:
    _d, rep, _b, _a = reports[kind]
    got = {c.name: (c.status, c.errno) for c in rep.capabilities}
    want = {name: EXPECTED[kind].get(name, (S, None)) for name in CAPABILITY_NAMES}
    assert got == want
    assert rep.limitation is None and rep.leftover is None


@pytest.mark.parametrize("kind", KINDS)
def test_every_answer_carries_evidence_and_time(
        reports: dict[str, tuple[Path, CapabilityReport, int, int]], kind: str) -> None:
    _d, rep, _b, _a = reports[kind]
    for cap in rep.capabilities:
        assert cap.evidence, cap.name
        assert cap.seconds > 0, cap.name
        if cap.status is not S:
            assert cap.reason, cap.name
        if cap.errno is not None:
            # The errno is in the evidence too: the call and what came back.
            assert any(cap.errno_name and cap.errno_name in line for line in cap.evidence), cap
    assert rep.seconds >= sum(c.seconds for c in rep.capabilities)


@pytest.mark.parametrize("kind", KINDS)
def test_nothing_left_behind(reports: dict[str, tuple[Path, CapabilityReport, int, int]],
                             kind: str) -> None:
    d, _rep, before, after = reports[kind]
    assert os.listdir(d) == []
    assert after == before


@pytest.mark.parametrize("kind", KINDS)
def test_identity(reports: dict[str, tuple[Path, CapabilityReport, int, int]], lab: Lab,
                  kind: str) -> None:
    d, rep, _b, _a = reports[kind]
    ident = rep.identity
    assert ident is not None
    assert ident.fstype == FSTYPE[kind]
    assert ident.magic == MAGIC[kind]
    assert ident.mount_point == str(lab.path(kind))
    st = os.stat(d)
    assert ident.device == f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    assert ident.block_size == os.statvfs(d).f_bsize > 0
    assert ident.available_bytes is not None and ident.total_bytes is not None
    assert 0 < ident.available_bytes <= ident.total_bytes
    assert ident.read_only is False
    assert "rw" in ident.mount_options
    if kind != "tmpfs":
        assert ident.source is not None and ident.source.startswith("/dev/loop")
    assert rep.real_path == os.path.realpath(d)


def test_max_name_length_is_tried_not_assumed(
        reports: dict[str, tuple[Path, CapabilityReport, int, int]]) -> None:
    for kind in KINDS:
        cap = reports[kind][1]["max_name_length"]
        assert cap.value == 255, kind
        # Tried on both sides of the limit.
        tries = next(line for line in cap.evidence if line.startswith("create tries"))
        assert "255: ok" in tries and "256: ENAMETOOLONG" in tries


def test_only_runs_the_named_capabilities(lab: Lab) -> None:
    d = lab.scratch_dir("btrfs", "only")
    rep = probe_capabilities(d, only=["xattrs", "FICLONE", "reflink"])
    assert [c.name for c in rep.capabilities] == ["reflink", "xattr"]
    assert all(c.status is S for c in rep.capabilities)


def test_names_and_aliases() -> None:
    assert resolve_names(["user-xattr", "Exec_Bit", "reflink", "ficlone"]) == (
        "xattr", "chmod", "reflink")
    with pytest.raises(ValueError, match=r"unknown capability name.*nosuch"):
        resolve_names(["reflink", "nosuch"])


# ---------------------------------------------------------------- pairs


def test_pair_across_a_bind_mount_clones(lab: Lab) -> None:
    a = lab.scratch_dir("btrfs", "pair")
    b = lab.bind_mount("btrfs")
    before = sorted(os.listdir(b))
    rep = probe_pair(a, b)
    assert rep.same_filesystem is True
    assert {c.name: c.status for c in rep.capabilities} == {
        "reflink": S, "copy_file_range": S, "copy_shares_blocks": S}
    assert os.listdir(a) == [] and sorted(os.listdir(b)) == before


@pytest.mark.parametrize(("src", "dst"), [("btrfs", "xfs"), ("ext4", "tmpfs")])
def test_pair_across_filesystems_is_exdev(lab: Lab, src: str, dst: str) -> None:
    a, b = lab.scratch_dir(src, "pair"), lab.scratch_dir(dst, "pair")
    rep = probe_pair(a, b)
    assert rep.same_filesystem is False
    assert rep["reflink"].status is U and rep["reflink"].errno == errno.EXDEV
    # Since Linux 5.19 copy_file_range refuses across filesystem types too.
    assert rep["copy_file_range"].status is U and rep["copy_file_range"].errno == errno.EXDEV
    assert os.listdir(a) == [] and os.listdir(b) == []


# ---------------------------------------------------------------- lies


@pytest.fixture
def huge_tmpfs(lab: Lab) -> Iterator[Path]:
    """A tmpfs with huge=always: every write allocates a 2 MiB page, so a
    "sparse" file allocates everything -- a real kernel telling the lie."""
    mnt = lab.scratch_dir("ext4", "huge")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "huge=always,size=16m", "cowprobe-huge",
                        str(mnt)], capture_output=True, text=True, check=False)
    require(r.returncode == 0, f"cannot mount tmpfs with huge=always: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_sparse_file_that_allocated_everything_is_caught(huge_tmpfs: Path) -> None:
    rep = probe_capabilities(huge_tmpfs, only=["sparse", "punch_hole"])
    sparse = rep["sparse"]
    require("allocated 2097152" in " ".join(sparse.evidence),
            "this kernel's tmpfs huge=always did not allocate a huge page (THP off?)")
    assert sparse.status is U and sparse.errno is None
    assert "allocated everything" in (sparse.reason or "")
    # Punching still frees (the huge page is split), so that one is a yes.
    assert rep["punch_hole"].status is S
    assert os.listdir(huge_tmpfs) == []


def test_a_copy_that_is_not_the_source_is_caught(lab: Lab) -> None:
    # The verification every "clone/copy succeeded" goes through, fed two
    # real files that a lying call could have produced: an empty one (the
    # zero-length copy) and one with other bytes.
    from probe.capabilities._clone import _verify_copy
    from probe.capabilities._context import Trial

    d = lab.scratch_dir("ext4", "lie")
    (d / "src").write_bytes(b"x" * 8192)
    (d / "empty").write_bytes(b"")
    (d / "other").write_bytes(b"y" * 8192)
    fds = [os.open(d / n, os.O_RDONLY) for n in ("src", "empty", "other")]
    try:
        empty = _verify_copy(Trial(), "copy_file_range", fds[0], fds[1], b"x" * 8192)
        other = _verify_copy(Trial(), "FICLONE", fds[0], fds[2], b"x" * 8192)
        itself = _verify_copy(Trial(), "FICLONE", fds[0], fds[0], b"x" * 8192)
        fine = _verify_copy(Trial(), "FICLONE", fds[0], fds[2], b"y" * 8192)
    finally:
        for fd in fds:
            os.close(fd)
    assert empty is not None and empty.status is U and "holds 0 bytes" in (empty.reason or "")
    assert other is not None and "bytes differ" in (other.reason or "")
    assert itself is not None and "own inode" in (itself.reason or "")
    assert fine is None


def test_wrong_link_count_is_caught(lab: Lab) -> None:
    # A third name on the probe file before link(): the count is then 3,
    # not 2, exactly what a filesystem miscounting links would show.
    d = lab.scratch_dir("ext4", "links")

    def third_name(_cap: str, ctx: ProbeContext) -> None:
        real_create = ctx.create

        def create(name: str, data: bytes = b"", *, mode: int = 0o600,
                   flags: int = os.O_RDWR) -> int:
            fd = real_create(name, data, mode=mode, flags=flags)
            os.link(name, "third", src_dir_fd=ctx.dir_fd, dst_dir_fd=ctx.dir_fd)
            return fd

        ctx.create = create  # type: ignore[method-assign]

    rep = probe_capabilities(d, only=["hardlink"], hook=third_name)
    cap = rep["hardlink"]
    assert cap.status is U and "link count is 3, not 2" in (cap.reason or "")
    assert os.listdir(d) == []


def test_refused_chmod_is_not_a_yes_and_the_leftover_is_named(lab: Lab) -> None:
    # An immutable probe file refuses fchmod (EPERM): the probe must say
    # "could not tell", never "yes" -- and the file it then cannot delete
    # is reported, not silently left.
    d = lab.scratch_dir("ext4", "chmod")

    def immutable(_cap: str, ctx: ProbeContext) -> None:
        real_create = ctx.create

        def create(name: str, data: bytes = b"", *, mode: int = 0o600,
                   flags: int = os.O_RDWR) -> int:
            fd = real_create(name, data, mode=mode, flags=flags)
            set_inode_flags(fd, get_inode_flags(fd) | FS_IMMUTABLE_FL)
            return fd

        ctx.create = create  # type: ignore[method-assign]

    try:
        rep = probe_capabilities(d, only=["chmod"], hook=immutable)
    finally:
        for root, _dirs, files in os.walk(d):
            for f in files:
                fd = os.open(os.path.join(root, f), os.O_RDONLY)
                set_inode_flags(fd, get_inode_flags(fd) & ~FS_IMMUTABLE_FL)
                os.close(fd)
    left = os.listdir(d)
    for name in left:
        shutil.rmtree(d / name)
    cap = rep["chmod"]
    assert cap.status is C and cap.errno == errno.EPERM
    assert len(left) == 1 and left[0].startswith(PRIVATE_PREFIX)
    assert rep.leftover is not None and left[0] in rep.leftover


# ---------------------------------------------------------------- safety


def test_missing_path_and_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ProbePathError, match="no such directory"):
        probe_capabilities(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ProbePathError, match="not a directory"):
        probe_capabilities(tmp_path / "file")
    with pytest.raises(ProbePathError, match="not a directory"):
        probe_capabilities(tmp_path / "file" / "below")
    assert sorted(os.listdir(tmp_path)) == ["file"]


def test_read_only_filesystem_gets_a_read_only_report(lab: Lab) -> None:
    ro = lab.readonly_bind("btrfs")
    before = sorted(os.listdir(lab.path("btrfs")))
    rep = probe_capabilities(ro)
    assert rep.identity is not None and rep.identity.read_only is True
    assert "ro" in rep.identity.mount_options
    assert rep.limitation is not None and "read-only" in rep.limitation
    assert {c.status for c in rep.capabilities} == {C}
    assert {c.errno for c in rep.capabilities} == {errno.EROFS}
    assert len(rep.capabilities) == len(CAPABILITY_NAMES)
    assert sorted(os.listdir(lab.path("btrfs"))) == before


def test_immutable_directory_is_could_not_tell(lab: Lab) -> None:
    # Root ignores permission bits; an immutable directory refuses even root.
    d = lab.scratch_dir("ext4", "immutable")
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        set_inode_flags(fd, get_inode_flags(fd) | FS_IMMUTABLE_FL)
        try:
            rep = probe_capabilities(d)
        finally:
            set_inode_flags(fd, get_inode_flags(fd) & ~FS_IMMUTABLE_FL)
    finally:
        os.close(fd)
    assert rep.identity is not None and rep.identity.read_only is False
    assert rep.limitation is not None and "cannot create a probe directory" in rep.limitation
    assert {(c.status, c.errno) for c in rep.capabilities} == {(C, errno.EPERM)}
    assert os.listdir(d) == []


@pytest.fixture
def root_owned_dir() -> Iterator[Path]:
    # Not under the lab or tmp_path: their 0700 roots would stop "nobody"
    # before it ever reached the directory under test.
    d = Path(tempfile.mkdtemp(prefix="cowprobe-test-nobody-", dir="/tmp"))
    try:
        os.chmod(d, 0o755)  # noqa: S103 - searchable by "nobody", writable only by root
        yield d
    finally:
        shutil.rmtree(d)


def _probe_summary(d: str) -> dict[str, object]:
    rep = probe_capabilities(d)
    return {"limitation": rep.limitation,
            "answers": sorted({(c.status.value, c.errno) for c in rep.capabilities})}


def test_unwritable_directory_for_an_unprivileged_user(root_owned_dir: Path) -> None:
    # A forked child drops to nobody and probes a root-owned 0755 directory.
    d = root_owned_dir
    got = as_nobody(_probe_summary, str(d))
    assert "EACCES" in str(got["limitation"])
    assert got["answers"] == [("could-not-tell", errno.EACCES)]
    assert os.listdir(d) == []


def _outside(lab: Lab) -> Path:
    outside = lab.scratch_dir("btrfs", "outside")
    (outside / "precious").write_bytes(b"keep me")
    return outside


def test_a_crashing_probe_costs_one_answer_and_leaves_nothing(lab: Lab) -> None:
    d = lab.scratch_dir("btrfs", "crash")
    outside = _outside(lab)
    seen: list[str] = []

    def hook(name: str, ctx: ProbeContext) -> None:
        seen.append(ctx.path)
        assert Path(ctx.path).is_dir() and Path(ctx.path).parent.parent == d
        if name == "xattr":
            # Leave debris: a file, a subdirectory, and symlinks out of PATH
            # that a careless cleanup would follow.
            os.mkdir("sub", dir_fd=ctx.dir_fd)
            os.symlink(outside, "sub/out", dir_fd=ctx.dir_fd)
            os.symlink(outside / "precious", "link", dir_fd=ctx.dir_fd)
            ctx.create("debris", b"x")
            raise RuntimeError("injected")

    rep = probe_capabilities(d, hook=hook)
    cap = rep["xattr"]
    assert cap.status is C and "crashed: RuntimeError: injected" in (cap.reason or "")
    assert all(c.status is EXPECTED["btrfs"].get(c.name, (S, None))[0]
               for c in rep.capabilities if c.name != "xattr")
    assert len(seen) == len(CAPABILITY_NAMES)
    assert os.listdir(d) == []
    assert rep.leftover is None
    assert (outside / "precious").read_bytes() == b"keep me"


def test_keyboard_interrupt_propagates_after_cleanup(lab: Lab) -> None:
    d = lab.scratch_dir("xfs", "interrupt")
    outside = _outside(lab)
    fds = open_fds()

    def hook(name: str, ctx: ProbeContext) -> None:
        if name == "hardlink":
            os.symlink(outside, "escape", dir_fd=ctx.dir_fd)
            ctx.create("half-done", b"x")
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        probe_capabilities(d, hook=hook)
    assert os.listdir(d) == []
    assert open_fds() == fds
    assert (outside / "precious").read_bytes() == b"keep me"


def test_keyboard_interrupt_in_a_pair_cleans_both_sides(lab: Lab) -> None:
    a, b = lab.scratch_dir("btrfs", "pa"), lab.scratch_dir("xfs", "pb")

    def hook(name: str, ctx: ProbeContext) -> None:
        ctx.create("half-done", b"x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        probe_pair(a, b, hook=hook)
    assert os.listdir(a) == [] and os.listdir(b) == []
