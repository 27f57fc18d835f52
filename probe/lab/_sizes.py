"""How big each lab filesystem is: the size setting (one grammar for the
pytest plugin, ``cowprobe lab`` and the Docker entrypoint) and the hint a
user sees when a lab filesystem runs out of space."""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterable

from ._lab import LabFs
from ._specs import LANES, check_kinds

__all__ = ["SIZE_HELP", "enospc_hint", "enospc_hints", "full_hints", "parse_size", "parse_sizes"]

SIZE_HELP = (
    "SIZE for every lab filesystem, or KIND=SIZE,... for some (e.g. 64G or "
    "btrfs=32G,tmpfs=2G); SIZE in MiB, or with a K/M/G/T suffix"
)

_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)
_SHIFT = {"K": -10, "": 0, "M": 0, "G": 10, "T": 20}


def parse_size(text: str) -> int:
    """``"16G"`` -> 16384 (MiB). A bare number is MiB. ValueError if not a size."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"not a size: {text!r} (use e.g. 512M, 16G)")
    n, shift = int(m.group(1)), _SHIFT[m.group(2).upper()]
    mib = n << shift if shift >= 0 else n >> -shift
    if mib < 1:
        raise ValueError(f"size {text!r} is below 1 MiB")
    return mib


def parse_sizes(text: str) -> dict[str, int]:
    """The size setting: ``"16G"`` (every kind) or ``"btrfs=32G,tmpfs=2G"``.

    Returns MiB per kind named; ValueError naming the bad part otherwise.
    """
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise ValueError("empty size setting")
    out: dict[str, int] = {}
    for part in parts:
        kind, eq, size = part.partition("=")
        if not eq:
            out.update(dict.fromkeys(LANES, parse_size(part)))
            continue
        (kind,) = check_kinds((kind.strip(),))
        out[kind] = parse_size(size)
    return out


def enospc_hint(kind: str, size_mb: int, setting: str) -> str:
    """What to tell a user whose test hit ENOSPC on lab filesystem ``kind``."""
    return (
        f"the cowprobe lab's {kind} filesystem is {size_mb} MiB and is full "
        f"(ENOSPC); give it more room with {setting} (e.g. {kind}={max(size_mb * 4, 1024)}M)"
    )



def _is_enospc(exc: BaseException | None) -> bool:
    seen = 0
    while exc is not None and seen < 16:  # a cause chain could loop
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def enospc_hints(exc: BaseException | None, filesystems: Iterable[tuple[str, int]],
                 setting: str) -> list[str]:
    """The hints for ``exc`` if it is (or was caused by) ENOSPC: one per lab
    filesystem in use, given as (kind, size in MiB); else none."""
    if not _is_enospc(exc):
        return []
    return [enospc_hint(kind, size, setting) for kind, size in filesystems]


def full_hints(filesystems: Iterable[LabFs], setting: str) -> list[str]:
    """Hints for the lab filesystems left (nearly) full: under 1 % free is
    where writes start failing with ENOSPC."""
    hints = []
    for fs in filesystems:
        try:
            st = os.statvfs(fs.mountpoint)
        except OSError:
            continue
        if st.f_bavail * 100 < st.f_blocks:
            hints.append(enospc_hint(fs.kind, fs.size_mb, setting))
    return hints
