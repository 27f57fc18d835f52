"""mount(2) and unmounting for the lab; the mount table itself is
``probe._mounttable``'s.

Called directly rather than via mount(8): the exact errno decides what to do
(EBUSY -> lazy detach, EINVAL -> already gone), and there is no text to parse.
"""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

from .. import _libc
from .._mounttable import mount_at, mounts_under, umount

__all__ = ["MS_BIND", "MS_RDONLY", "MS_REMOUNT", "mount_options", "mountpoints_under",
           "sys_mount", "unmount"]

MS_RDONLY = 0x1
MS_REMOUNT = 0x20
MS_BIND = 0x1000


def sys_mount(source: str, target: Path, fstype: str | None, flags: int, data: str) -> None:
    fn = _libc.function(
        "mount",
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_ulong,
        ctypes.c_char_p,
    )
    rc = fn(
        source.encode(),
        os.fsencode(target),
        fstype.encode() if fstype else None,
        flags,
        data.encode() if data else None,
    )
    if rc != 0:
        _libc.raise_errno(target)


def mountpoints_under(root: str) -> list[str]:
    return [e.mount_point for e in mounts_under(root)]


def mount_options(mountpoint: Path) -> str:
    """Per-mount and superblock options of the mount at ``mountpoint``
    (btrfs ``compress=``, tmpfs ``size=``, overlay ``lowerdir=`` included)."""
    entry = mount_at(mountpoint)
    return entry.all_options if entry else ""


def unmount(mountpoint: str) -> str | None:
    """Unmount (lazily if busy); None when done or already gone, else why not."""
    try:
        umount(mountpoint)
    except OSError as err:
        if err.errno in (errno.EINVAL, errno.ENOENT):  # not a mountpoint (any more)
            return None
        return f"umount {mountpoint}: {err.strerror}"
    return None
