"""Running the lab's external tools (mkfs.*, mksquashfs) with one error shape."""

from __future__ import annotations

import subprocess

from ._errors import LabError

__all__ = ["run_tool"]


def run_tool(argv: list[str], what: str) -> None:
    """Run ``argv``; LabError naming ``what`` and the tool's last line on failure."""
    proc = subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        raise LabError(
            f"{what} (exit {proc.returncode}): " + (msg[-1] if msg else "no message")
        )
