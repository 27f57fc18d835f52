"""The mount table: /proc/self/mountinfo parsed once and right, the mount a
path lives on, the mounts under a directory, and umount2(2).

The one reader of mountinfo in cowprobe (lab, capability probe, conformance,
fakefs, the pytest plugin, the Docker entrypoint and the torture reaper all
ask here), because the details are easy to get wrong and each copy got a
different one wrong:

* the kernel escapes space, tab, newline and backslash in paths as ``\\ooo``
  octal (a directory named ``a b`` shows as ``a\\040b``); everything else,
  non-UTF-8 bytes included, is raw -- so lines are split as bytes and each
  field decoded like any file name (``os.fsdecode``, surrogateescape);
* a variable number of optional fields (``shared:1 master:2``, or none)
  ends with a lone ``-``; the filesystem type, source and superblock options
  follow it. A mountpoint can never be a bare ``-`` (it is absolute), so the
  first ``-`` from the seventh field on is the separator;
* per-mount options (``ro,nosuid``) and superblock options (``compress=zstd``,
  ``size=64m``) are different fields: a report that shows only the first
  hides every filesystem-specific option.

Standard library only.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
from dataclasses import dataclass

from . import _libc

__all__ = [
    "MNT_DETACH",
    "MountEntry",
    "find_mount",
    "mount_at",
    "mount_of",
    "mounts",
    "mounts_under",
    "parse_mountinfo",
    "umount",
    "under",
    "unescape",
]

MOUNTINFO = "/proc/self/mountinfo"
MNT_DETACH = 0x2

_OCTAL = re.compile(rb"\\([0-7]{3})")


@dataclass(frozen=True)
class MountEntry:
    """One line of mountinfo (proc(5)), paths unescaped."""

    mount_id: int
    parent_id: int
    device: str  # "major:minor"
    root: str  # the directory of the filesystem mounted here (a bind's subdir)
    mount_point: str
    options: tuple[str, ...]  # per-mount: rw/ro, nosuid, relatime, ...
    optional: tuple[str, ...]  # propagation: shared:N, master:N, ...
    fstype: str  # "btrfs", "fuse.fakefs", "overlay"
    source: str  # "/dev/loop3", "tmpfs", "overlay", "fakefs:/tmp/..."
    super_options: tuple[str, ...]  # the filesystem's own: compress=zstd, lowerdir=...

    @property
    def all_options(self) -> str:
        """Per-mount then superblock options, each once, as findmnt shows them."""
        return ",".join(dict.fromkeys(o for o in (*self.options, *self.super_options) if o))

    @property
    def devno(self) -> tuple[int, int]:
        major, minor = self.device.split(":")
        return int(major), int(minor)


def unescape(field: bytes) -> str:
    """A mountinfo field as a file name (``\\ooo`` undone, then fsdecode'd)."""
    return os.fsdecode(_OCTAL.sub(lambda m: bytes([int(m.group(1), 8)]), field))


def _split_options(field: bytes) -> tuple[str, ...]:
    return tuple(unescape(o) for o in field.split(b",")) if field else ()


def _parse_line(line: bytes) -> MountEntry | None:
    fields = line.split(b" ")
    try:
        sep = fields.index(b"-", 6)
    except ValueError:
        return None  # not a mountinfo line (a truncated read, another format)
    if len(fields) < sep + 3:
        return None
    try:
        mount_id, parent_id = int(fields[0]), int(fields[1])
    except ValueError:
        return None
    return MountEntry(
        mount_id=mount_id,
        parent_id=parent_id,
        device=fields[2].decode("ascii", "replace"),
        root=unescape(fields[3]),
        mount_point=unescape(fields[4]),
        options=_split_options(fields[5]),
        optional=tuple(f.decode("ascii", "replace") for f in fields[6:sep] if f),
        fstype=unescape(fields[sep + 1]),
        source=unescape(fields[sep + 2]),
        # Absent on kernels older than 2.6.26-ish; empty is "none known".
        super_options=_split_options(fields[sep + 3]) if len(fields) > sep + 3 else (),
    )


def parse_mountinfo(text: bytes | str) -> list[MountEntry]:
    """Every mount in ``text`` (mountinfo format), in mount order."""
    data = os.fsencode(text) if isinstance(text, str) else text
    entries = []
    for line in data.split(b"\n"):
        if line:
            entry = _parse_line(line)
            if entry is not None:
                entries.append(entry)
    return entries


def mounts(path: str = MOUNTINFO) -> list[MountEntry]:
    """This process's mount table (its mount namespace), in mount order.

    Raises OSError when it cannot be read (no /proc).
    """
    with open(path, "rb") as fh:
        return parse_mountinfo(fh.read())


def under(path: str, root: str) -> bool:
    """``path`` is ``root`` or inside it (by name; both absolute and normalised)."""
    root = root.rstrip("/") or "/"
    return root in (path, "/") or path.startswith(root + "/")


def mounts_under(root: str | os.PathLike[str], table: list[MountEntry] | None = None,
                 ) -> list[MountEntry]:
    """The mounts at or below ``root``, in mount order (unmount in reverse)."""
    r = os.fspath(root)
    return [e for e in (mounts() if table is None else table) if under(e.mount_point, r)]


def mount_at(mountpoint: str | os.PathLike[str], table: list[MountEntry] | None = None,
             ) -> MountEntry | None:
    """The topmost mount exactly at ``mountpoint`` (the one a lookup sees):
    the last one in the table, since a later mount on a point hides the earlier."""
    target = os.path.abspath(mountpoint)
    found = None
    for e in mounts() if table is None else table:
        if e.mount_point == target:
            found = e
    return found


def find_mount(real_path: str, st_dev: int, table: list[MountEntry]) -> MountEntry | None:
    """The mount serving ``real_path``: the deepest mount point above it, the
    last such one in the table winning (a later mount over the same point
    hides the earlier). The device must match where it can; btrfs subvolumes
    and overlay show their own anonymous devices, so a path-only match is
    the fallback."""
    dev = f"{os.major(st_dev)}:{os.minor(st_dev)}"
    best: MountEntry | None = None
    best_dev: MountEntry | None = None
    for e in table:
        if not under(real_path, e.mount_point):
            continue
        if best is None or len(e.mount_point) >= len(best.mount_point):
            best = e
        if e.device == dev and (best_dev is None
                                or len(e.mount_point) >= len(best_dev.mount_point)):
            best_dev = e
    if best_dev is not None and best is not None and best_dev.mount_point == best.mount_point:
        return best_dev
    return best


def mount_of(path: str | os.PathLike[str]) -> MountEntry | None:
    """The mount serving ``path`` (symlinks resolved); None if the path or the
    mount table cannot be read."""
    real = os.path.realpath(path)
    try:
        st_dev = os.stat(real).st_dev
        table = mounts()
    except OSError:
        return None
    return find_mount(real, st_dev, table)


def _umount2(target: str | os.PathLike[str], flags: int) -> int:
    fn = _libc.function("umount2", ctypes.c_int, ctypes.c_char_p, ctypes.c_int)
    return 0 if fn(os.fsencode(target), flags) == 0 else ctypes.get_errno()


def umount(target: str | os.PathLike[str], *, detach_if_busy: bool = True) -> None:
    """umount2(2) ``target``; if it is busy (EBUSY: an open file, a cwd
    inside), detach it lazily (MNT_DETACH): it leaves the tree now and the
    filesystem goes when its last user does. Leaving it mounted would leak
    it for good. Raises OSError with the kernel's errno (EINVAL: not a
    mountpoint, or not any more)."""
    err = _umount2(target, 0)
    if err == errno.EBUSY and detach_if_busy:
        err = _umount2(target, MNT_DETACH)
    if err:
        raise OSError(err, os.strerror(err), os.fspath(target))
