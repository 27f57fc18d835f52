"""What this machine lacks to run fakefs: the one place that checks.

Standard library only, and no pytest: the pytest plugin, the conformance
suite, the CLI and tests all ask here and turn the reasons into a skip, a
strict-mode failure or a message.
"""

from __future__ import annotations

import importlib.util
import os

from ._syscall._filter import ARCH

__all__ = ["missing_prerequisites", "syscall_missing"]

_ACTIONS = "/proc/sys/kernel/seccomp/actions_avail"


def missing_prerequisites() -> list[str]:
    """Why a fakefs FUSE mount cannot be made here (empty: it can)."""
    missing = []
    if not os.path.exists("/dev/fuse"):
        missing.append("/dev/fuse is missing (no FUSE in this kernel/container)")
    for mod in ("pyfuse3", "trio"):
        if importlib.util.find_spec(mod) is None:
            missing.append(f"{mod} is not installed (pip install 'cowprobe[fakefs]')")
    if os.geteuid() != 0:
        missing.append("a fakefs mount needs root (allow_other, chown passthrough)")
    return missing


def syscall_missing() -> list[str]:
    """Why the syscall layer cannot run here (empty: it can). Needs no root."""
    if ARCH is None:
        return [f"the syscall layer supports x86-64 and aarch64, not {os.uname().machine}"]
    try:
        with open(_ACTIONS, encoding="ascii") as f:
            actions = f.read().split()
    except OSError:
        return ["this kernel has no seccomp filters (no /proc/sys/kernel/seccomp)"]
    if "user_notif" not in actions:
        return ["this kernel lacks seccomp user notification (Linux >= 5.5 needed for "
                "SECCOMP_USER_NOTIF_FLAG_CONTINUE)"]
    return []
