"""Loop device nodes in a container: make /dev/loop-control and /dev/loopN
where the container's /dev lacks them, so a lab can be built there.

A container's /dev is its own tmpfs holding only the devices passed in,
while the loop devices are the host kernel's. Used by the Docker
entrypoint before it builds a lab; on a host (devtmpfs) it does nothing.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from pathlib import Path

from .._mounttable import mount_of
from ._errors import LabUnavailable

__all__ = ["CAP_SYS_ADMIN", "ensure_loop_nodes", "has_capability"]

_CAP_MKNOD = 27
CAP_SYS_ADMIN = 21
_LOOP_MAJOR = 7
_LOOP_CONTROL = (10, 237)  # misc device, fixed minor (Documentation/admin-guide/devices.txt)
_LOOP_CTL_GET_FREE = 0x4C82
# Nodes made beyond the highest loop device that exists now: `losetup
# --find` may get a brand-new index from the kernel (LOOP_CTL_GET_FREE adds
# one when none is free), and other containers or host processes may take
# the next few meanwhile. A node for a device that does not exist yet is
# harmless (ENXIO on open).
_LOOP_HEADROOM = 32



def _cap_effective() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def has_capability(bit: int) -> bool:
    """Does this process hold capability ``bit`` (``CAP_SYS_ADMIN``, ...) effectively?"""
    return bool(_cap_effective() >> bit & 1)


def _mknod(path: Path, kind: int, major: int, minor: int) -> None:
    # FileExistsError: the runtime (or a parallel step) made it first; the
    # node is what counts, not who made it.
    with contextlib.suppress(FileExistsError):
        os.mknod(path, kind | 0o660, os.makedev(major, minor))


def _loop_minor_shift() -> int:
    # With max_part > 0 every loop device reserves minors for partitions:
    # loopN is minor N << shift, not N.
    try:
        max_part = int(Path("/sys/module/loop/parameters/max_part").read_text())
    except (OSError, ValueError):
        max_part = 0
    return max_part.bit_length() if max_part > 0 else 0


def _existing_loops() -> dict[int, tuple[int, int]]:
    """Index -> (major, minor) of every loop device the kernel has now."""
    found: dict[int, tuple[int, int]] = {}
    for entry in Path("/sys/class/block").glob("loop*"):
        suffix = entry.name[4:]
        if not suffix.isdigit():
            continue  # loop0p1 and the like
        try:
            major, minor = (int(x) for x in (entry / "dev").read_text().split(":"))
        except (OSError, ValueError):
            continue
        found[int(suffix)] = (major, minor)
    return found


def _dev_is_devtmpfs() -> bool:
    info = mount_of("/dev")
    return info is not None and info.fstype == "devtmpfs"


def ensure_loop_nodes() -> list[str]:
    """Make /dev/loop-control and /dev/loopN nodes the container lacks.

    A container's /dev is its own tmpfs with only the devices passed in,
    while the loop devices are the host kernel's: `losetup --find` gets an
    index from /dev/loop-control and then opens /dev/loopN, which fails with
    ENOENT unless the node exists here. Returns the nodes made.
    """
    made: list[str] = []
    if _dev_is_devtmpfs():
        # On a host (the entrypoint also runs there, e.g. under sudo in CI)
        # the kernel makes every node itself; nodes we made would linger.
        return made
    can_mknod = has_capability(_CAP_MKNOD)  # asked once: it cannot change here
    control = Path("/dev/loop-control")
    if not control.exists():
        if not can_mknod:
            raise LabUnavailable(
                "no /dev/loop-control and no CAP_MKNOD to create it: "
                "pass --device /dev/loop-control"
            )
        try:
            _mknod(control, stat.S_IFCHR, *_LOOP_CONTROL)
        except OSError as err:
            raise LabUnavailable(
                f"no /dev/loop-control and mknod failed ({err.strerror}): "
                "pass --device /dev/loop-control"
            ) from err
        made.append(str(control))
    try:
        fd = os.open(control, os.O_RDWR | os.O_CLOEXEC)
    except OSError as err:
        if err.errno == errno.EPERM:
            raise LabUnavailable(
                "/dev/loop-control is not allowed by the container's device cgroup: "
                "pass --device /dev/loop-control"
            ) from err
        if err.errno in (errno.ENXIO, errno.ENODEV):
            raise LabUnavailable(
                "the host kernel has no loop driver (modprobe loop on the host)"
            ) from err
        raise LabUnavailable(f"cannot open /dev/loop-control: {err.strerror}") from err
    try:
        # Asking for the first free index makes the kernel create it if
        # needed, so the nodes made below cover it.
        free = fcntl.ioctl(fd, _LOOP_CTL_GET_FREE)
    except OSError as err:
        raise LabUnavailable(f"LOOP_CTL_GET_FREE on /dev/loop-control: {err.strerror}") from err
    finally:
        os.close(fd)
    loops = _existing_loops()
    shift = _loop_minor_shift()
    top = max([free, *loops]) + _LOOP_HEADROOM
    for index in range(top + 1):
        node = Path(f"/dev/loop{index}")
        if node.exists():
            continue
        if not can_mknod:
            raise LabUnavailable(
                f"no {node} and no CAP_MKNOD to create it: keep the default "
                "capabilities (do not --cap-drop MKNOD) or pass the loop devices with --device"
            )
        major, minor = loops.get(index, (_LOOP_MAJOR, index << shift))
        _mknod(node, stat.S_IFBLK, major, minor)
        made.append(str(node))
    # Opening a node we made is where the device cgroup says no (EPERM);
    # ENXIO just means that index has no device (yet).
    probe = Path(f"/dev/loop{free}")
    try:
        os.close(os.open(probe, os.O_RDONLY | os.O_CLOEXEC))
    except OSError as err:
        if err.errno == errno.EPERM:
            raise LabUnavailable(
                "loop devices are not allowed by the container's device cgroup: "
                "pass --device-cgroup-rule 'b 7:* rmw'"
            ) from err
        if err.errno not in (errno.ENXIO, errno.ENOENT):
            raise LabUnavailable(f"cannot open {probe}: {err.strerror}") from err
    return made
