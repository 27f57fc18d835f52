"""The overlay lower-layer kit: the files the lab puts into every lower
layer before it mounts an overlay, and the capability probe looks for.

Why a kit: what users trip on in containers is a file or directory that
lives in the *lower* layer (an image layer) -- cloning it, hard-linking it (a
silent copy-up), renaming its directory (EXDEV). A probe cannot create
lower-layer files through the overlay (everything it writes lands in upper),
and writing into a lower layer under a mounted overlay is undefined. It
lives apart from the lab so that the capability probe can know it without
importing the lab.
"""

from __future__ import annotations

import os
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["KIT_DIR", "KIT_FILE", "KIT_SPARES", "KIT_SUBDIR", "KIT_SUBFILE", "kit_bytes",
           "write_kit"]

#: the directory at the overlay root that comes from the lower layer
KIT_DIR = ".cowprobe-lower"
#: a regular file big enough to span real extents (btrfs inlines < 4 KiB)
KIT_FILE = "file"
#: a lower-layer directory (for renames) and a file in it
KIT_SUBDIR = "dir"
KIT_SUBFILE = "inner"
KIT_FILE_SIZE = 256 * 1024
#: lower-layer files a probe may use up (copy-up is one-way: once a file
#: has been copied up, it is an upper file for the life of the mount)
KIT_SPARES = "spare"
KIT_SPARE_COUNT = 16


@cache
def kit_bytes() -> bytes:
    """The kit file's content: deterministic, incompressible."""
    # Imported here: the capability probe loads this module for the names
    # above on every `cowprobe report`, and hashlib (OpenSSL) costs ~5 ms.
    import hashlib

    return hashlib.shake_256(b"cowprobe overlay lower-layer kit").digest(KIT_FILE_SIZE)


def _write(path: Path, data: bytes) -> None:
    with path.open("xb") as fh:
        fh.write(data)
        # On disk before the overlay exists: a copy-up that clones, and
        # FIEMAP afterwards, see real extents rather than delayed allocation.
        os.fsync(fh.fileno())


def write_kit(lower: Path) -> None:
    kit = lower / KIT_DIR
    (kit / KIT_SUBDIR).mkdir(parents=True)
    _write(kit / KIT_FILE, kit_bytes())
    _write(kit / KIT_SUBDIR / KIT_SUBFILE, b"a file in a lower-layer directory\n")
    (kit / KIT_SPARES).mkdir()
    for n in range(KIT_SPARE_COUNT):
        _write(kit / KIT_SPARES / f"{n:02d}", kit_bytes()[: 64 * 1024])
