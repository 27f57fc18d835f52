"""Loop devices: attach an image (via losetup), arm autoclear, find the
devices backed by a lab's images, and detach only what is provably ours.

The ioctls are called directly rather than via losetup(8) for the same reason
as mount(2): the exact errno decides what to do, and there is no text to parse.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .._mounttable import under
from ._errors import LabError

_LOOP_CLR_FD = 0x4C01
_LOOP_SET_STATUS64 = 0x4C04
_LOOP_GET_STATUS64 = 0x4C05
_LO_FLAGS_AUTOCLEAR = 4
_LO_FLAGS_FIELD = 8
# struct loop_info64: lo_device, lo_inode, lo_rdevice, lo_offset,
# lo_sizelimit (u64); lo_number, lo_encrypt_type, lo_encrypt_key_size,
# lo_flags (u32); lo_file_name[64], lo_crypt_name[64], lo_encrypt_key[32];
# lo_init[2] (u64).
_LOOP_INFO64 = struct.Struct("=QQQQQIIII64s64s32sQQ")


@dataclass(frozen=True)
class Loop:
    device: str
    image_ino: int


def attach(image: Path) -> Loop:
    """A free loop device bound to ``image``, found by losetup, never assumed.

    ``losetup --find`` picks a free device and binds it; a concurrent
    lab (or our own other threads) can win the same device between the
    two steps, which losetup reports as busy. Trying again picks the
    next free one.
    """
    ino = image.stat().st_ino
    last = ""
    for _attempt in range(8):
        proc = subprocess.run(
            ["losetup", "--find", "--show", str(image)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode == 0:
            return Loop(proc.stdout.strip(), ino)
        last = proc.stderr.strip()
        if "busy" not in last.lower():
            break
    raise LabError(f"losetup --find --show {image} failed: {last or 'no message'}")


def _loop_backing(device: str) -> str | None:
    """The path backing ``/dev/loopN`` per sysfs, without " (deleted)"."""
    name = os.path.basename(device)
    try:
        text = (Path("/sys/block") / name / "loop" / "backing_file").read_text()
    except OSError:
        return None
    text = text.rstrip("\n")
    return text.removesuffix(" (deleted)")


def loops_backed_under(root: str) -> list[str]:
    found = []
    for entry in Path("/sys/block").glob("loop*"):
        backing = _loop_backing(entry.name)
        if backing is not None and under(backing, root):
            found.append(f"/dev/{entry.name}")
    return found


def arm_autoclear(device: str) -> None:
    """Let the kernel detach ``device`` by itself once nothing holds it.

    A SIGKILL (``docker kill``, the OOM killer, a CI runner pulled away) gives
    no chance to tear down. With autoclear set on a *mounted* loop the device
    frees itself when its filesystem is unmounted -- by us, by the next
    ``cleanup_stale()``, or by the kernel when a container's mount namespace
    dies. Set only after the mount: on a loop nobody holds, autoclear would
    detach it at once.
    """
    fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    try:
        buf = bytearray(_LOOP_INFO64.size)
        fcntl.ioctl(fd, _LOOP_GET_STATUS64, buf)
        fields = list(_LOOP_INFO64.unpack(buf))
        fields[_LO_FLAGS_FIELD] |= _LO_FLAGS_AUTOCLEAR
        fcntl.ioctl(fd, _LOOP_SET_STATUS64, _LOOP_INFO64.pack(*fields))
    finally:
        os.close(fd)


def detach_loop(device: str, root: str, image_ino: int | None) -> str | None:
    """Detach ``device`` if it is still backed by an image under ``root``.

    The check happens on an open descriptor: while we hold it the kernel
    cannot free the device (autoclear waits for the last close), so it cannot
    be recycled for another engineer's image between our check and the
    LOOP_CLR_FD. Returns an error description or None.
    """
    try:
        fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as err:
        return f"open {device}: {err.strerror}"
    try:
        buf = bytearray(_LOOP_INFO64.size)
        try:
            fcntl.ioctl(fd, _LOOP_GET_STATUS64, buf)
        except OSError as err:
            if err.errno == errno.ENXIO:  # not bound to anything: already gone
                return None
            return f"{device}: LOOP_GET_STATUS64: {err.strerror}"
        lo_inode = _LOOP_INFO64.unpack(buf)[1]
        backing = _loop_backing(device)
        if backing is None or not under(backing, root):
            return None
        if image_ino is not None and lo_inode != image_ino:
            return None
        try:
            # With other openers left (a lazily detached mount) this only
            # sets autoclear, and the device frees itself when they go.
            fcntl.ioctl(fd, _LOOP_CLR_FD, 0)
        except OSError as err:
            if err.errno != errno.ENXIO:
                return f"{device}: LOOP_CLR_FD: {err.strerror}"
    finally:
        os.close(fd)
    return None
