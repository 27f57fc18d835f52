"""Which mount a path lives on, as the conformance report names it.

The conformance report names the filesystem type and mount options of every
place it ran on: "xfs failed" means little without knowing whether it was
mounted with reflink, or through a bind, or read-only. The mountinfo parsing
and the "which mount serves this path" rule are ``probe._mounttable``'s; this
is only the report's view of them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .._mounttable import mount_of as _mount_of

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
    entry = _mount_of(path)
    if entry is None:
        return None
    return MountInfo(entry.mount_point, entry.fstype, entry.source, entry.all_options)
