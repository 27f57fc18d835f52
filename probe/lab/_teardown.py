"""Tearing a lab root down: unmount, detach, delete -- from what the kernel
reports, never from what the lab remembers alone."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from ._loops import Loop, detach_loop, loops_backed_under
from ._mounts import mountpoints_under, unmount


def dismantle(root: Path, loops: Iterable[Loop] = ()) -> list[str]:
    """Unmount, detach and delete everything of the lab at ``root``.

    Works from what the kernel reports (mountinfo, sysfs), so it finishes a
    lab whose setup died half-way as well as one whose owner was killed.
    Returns what could not be undone.
    """
    real = os.path.realpath(root)
    errors: list[str] = []
    # Reverse mount order: bind mounts and anything stacked come off before
    # the filesystem they sit on.
    for mp in reversed(mountpoints_under(real)):
        problem = unmount(mp)
        if problem:
            errors.append(problem)
    known = {lp.device: lp.image_ino for lp in loops}
    for device in dict.fromkeys([*known, *loops_backed_under(real)]):
        problem = detach_loop(device, real, known.get(device))
        if problem:
            errors.append(problem)
    left = mountpoints_under(real)
    if left:
        # Never rmtree through a live mount: that would delete a
        # filesystem's contents instead of the empty mountpoint.
        errors.append(f"still mounted under {real}: {left}")
        return errors
    try:
        shutil.rmtree(real)
    except FileNotFoundError:
        pass
    except OSError as err:
        errors.append(f"remove {real}: {err}")
    return errors
