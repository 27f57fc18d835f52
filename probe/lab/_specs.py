"""Which filesystems a lab can hold, how each is made, and what the machine
must have to make them (tools, root, loop devices, kernel support)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

KINDS: tuple[str, ...] = ("btrfs", "xfs", "xfs-noreflink", "ext4", "tmpfs")
#: overlayfs lanes, as container runtimes build them: lower, upper and work
#: on one filesystem of a base kind, or a read-only squashfs lower (an image
#: layer) with upper and work on tmpfs.
OVERLAY_KINDS: tuple[str, ...] = (
    "overlay-xfs", "overlay-btrfs", "overlay-ext4", "overlay-squashfs"
)
#: every lane the lab can build: the plain filesystems, then the overlays
LANES: tuple[str, ...] = KINDS + OVERLAY_KINDS


@dataclass(frozen=True)
class Spec:
    fstype: str
    mkfs: str | None
    mkfs_args: tuple[str, ...]
    size_mb: int
    mount_data: str
    package: str


# Sizes: big enough that an ordinary test suite runs unchanged on the lab
# (tmp_path keeps every test's files until the session ends, so a suite
# writing 100 MiB per test needs room for all of them). The images are
# sparse, so the size costs no disk until written; mkfs itself writes a few
# MiB (XFS: its 64 MiB log, at any size from 300 MiB up). -K / nodiscard:
# discarding a fresh sparse file is pure waste. ext4 gets 4 KiB blocks
# whatever the image size (mke2fs picks 1 KiB below 512 MiB, which quarters
# the largest file and slows big writes), and its lazy init would spawn a
# kernel thread zeroing inode tables into the sparse image long after mkfs;
# the image reads as zeros already, so noinit_itable skips it. tmpfs is
# memory: its default is the kernel's own (half of RAM), capped.
DEFAULT_SIZE_MB = 16 * 1024

SPECS: dict[str, Spec] = {
    "btrfs": Spec("btrfs", "mkfs.btrfs", ("-f", "-q", "-K"), DEFAULT_SIZE_MB, "", "btrfs-progs"),
    "xfs": Spec(
        "xfs", "mkfs.xfs", ("-q", "-f", "-K", "-m", "reflink=1"), DEFAULT_SIZE_MB, "", "xfsprogs"
    ),
    "xfs-noreflink": Spec(
        "xfs", "mkfs.xfs", ("-q", "-f", "-K", "-m", "reflink=0"), DEFAULT_SIZE_MB, "", "xfsprogs"
    ),
    "ext4": Spec(
        "ext4",
        "mkfs.ext4",
        ("-q", "-F", "-b", "4096", "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard"),
        DEFAULT_SIZE_MB,
        "noinit_itable",
        "e2fsprogs",
    ),
    "tmpfs": Spec("tmpfs", None, (), 0, "mode=0755", ""),
}


@dataclass(frozen=True)
class OverlaySpec:
    #: the lab kind holding upper and work (and the lower, unless ``lower_fs``)
    base: str
    #: a read-only image filesystem for the lower layer ("squashfs"), or None
    lower_fs: str | None = None
    lower_tool: str | None = None
    lower_package: str = ""


OVERLAYS: dict[str, OverlaySpec] = {
    "overlay-xfs": OverlaySpec("xfs"),
    "overlay-btrfs": OverlaySpec("btrfs"),
    "overlay-ext4": OverlaySpec("ext4"),
    "overlay-squashfs": OverlaySpec("tmpfs", "squashfs", "mksquashfs", "squashfs-tools"),
}


def default_size_mb(kind: str) -> int:
    """The size a lab gives ``kind`` unless told otherwise."""
    if kind in OVERLAYS:
        return default_size_mb(OVERLAYS[kind].base)
    if kind != "tmpfs":
        return SPECS[kind].size_mb
    try:
        with open("/proc/meminfo") as fh:
            kib = next(int(line.split()[1]) for line in fh if line.startswith("MemTotal:"))
    except (OSError, StopIteration, ValueError):
        return 1024
    return max(64, min(DEFAULT_SIZE_MB, kib // 1024 // 2))


def _kernel_has(fstype: str) -> bool:
    try:
        with Path("/proc/filesystems").open() as fh:
            if any(line.split()[-1] == fstype for line in fh if line.strip()):
                return True
    except OSError:
        return False
    # Not registered yet is fine if it is a module: mount(2) as root loads it.
    dep = Path("/lib/modules") / os.uname().release / "modules.dep"
    try:
        text = dep.read_text()
    except OSError:
        return False
    return f"/{fstype}.ko" in text


def missing_prerequisites(kinds: Iterable[str] = KINDS, *, path: str | None = None) -> list[str]:
    """What this machine lacks to build a lab of ``kinds``; empty if nothing.

    ``path`` is the search path for the tools (default: ``$PATH``).
    """
    kinds = check_kinds(kinds)
    parts = [OVERLAYS[k].base if k in OVERLAYS else k for k in kinds]
    missing: list[str] = []
    if os.geteuid() != 0:
        missing.append(
            f"not root (running as uid {os.geteuid()}; mount(2) and loop devices need root)"
        )
    images = [o for o in map(OVERLAYS.get, kinds) if o and o.lower_fs]
    if images or any(SPECS[k].mkfs is not None for k in parts):
        if not Path("/dev/loop-control").exists():
            missing.append("no /dev/loop-control (loop module not loaded or not exposed here)")
        if shutil.which("losetup", path=path) is None:
            missing.append("losetup missing (install util-linux)")
    needs = [(SPECS[k].mkfs, SPECS[k].package, SPECS[k].fstype) for k in parts]
    needs += [(o.lower_tool, o.lower_package, o.lower_fs or "") for o in images]
    if any(k in OVERLAYS for k in kinds):
        needs.append((None, "", "overlay"))
    seen: set[str] = set()
    for tool, package, fstype in needs:
        if tool and tool not in seen:
            seen.add(tool)
            if shutil.which(tool, path=path) is None:
                missing.append(f"{tool} missing (install {package})")
        if fstype not in seen:
            seen.add(fstype)
            if not _kernel_has(fstype):
                missing.append(f"kernel lacks {fstype} (not in /proc/filesystems, no module)")
    return missing


def check_kinds(kinds: Iterable[str]) -> tuple[str, ...]:
    if isinstance(kinds, str):  # Lab("btrfs") would otherwise iterate letters
        kinds = (kinds,)
    out = tuple(dict.fromkeys(kinds))
    unknown = [k for k in out if k not in SPECS and k not in OVERLAYS]
    if unknown:
        raise ValueError(f"unknown lab filesystem kind(s) {unknown}; known: {list(LANES)}")
    return out
