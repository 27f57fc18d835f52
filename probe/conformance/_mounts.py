"""Which mount a path lives on, read from /proc/self/mountinfo.

The conformance report names the filesystem type and mount options of every
place it ran on: "xfs failed" means little without knowing whether it was
mounted with reflink, or through a bind, or read-only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["MountInfo", "mount_of"]


@dataclass(frozen=True)
class MountInfo:
    mountpoint: str
    fstype: str
    source: str
    #: Per-mount options then the superblock's, as findmnt shows them.
    options: str


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and len(field[i + 1 : i + 4]) == 3 and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_of(path: str | os.PathLike[str]) -> MountInfo | None:
    """The mount ``path`` is on (the last, i.e. topmost, longest-prefix match)."""
    target = os.path.realpath(path)
    best: MountInfo | None = None
    best_len = -1
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    for line in lines:
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields = left.split()
        rest = right.split()
        if len(fields) < 6 or len(rest) < 3:
            continue
        mnt = _unescape(fields[4])
        inside = target == mnt or target.startswith(mnt.rstrip("/") + "/")
        if inside and len(mnt) >= best_len:
            best_len = len(mnt)
            best = MountInfo(mnt, rest[0], _unescape(rest[1]), f"{fields[5]},{rest[2]}")
    return best
