"""Which filesystems a lab can hold, how each is made, and what the machine
must have to make them (tools, root, loop devices, kernel support)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

KINDS: tuple[str, ...] = ("btrfs", "xfs", "xfs-noreflink", "ext4", "tmpfs")


@dataclass(frozen=True)
class Spec:
    fstype: str
    mkfs: str | None
    mkfs_args: tuple[str, ...]
    size_mb: int
    mount_data: str
    package: str


# Sizes are each mkfs's minimum rounded up (mkfs.xfs refuses < 300 MiB,
# mkfs.btrfs ~110 MiB). The images are sparse, so the size costs no disk;
# only what mkfs writes (mostly the XFS log) is allocated. -K / nodiscard:
# discarding a fresh sparse file is pure waste. ext4's lazy init would spawn
# a kernel thread that zeroes inode tables into the sparse image long after
# mkfs; the image reads as zeros already, so noinit_itable skips it.
SPECS: dict[str, Spec] = {
    "btrfs": Spec("btrfs", "mkfs.btrfs", ("-f", "-q", "-K"), 128, "", "btrfs-progs"),
    "xfs": Spec("xfs", "mkfs.xfs", ("-q", "-f", "-K", "-m", "reflink=1"), 300, "", "xfsprogs"),
    "xfs-noreflink": Spec(
        "xfs", "mkfs.xfs", ("-q", "-f", "-K", "-m", "reflink=0"), 300, "", "xfsprogs"
    ),
    "ext4": Spec(
        "ext4",
        "mkfs.ext4",
        ("-q", "-F", "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard"),
        32,
        "noinit_itable",
        "e2fsprogs",
    ),
    "tmpfs": Spec("tmpfs", None, (), 64, "mode=0755", ""),
}


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
    missing: list[str] = []
    if os.geteuid() != 0:
        missing.append(
            f"not root (running as uid {os.geteuid()}; mount(2) and loop devices need root)"
        )
    loop_kinds = [k for k in kinds if SPECS[k].mkfs is not None]
    if loop_kinds:
        if not Path("/dev/loop-control").exists():
            missing.append("no /dev/loop-control (loop module not loaded or not exposed here)")
        if shutil.which("losetup", path=path) is None:
            missing.append("losetup missing (install util-linux)")
    seen: set[str] = set()
    for kind in kinds:
        spec = SPECS[kind]
        if spec.mkfs and spec.mkfs not in seen:
            seen.add(spec.mkfs)
            if shutil.which(spec.mkfs, path=path) is None:
                missing.append(f"{spec.mkfs} missing (install {spec.package})")
        if spec.fstype not in seen:
            seen.add(spec.fstype)
            if not _kernel_has(spec.fstype):
                missing.append(f"kernel lacks {spec.fstype} (not in /proc/filesystems, no module)")
    return missing


def check_kinds(kinds: Iterable[str]) -> tuple[str, ...]:
    if isinstance(kinds, str):  # Lab("btrfs") would otherwise iterate letters
        kinds = (kinds,)
    out = tuple(dict.fromkeys(kinds))
    unknown = [k for k in out if k not in SPECS]
    if unknown:
        raise ValueError(f"unknown lab filesystem kind(s) {unknown}; known: {list(KINDS)}")
    return out
