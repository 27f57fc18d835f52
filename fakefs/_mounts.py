"""The mount table: validating a mountpoint, finding our mounts, unmounting.

Standard library only -- the client side uses it without pyfuse3.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "FSTYPE",
    "MountError",
    "MountInfo",
    "check_backing",
    "check_mountpoint",
    "find_mount",
    "unmount",
]

#: the kernel reports FUSE mounts as "fuse.<subtype>"
FSTYPE = "fuse.fakefs"
#: the mount's source ("fsname") carries the control socket, so any process
#: can find the channel of a mount from the mount table alone
SOURCE_PREFIX = "fakefs:"
#: the daemon's private directory for its control socket
CONTROL_DIR_PREFIX = "fakefs-ctl-"


class MountError(ValueError):
    """Bad input for a mount (one line), or a mount that could not be made."""


@dataclass(frozen=True)
class MountInfo:
    mount_id: int
    mountpoint: str
    fstype: str
    source: str
    devno: str = ""  # "major:minor", names the mount's bdi in /sys/class/bdi

    @property
    def control(self) -> str | None:
        if self.fstype == FSTYPE and self.source.startswith(SOURCE_PREFIX):
            return self.source[len(SOURCE_PREFIX):]
        return None


_OCTAL = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def mounts() -> list[MountInfo]:
    out = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            parts = line.split()
            sep = parts.index("-")
            out.append(
                MountInfo(int(parts[0]), _unescape(parts[4]), parts[sep + 1],
                          _unescape(parts[sep + 2]), parts[2])
            )
    return out


def find_mount(mountpoint: str | os.PathLike[str]) -> MountInfo | None:
    """The topmost mount at ``mountpoint`` (the one a path lookup sees)."""
    target = os.path.abspath(mountpoint)
    found = None
    for info in mounts():
        if info.mountpoint == target:
            found = info
    return found


def check_backing(backing: str | os.PathLike[str]) -> Path:
    path = Path(backing).absolute()
    if not path.exists():
        raise MountError(f"backing directory {str(path)!r} does not exist")
    if not path.is_dir():
        raise MountError(f"backing directory {str(path)!r} is not a directory")
    return path


def check_mountpoint(mountpoint: str | os.PathLike[str]) -> Path:
    path = Path(os.path.abspath(mountpoint))
    # Ask the mount table before touching the path: stat() of a mount whose
    # daemon died fails with ENOTCONN, which must read as "already mounted".
    existing = find_mount(path)
    if existing is not None:
        raise MountError(
            f"mountpoint {str(path)!r} is already mounted ({existing.fstype} from "
            f"{existing.source!r})"
        )
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise MountError(f"mountpoint {str(path)!r} does not exist") from None
    except OSError as err:
        raise MountError(f"mountpoint {str(path)!r}: {err.strerror}") from None
    if not os.path.isdir(path) or st.st_nlink == 0:
        raise MountError(f"mountpoint {str(path)!r} is not a directory")
    if any(True for _ in os.scandir(path)):
        raise MountError(f"mountpoint {str(path)!r} is not empty")
    return path


def unmount(mountpoint: str | os.PathLike[str], mount_id: int | None = None) -> bool:
    """Unmount our FUSE mount at ``mountpoint``; lazily if it is busy.

    Only a fakefs mount (and, given ``mount_id``, only that very mount) is
    touched: another engineer's mount stacked on the same path is never
    ours to remove. Returns whether something was unmounted.
    """
    info = find_mount(mountpoint)
    if info is None or info.fstype != FSTYPE:
        return False
    if mount_id is not None and info.mount_id != mount_id:
        return False
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    target = os.path.abspath(mountpoint)
    if tool is not None:
        res = subprocess.run([tool, "-u", target], capture_output=True, check=False)
        if res.returncode != 0 and _still(target, info.mount_id):
            # EBUSY: an open file or cwd inside. Detach it from the tree now;
            # the kernel drops the connection when the last user lets go.
            subprocess.run([tool, "-u", "-z", target], capture_output=True, check=False)
    else:
        try:
            _umount2(target)
        except OSError as err:
            if err.errno != errno.EINVAL:
                raise
    return not _still(target, info.mount_id)


def _still(target: str, mount_id: int) -> bool:
    info = find_mount(target)
    return info is not None and info.mount_id == mount_id


def _umount2(target: str) -> None:
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.umount2(os.fsencode(target), 0) != 0:
        err = ctypes.get_errno()
        if err == errno.EBUSY:
            if libc.umount2(os.fsencode(target), 2) == 0:  # MNT_DETACH
                return
            err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), target)
