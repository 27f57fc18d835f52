"""What filesystem PATH is on: statfs magic, the mount table, statvfs.

Two sources on purpose: the magic number is what the kernel serving the
inode says it is (a FUSE mount is "fuse" whatever it claims), the mount
table gives the name, device and options the admin chose (fuse.sshfs,
reflink on XFS is not visible anywhere, ro, noexec).
"""

from __future__ import annotations

import errno
import os

from .. import _linux
from .._mounttable import MountEntry, find_mount, mounts
from ._context import describe_errno
from ._model import Identity

__all__ = ["MAGIC_NAMES", "read_identity", "superblock"]

MAGIC_NAMES: dict[int, str] = {
    0x9123683E: "btrfs",
    0x58465342: "xfs",
    0xEF53: "ext2/ext3/ext4",
    0x01021994: "tmpfs",
    0x858458F6: "ramfs",
    0x65735546: "fuse",
    0x794C7630: "overlayfs",
    0x6969: "nfs",
    0xFF534D42: "cifs",
    0xFE534D42: "smb2",
    0x2FC12FC1: "zfs",
    0xF2F52010: "f2fs",
    0xCA451A4E: "bcachefs",
    0x4D44: "vfat/msdos",
    0x2011BAB0: "exfat",
    0x5346544E: "ntfs",
    0x7366746E: "ntfs3",
    0xF15F: "ecryptfs",
    0x73717368: "squashfs",
    0xE0F5E1E2: "erofs",
    0x00C36400: "ceph",
    0x01021997: "9p",
    0x3434: "nilfs2",
    0x3153464A: "jfs",
    0x52654973: "reiserfs",
    0x01161970: "gfs2",
    0x7461636F: "ocfs2",
    0x482B: "hfsplus",
    0x9FA0: "proc",
    0x62656572: "sysfs",
}


def _mount_table() -> list[MountEntry]:
    try:
        return mounts()
    except OSError:
        return []


def _stat_dir(dir_fd: int, real_path: str) -> os.stat_result:
    try:
        return os.fstat(dir_fd)
    except OSError:
        # One EIO/EACCES from a network or FUSE filesystem is not the
        # directory's identity; ask again by name, and let that answer
        # (ENOENT: the directory really is gone) stand.
        return os.stat(real_path)


def _statvfs(dir_fd: int, real_path: str) -> tuple[os.statvfs_result | None, str | None]:
    """(numbers, None) or (None, why not)."""
    try:
        return os.fstatvfs(dir_fd), None
    except OSError:
        pass  # retried by name, as in _stat_dir
    try:
        return os.statvfs(real_path), None
    except OSError as err:
        code = err.errno or errno.EIO
        return None, f"statvfs: {describe_errno(code)}"


def read_identity(dir_fd: int, real_path: str) -> Identity:
    """The identity of the directory open as ``dir_fd``.

    Raises OSError only when the directory cannot be stat'ed by descriptor
    or by name (the caller turns that into ProbePathError naming the path);
    a statvfs that fails twice leaves those fields None and says why in
    ``unreadable``, because the capability probes do not need them.
    """
    st = _stat_dir(dir_fd, real_path)
    vfs, why = _statvfs(dir_fd, real_path)
    try:
        magic: int | None = _linux.fstatfs_type(dir_fd)
    except (OSError, AttributeError):
        magic = None
    mount = find_mount(real_path, st.st_dev, _mount_table())
    options = mount.options if mount else ()
    read_only = (vfs is not None and bool(vfs.f_flag & os.ST_RDONLY)) or "ro" in options
    frsize = vfs.f_frsize if vfs else 0
    return Identity(
        fstype=mount.fstype if mount else (MAGIC_NAMES.get(magic) if magic is not None else None),
        magic=magic,
        magic_name=MAGIC_NAMES.get(magic) if magic is not None else None,
        mount_point=mount.mount_point if mount else None,
        mount_options=options,
        super_options=mount.super_options if mount else (),
        source=mount.source if mount else None,
        device=f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}",
        block_size=vfs.f_bsize if vfs else None,
        fragment_size=vfs.f_frsize if vfs else None,
        total_bytes=vfs.f_blocks * frsize if vfs else None,
        free_bytes=vfs.f_bfree * frsize if vfs else None,
        available_bytes=vfs.f_bavail * frsize if vfs else None,
        name_max=(vfs.f_namemax or None) if vfs else None,
        read_only=read_only,
        unreadable=(why,) if why else (),
    )


def superblock(dir_fd: int, real_path: str) -> str | None:
    """The device ("major:minor") of the filesystem -- the superblock --
    that the directory open as ``dir_fd`` lives on, from the mount table;
    None where the table does not say.

    Not the directory's st_dev: btrfs gives every subvolume its own
    anonymous device, so two directories of one btrfs (reflinks between
    them work) show two st_devs; mountinfo names the filesystem's one.
    """
    try:
        st = _stat_dir(dir_fd, real_path)
    except OSError:
        return None
    mount = find_mount(real_path, st.st_dev, _mount_table())
    return mount.device if mount is not None else None
