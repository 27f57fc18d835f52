"""The real-filesystem lab: loopback btrfs, XFS (reflink on and off) and ext4,
plus a tmpfs, each a real kernel mount, built under one directory the lab owns;
and overlayfs lanes over them (``OVERLAY_KINDS``), as container runtimes
stack their layers.

Why a lab and not fixtures that mock the kernel: the answers cowprobe
classifies (EXDEV, EOPNOTSUPP, EINVAL for NOCOW, shared extents) come from the
filesystems themselves and change between kernels. Asking them is the only
test that means anything.

Shape on disk (one lab)::

    /tmp/cowprobe-lab-<pid>-<random>/
        owner.json    pid + process start time + boot id of the owner
        lock          flock'ed (shared) by the owner while it lives
        images/       sparse image files, one per loop-backed filesystem
        mnt/<kind>    the mountpoints
        bind/...      bind mounts handed out by bind_mount()/readonly_bind()

Several engineers run labs on one machine at the same time, so the lab only
ever unmounts what lies under its own root and only detaches loop devices it
can prove are backed by its own images. Leftovers of a lab whose owner died
(SIGKILL, OOM, a CI runner pulled away) are reaped by ``cleanup_stale()``,
which every new lab runs first; a lab whose owner is alive is never touched.

Layout: ``_specs`` (kinds, mkfs specs, prerequisites), ``_mounts`` (mount(2)
and unmounting; the mount table is ``probe._mounttable``'s), ``_loops``
(loop devices), ``_teardown`` (unmount, detach, delete a lab root),
``_overlay`` (overlayfs lanes: layers, the lower-layer kit, squashfs lower),
``_sizes`` (the size setting, the ENOSPC hint),
``_owner`` (owner record and stale-lab reaping; the liveness rule is
``probe._liveness``'s), ``_errors``, ``_lab`` (``Lab``, ``LabFs``).
``_devnodes`` (loop device nodes inside a container).
``mount_of`` / ``MountEntry`` answer "which mount serves this path" for
code outside the lab (the Docker entrypoint). Standard library only.
"""

from .._mounttable import MountEntry, mount_of
from ._devnodes import CAP_SYS_ADMIN, ensure_loop_nodes, has_capability
from ._errors import LabError, LabUnavailable
from ._lab import Lab, LabFs
from ._loops import arm_autoclear
from ._overlay import KIT_DIR, KIT_FILE, KIT_SPARES, KIT_SUBDIR, KIT_SUBFILE, kit_bytes
from ._owner import DEFAULT_BASE as DEFAULT_BASE
from ._owner import cleanup_stale
from ._sizes import SIZE_HELP, enospc_hint, enospc_hints, full_hints, parse_size, parse_sizes
from ._specs import KINDS, LANES, OVERLAY_KINDS, missing_prerequisites

__all__ = [
    "CAP_SYS_ADMIN",
    "KINDS",
    "KIT_DIR",
    "KIT_FILE",
    "KIT_SPARES",
    "KIT_SUBDIR",
    "KIT_SUBFILE",
    "LANES",
    "OVERLAY_KINDS",
    "SIZE_HELP",
    "Lab",
    "LabError",
    "LabFs",
    "LabUnavailable",
    "MountEntry",
    "arm_autoclear",
    "cleanup_stale",
    "enospc_hint",
    "enospc_hints",
    "ensure_loop_nodes",
    "full_hints",
    "has_capability",
    "kit_bytes",
    "missing_prerequisites",
    "mount_of",
    "parse_size",
    "parse_sizes",
]
