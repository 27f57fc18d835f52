"""What the capability report claims against what really happened, each
checked another way (the shell's tools, a second process, plain os calls):
a btrfs subvolume pair is one filesystem; a probe killed by SIGKILL leaves
no private directory for good (and a live one's is never taken); an
unprivileged caller's EPERM from fs.protected_hardlinks is not the
overlay's answer."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from _files import as_nobody
from _kernel_view import mounts_under

import probe
from probe._overlaykit import KIT_DIR, KIT_SPARES, write_kit
from probe._tempname import owner_tag
from probe.capabilities import PRIVATE_PREFIX, Status, probe_capabilities, probe_pair
from probe.lab import Lab
from probe.pytest_plugin import require

_NOBODY = 65534
#: where this very ``probe`` package is, for a child interpreter
_CHECKOUT = str(Path(probe.__file__).resolve().parent.parent)


def _root() -> None:
    require(os.geteuid() == 0, "root (mounts, btrfs subvolumes, dropping to nobody)")


# -- a pair of btrfs subvolumes --------------------------------------------------


def test_a_pair_of_btrfs_subvolumes_is_reported_as_one_filesystem(lab: Lab) -> None:
    _root()
    require(shutil.which("btrfs") is not None, "btrfs(8) from btrfs-progs")
    base = lab.scratch_dir("btrfs", "subvol-pair")
    plain, sub = base / "plain", base / "sub"
    plain.mkdir()
    subprocess.run(["btrfs", "subvolume", "create", str(sub)], check=True,
                   capture_output=True)
    try:
        # The premise: the two directories show different st_devs ...
        assert plain.stat().st_dev != sub.stat().st_dev
        # ... yet are one filesystem: cp(1) clones from one into the other,
        # and filefrag(8) sees the clone's extents shared.
        (plain / "f").write_bytes(os.urandom(128 * 1024))
        subprocess.run(["cp", "--reflink=always", str(plain / "f"), str(sub / "f")],
                       check=True)
        os.sync()
        frag = subprocess.run(["filefrag", "-v", str(sub / "f")], check=True,
                              capture_output=True, text=True).stdout
        assert "shared" in frag
        (plain / "f").unlink()
        (sub / "f").unlink()

        rep = probe_pair(plain, sub)
        assert rep.same_filesystem is True
        assert rep["reflink"].status is Status.SUPPORTED
        assert rep["copy_shares_blocks"].status is Status.SUPPORTED
        assert list(plain.iterdir()) == [] and list(sub.iterdir()) == []
    finally:
        subprocess.run(["btrfs", "subvolume", "delete", str(sub)], check=True,
                       capture_output=True)


def test_two_filesystems_are_still_reported_as_two(lab: Lab) -> None:
    a, b = lab.scratch_dir("btrfs", "pair-a"), lab.scratch_dir("xfs", "pair-b")
    rep = probe_pair(a, b)
    assert rep.same_filesystem is False
    assert rep["reflink"].status is Status.UNSUPPORTED
    assert rep["reflink"].errno_name == "EXDEV"


# -- a probe killed by SIGKILL ---------------------------------------------------

_KILLED = """
import os, signal, sys
from probe.capabilities._private import create_private
path = sys.argv[1]
tmp, why = create_private(os.open(path, os.O_RDONLY | os.O_DIRECTORY), path)
assert tmp is not None, why
os.mkdir("xattr", dir_fd=tmp.fd)
open(os.path.join(tmp.path, "xattr", "xattr-1"), "wb").close()
os.kill(os.getpid(), signal.SIGKILL)
"""


def _killed_probe(path: Path) -> str:
    """The private directory a probe killed by SIGKILL left in ``path``."""
    proc = subprocess.run([sys.executable, "-c", _KILLED, str(path)], check=False,
                          env={**os.environ, "PYTHONPATH": _CHECKOUT})
    assert proc.returncode == -signal.SIGKILL
    left = os.listdir(path)
    assert len(left) == 1 and left[0].startswith(PRIVATE_PREFIX)
    return left[0]


@pytest.mark.parametrize("kind", ["btrfs", "xfs", "ext4", "tmpfs"])
def test_a_sigkilled_probes_directory_is_removed_by_the_next_probe(lab: Lab, kind: str) -> None:
    d = lab.scratch_dir(kind, "killed")
    _killed_probe(d)
    rep = probe_capabilities(d, only=["hardlink"])
    assert rep["hardlink"].status is Status.SUPPORTED
    assert rep.leftover is None
    assert os.listdir(d) == []


def test_a_live_probes_directory_is_never_reaped(lab: Lab) -> None:
    d = lab.scratch_dir("xfs", "live")
    # A probe still running in this process: its pid is alive.
    from probe.capabilities._private import create_private

    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        tmp, _why = create_private(fd, str(d))
        assert tmp is not None
        try:
            probe_capabilities(d, only=["symlink"])
            assert os.listdir(d) == [tmp.name]
        finally:
            assert tmp.remove() is None
        # A dead pid whose directory is still locked: a probe in another pid
        # namespace (a container sharing the volume) holds its lock.
        ended = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                                 stdin=subprocess.PIPE)
        tag = owner_tag(ended.pid)
        assert tag is not None
        ended.communicate(b"")
        assert owner_tag(ended.pid) is None
        name = f"{PRIVATE_PREFIX}{tag}-{'0' * 12}.d"
        os.mkdir(d / name, 0o700)
        held = os.open(d / name, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(held, fcntl.LOCK_SH)
            probe_capabilities(d, only=["symlink"])
            assert os.listdir(d) == [name]
        finally:
            os.close(held)
        # Its lock gone too: now it is reaped.
        probe_capabilities(d, only=["symlink"])
        assert os.listdir(d) == []
    finally:
        os.close(fd)


def test_a_directory_that_is_not_a_probes_is_never_reaped(lab: Lab) -> None:
    d = lab.scratch_dir("ext4", "foreign")
    tag = "1-1-00000000"  # a dead owner of another boot
    (d / f"{PRIVATE_PREFIX}{tag}-{'a' * 12}.d").write_bytes(b"a file, not a directory")
    (d / f"{PRIVATE_PREFIX}{'b' * 12}.d").mkdir()  # an old name: no owner to prove dead
    theirs = d / f"{PRIVATE_PREFIX}{tag}-{'c' * 12}.d"
    theirs.mkdir()
    os.chown(theirs, _NOBODY, _NOBODY)  # another user's
    before = sorted(os.listdir(d))
    probe_capabilities(d, only=["symlink"])
    assert sorted(os.listdir(d)) == before


# -- overlayfs: a lower-layer hard link as an unprivileged user -------------------


@contextlib.contextmanager
def _overlay(lab: Lab) -> Iterator[Path]:
    """An overlay on XFS layers with the lab's lower-layer kit, mounted where
    an unprivileged user can reach it; ``sub`` in it is world-writable."""
    layers = lab.scratch_dir("xfs", "ovl")
    lower, upper, work = (layers / n for n in ("lower", "upper", "work"))
    for p in (lower, upper, work):
        p.mkdir()
    write_kit(lower)
    top = Path(tempfile.mkdtemp(prefix="cowprobe-truth-ovl-"))
    try:
        top.chmod(0o755)
        merged = top / "merged"
        merged.mkdir()
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={lower},upperdir={upper},workdir={work}", str(merged)],
                       check=True)
        try:
            (merged / "sub").mkdir()
            (merged / "sub").chmod(0o1777)
            yield merged
        finally:
            subprocess.run(["umount", str(merged)], check=True)
        assert mounts_under(top) == []
    finally:
        shutil.rmtree(top)


def _link_errno(src: str, dst: str) -> int | None:
    try:
        os.link(src, dst)
    except OSError as err:
        return err.errno
    os.unlink(dst)
    return None


def _probe_hardlink(path: str) -> tuple[str, str | None]:
    cap = probe_capabilities(path, only=["overlay_hardlink"])["overlay_hardlink"]
    return cap.status.value, cap.errno_name




def test_an_unprivileged_users_protected_hardlinks_eperm_is_not_the_overlays_no(
        lab: Lab) -> None:
    _root()
    require(shutil.which("mount") is not None, "mount(8)")
    with _overlay(lab) as merged:
        spares = merged / KIT_DIR / KIT_SPARES
        first, second = sorted(os.listdir(spares))[:2]
        # The truth, asked with link(2) itself: nobody is refused a link to
        # root's lower-layer file (EPERM: fs.protected_hardlinks, the file
        # is another user's) -- while root's own link of another works.
        assert as_nobody(_link_errno, str(spares / first), str(merged / "sub" / "l")) == errno.EPERM
        os.link(spares / second, merged / "sub" / "root-link")
        assert os.stat(merged / "sub" / "root-link").st_nlink == 2
        os.unlink(merged / "sub" / "root-link")
        # The overlay can hard-link a lower file, so nobody's EPERM is no
        # "no": the probe could not tell.
        assert as_nobody(_probe_hardlink, str(merged / "sub")) == ("could-not-tell", "EPERM")
        assert os.listdir(merged / "sub") == []
        assert probe_capabilities(merged / "sub", only=["overlay_hardlink"])[
            "overlay_hardlink"].status is Status.SUPPORTED
        assert not [n for n in os.listdir(merged / "sub") if n.startswith(PRIVATE_PREFIX)]
