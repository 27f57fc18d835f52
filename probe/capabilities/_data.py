"""Probe file contents.

64 KiB granules: a multiple of every block size a Linux filesystem uses
(range clones and dedupe must be block-aligned), and large enough that
btrfs keeps the data in real extents rather than inline in its metadata
tree, where clones take a different code path. Each granule differs from
the next, so a clone of the wrong range cannot compare equal by accident.
"""

from __future__ import annotations

__all__ = ["GRANULE", "pattern"]

GRANULE = 64 * 1024


def pattern(granules: int, seed: int = 0) -> bytes:
    out = bytearray()
    for g in range(granules):
        line = f"cowprobe capability probe granule {seed}:{g}\n".encode()
        out += (line * (GRANULE // len(line) + 1))[:GRANULE]
    return bytes(out)
