"""mount(2), umount2(2) and /proc/self/mountinfo.

Called directly rather than via mount(8): the exact errno decides what to do
(EBUSY -> lazy detach, EINVAL -> already gone), and there is no text to parse.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import re
from functools import cache
from pathlib import Path

MS_RDONLY = 0x1
MS_REMOUNT = 0x20
MS_BIND = 0x1000
_MNT_DETACH = 0x2


@cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.mount.argtypes = [
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_ulong,
        ctypes.c_char_p,
    ]
    libc.mount.restype = ctypes.c_int
    libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    libc.umount2.restype = ctypes.c_int
    return libc


def sys_mount(source: str, target: Path, fstype: str | None, flags: int, data: str) -> None:
    rc = int(
        _libc().mount(
            source.encode(),
            os.fsencode(target),
            fstype.encode() if fstype else None,
            flags,
            data.encode() if data else None,
        )
    )
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(target))


def _sys_umount(target: str, flags: int = 0) -> int:
    """umount2; 0 or the errno."""
    if int(_libc().umount2(os.fsencode(target), flags)) == 0:
        return 0
    return ctypes.get_errno()


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _mountinfo() -> list[tuple[str, str]]:
    """(mountpoint, options) for every mount, in mount order."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" ")
        sep = fields.index("-")
        opts = fields[5]
        if len(fields) > sep + 3:
            opts = f"{opts},{fields[sep + 3]}"
        out.append((_unescape(fields[4]), opts))
    return out


def under(path: str, root: str) -> bool:
    return path == root or path.startswith(root + "/")


def mounts_under(root: str) -> list[str]:
    return [mp for mp, _ in _mountinfo() if under(mp, root)]


def mount_options(mountpoint: Path) -> str:
    wanted = str(mountpoint)
    found = ""
    for mp, opts in _mountinfo():
        if mp == wanted:
            found = opts  # the last one is the top of a stack
    return ",".join(dict.fromkeys(found.split(",")))


def unmount(mountpoint: str) -> str | None:
    err = _sys_umount(mountpoint)
    if err in (0, errno.EINVAL, errno.ENOENT):  # EINVAL: not a mountpoint (any more)
        return None
    if err == errno.EBUSY:
        # Something (a leaked fd, a cwd) still uses it. Detach it from the
        # tree now; the filesystem dies, and its loop device frees itself,
        # when that user goes. Leaving it mounted would leak it for good.
        err = _sys_umount(mountpoint, _MNT_DETACH)
        if err in (0, errno.EINVAL, errno.ENOENT):
            return None
    return f"umount {mountpoint}: {os.strerror(err)}"
