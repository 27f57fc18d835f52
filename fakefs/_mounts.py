"""The mount table: validating a mountpoint, finding our mounts, unmounting.

Standard library only -- the client side uses it without pyfuse3.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from probe import _mounttable

from ._errors import MountError

__all__ = [
    "CONTROL_LOCK",
    "FSTYPE",
    "MountError",
    "MountInfo",
    "check_backing",
    "check_cache_timeout",
    "check_mountpoint",
    "check_not_nested",
    "check_trace_limit",
    "clear_dead_mount",
    "find_mount",
    "make_control_dir",
    "reap_control_dirs",
    "unmount",
]

#: the kernel reports FUSE mounts as "fuse.<subtype>"
FSTYPE = "fuse.fakefs"
#: the mount's source ("fsname") carries the control socket, so any process
#: can find the channel of a mount from the mount table alone
SOURCE_PREFIX = "fakefs:"
#: the daemon's private directory for its control socket
CONTROL_DIR_PREFIX = "fakefs-ctl-"


#: held (flock, exclusive) by the daemon for its whole life
CONTROL_LOCK = "lock"


def make_control_dir() -> tuple[str, int]:
    """A private directory for a new daemon's control socket, plus the fd of
    the lock that marks it as alive.

    A SIGKILLed daemon runs no cleanup, and its directory would stay in the
    temp dir forever. The lock is released by the kernel when the daemon
    dies, however it dies, so the next daemon can tell live directories from
    dead ones without guessing from ages or pids (which get reused).
    """
    reap_control_dirs()
    ctl_dir = tempfile.mkdtemp(prefix=CONTROL_DIR_PREFIX)
    fd = os.open(os.path.join(ctl_dir, CONTROL_LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return ctl_dir, fd


def reap_control_dirs(parent: str | None = None) -> list[str]:
    """Remove control directories whose daemon is dead (its lock is free).

    A directory without a lock file is skipped: it is a daemon between its
    mkdtemp and its flock, microseconds from being live.
    """
    parent = parent or tempfile.gettempdir()
    reaped: list[str] = []
    try:
        names = os.listdir(parent)
    except OSError:
        return reaped
    for name in names:
        if not name.startswith(CONTROL_DIR_PREFIX):
            continue
        path = os.path.join(parent, name)
        try:
            fd = os.open(os.path.join(path, CONTROL_LOCK), os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # held: its daemon is alive
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)
        shutil.rmtree(path, ignore_errors=True)
        reaped.append(path)
    return reaped




@dataclass(frozen=True)
class MountInfo:
    mount_id: int
    mountpoint: str
    fstype: str
    source: str
    devno: str = ""  # "major:minor", names the mount's bdi in /sys/class/bdi

    @property
    def control(self) -> str | None:
        if self.fstype == FSTYPE and self.source.startswith(SOURCE_PREFIX):
            return self.source[len(SOURCE_PREFIX):]
        return None


def mounts() -> list[MountInfo]:
    return [
        MountInfo(e.mount_id, e.mount_point, e.fstype, e.source, e.device)
        for e in _mounttable.mounts()
    ]


def find_mount(mountpoint: str | os.PathLike[str]) -> MountInfo | None:
    """The topmost mount at ``mountpoint`` (the one a path lookup sees)."""
    target = os.path.abspath(mountpoint)
    found = None
    for info in mounts():
        if info.mountpoint == target:
            found = info
    return found


def check_backing(backing: str | os.PathLike[str]) -> Path:
    path = Path(backing).absolute()
    if not path.exists():
        raise MountError(f"backing directory {str(path)!r} does not exist")
    if not path.is_dir():
        raise MountError(f"backing directory {str(path)!r} is not a directory")
    return path


def check_trace_limit(limit: int) -> int:
    # A negative limit reached the daemon's trace deque as a traceback.
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise MountError(f"the trace limit must be a whole number, 0 or more; got {limit!r}")
    return limit


def check_cache_timeout(seconds: float) -> float:
    # NaN and infinity pass any comparison-free check and mean nothing to
    # the kernel's cache.
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not (
            0 <= seconds < float("inf")):
        raise MountError(f"the cache timeout must be 0 or more seconds; got {seconds!r}")
    return float(seconds)


def check_mountpoint(mountpoint: str | os.PathLike[str]) -> Path:
    path = Path(os.path.abspath(mountpoint))
    # Ask the mount table before touching the path: stat() of a mount whose
    # daemon died fails with ENOTCONN, which must read as "already mounted".
    existing = find_mount(path)
    if existing is not None and existing.control is not None and _dead(path):
        raise MountError(
            f"mountpoint {str(path)!r} holds a dead fakefs mount (its daemon is gone: "
            f"ENOTCONN); clear it with: fakefs unmount {str(path)!r}"
        )
    if existing is not None:
        raise MountError(
            f"mountpoint {str(path)!r} is already mounted ({existing.fstype} from "
            f"{existing.source!r})"
        )
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise MountError(f"mountpoint {str(path)!r} does not exist") from None
    except OSError as err:
        raise MountError(f"mountpoint {str(path)!r}: {err.strerror}") from None
    if not os.path.isdir(path) or st.st_nlink == 0:
        raise MountError(f"mountpoint {str(path)!r} is not a directory")
    if any(True for _ in os.scandir(path)):
        raise MountError(f"mountpoint {str(path)!r} is not empty")
    return path


def _dead(path: Path) -> bool:
    # statfs, not stat: the kernel answers a stat of the root from its
    # attribute cache for as long as that is valid, dead daemon or not,
    # while every statfs is a request (ENOTCONN once the daemon is gone).
    try:
        os.statvfs(path)
    except OSError as err:
        return err.errno == errno.ENOTCONN
    return False


def check_not_nested(backing: Path, mountpoint: Path) -> None:
    """Refuse a mountpoint inside (or equal to) its backing directory, and a
    backing directory inside the mountpoint: the daemon's own lookups would
    go through its own mount and deadlock it (and ``fakefs trace`` with it)."""
    back = os.path.realpath(backing)
    # The mountpoint is not stat()ed through a possibly dead mount: realpath
    # of its parent, then its own name.
    mnt = os.path.join(os.path.realpath(mountpoint.parent), mountpoint.name)

    def inside(child: str, parent: str) -> bool:
        return child == parent or child.startswith(parent.rstrip("/") + "/")

    if inside(mnt, back):
        raise MountError(f"mountpoint {str(mountpoint)!r} is inside (or is) the backing "
                         f"directory {str(backing)!r}: the daemon would deadlock on itself")
    if inside(back, mnt):
        raise MountError(f"backing directory {str(backing)!r} is inside the mountpoint "
                         f"{str(mountpoint)!r}: the daemon would deadlock on itself")


def clear_dead_mount(info: MountInfo) -> None:
    """Remove the control directory of a mount whose daemon died (a live
    daemon removes its own; its lock says which is which)."""
    ctl = info.control
    if ctl is None:
        return
    ctl_dir = os.path.dirname(ctl)
    if os.path.basename(ctl_dir).startswith(CONTROL_DIR_PREFIX):
        reap_control_dirs(os.path.dirname(ctl_dir))


def unmount(mountpoint: str | os.PathLike[str], mount_id: int | None = None) -> bool:
    """Unmount our FUSE mount at ``mountpoint``; lazily if it is busy.

    Only a fakefs mount (and, given ``mount_id``, only that very mount) is
    touched: another engineer's mount stacked on the same path is never
    ours to remove. Returns whether something was unmounted.
    """
    info = find_mount(mountpoint)
    if info is None or info.fstype != FSTYPE:
        return False
    if mount_id is not None and info.mount_id != mount_id:
        return False
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    target = os.path.abspath(mountpoint)
    if tool is not None:
        res = subprocess.run([tool, "-u", target], capture_output=True, check=False)
        if res.returncode != 0 and _still(target, info.mount_id):
            # EBUSY: an open file or cwd inside. Detach it from the tree now;
            # the kernel drops the connection when the last user lets go.
            subprocess.run([tool, "-u", "-z", target], capture_output=True, check=False)
    else:
        try:
            _mounttable.umount(target)
        except OSError as err:
            if err.errno != errno.EINVAL:
                raise
    return not _still(target, info.mount_id)


def _still(target: str, mount_id: int) -> bool:
    info = find_mount(target)
    return info is not None and info.mount_id == mount_id
