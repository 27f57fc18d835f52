"""What the kernel says is mounted or attached, asked through the same
tools a person would use (findmnt, losetup) -- independent of the lab's own
bookkeeping, so a leak the lab does not know about still shows."""

from __future__ import annotations

import subprocess
from pathlib import Path


def mounts_under(root: Path) -> list[str]:
    out = subprocess.run(
        ["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True, check=True
    ).stdout
    r = str(root)
    return [m for m in out.splitlines() if m == r or m.startswith(r + "/")]


def loops_under(root: Path) -> list[str]:
    out = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if f"({root}/" in line]
