"""Building an overlayfs lane: its layers, the lower-layer kit, the image
lower (squashfs) and the overlay mount options.

Why a kit in every lower layer: what users trip on in containers is a file
or directory that lives in the *lower* layer (an image layer) -- cloning it,
hard-linking it (a silent copy-up), renaming its directory (EXDEV). A probe
cannot create lower-layer files through the overlay (everything it writes
lands in upper), and writing into a lower layer under a mounted overlay is
undefined, so the lab puts them there before it mounts.
"""

from __future__ import annotations

from pathlib import Path

from .._overlaykit import (
    KIT_DIR,
    KIT_FILE,
    KIT_SPARES,
    KIT_SUBDIR,
    KIT_SUBFILE,
    kit_bytes,
    write_kit,
)
from ._errors import LabError
from ._tool import run_tool

__all__ = ["KIT_DIR", "KIT_FILE", "KIT_SPARES", "KIT_SUBDIR", "KIT_SUBFILE", "kit_bytes",
           "make_squashfs", "mount_data", "write_kit"]

def make_squashfs(stage: Path, image: Path) -> None:
    """A squashfs image of ``stage`` (the read-only lower of an image layer)."""
    run_tool(["mksquashfs", str(stage), str(image), "-noappend", "-quiet", "-no-progress"],
             "mksquashfs failed")


def mount_data(lower: Path, upper: Path, work: Path) -> str:
    # overlayfs splits lowerdir on ':' and options on ','; the lab's own
    # paths contain neither (mkdtemp names are [a-z0-9_]).
    for p in (lower, upper, work):
        if any(c in str(p) for c in ":,\\"):
            raise LabError(f"overlay layer path {p} contains ':', ',' or '\\'")
    return f"lowerdir={lower},upperdir={upper},workdir={work}"
