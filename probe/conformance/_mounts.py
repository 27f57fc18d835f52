"""Which mount a path lives on, as the conformance report names it.

The conformance report names the filesystem type and mount options of every
place it ran on: "xfs failed" means little without knowing whether it was
mounted with reflink, or through a bind, or read-only. The mountinfo parsing
and the "which mount serves this path" rule are the capability probe's
(``probe.capabilities._identity``); this is only the report's view of them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..capabilities._identity import find_mount, parse_mountinfo

__all__ = ["MountInfo", "mount_of"]


@dataclass(frozen=True)
class MountInfo:
    mountpoint: str
    fstype: str
    source: str
    #: Per-mount options then the superblock's, as findmnt shows them.
    options: str


def mount_of(path: str | os.PathLike[str]) -> MountInfo | None:
    """The mount serving ``path`` (None if it or the mount table cannot be read)."""
    real = os.path.realpath(path)
    try:
        st_dev = os.stat(real).st_dev
        table = parse_mountinfo(Path("/proc/self/mountinfo").read_text(errors="replace"))
    except OSError:
        return None
    entry = find_mount(real, st_dev, table)
    if entry is None:
        return None
    options = ",".join((*entry.options, *entry.super_options))
    return MountInfo(entry.mount_point, entry.fstype, entry.source, options)
