"""overlayfs: what a file or directory from the *lower* layer does -- the
cases container users trip on (pnpm: EXDEV renaming a lower-layer
directory, hard links that silently copy up; clones that quietly copy).

A probe cannot put files into a lower layer (everything written through the
overlay lands in upper), so these probes use the lower-layer kit the lab
places at the root of each overlay it builds (``probe.lab.KIT_DIR``). On an
overlay without a kit they cannot tell; on any other filesystem there is no
lower layer, which they say as "unsupported" with that reason. Copy-up is
one-way, so the probes that copy up use (and then unlink, leaving a
whiteout) one spare kit file each.
"""

from __future__ import annotations

import errno
import os

from .. import _linux
from .._mounttable import MountEntry, mount_of
from .._overlaykit import KIT_DIR, KIT_FILE, KIT_SPARES, KIT_SUBDIR, kit_bytes
from ._context import ProbeContext, ProbeSpec, Trial, describe_errno, pread_all
from ._model import Capability

__all__ = ["PROBES"]

_GROUP = "overlayfs lower layer"
#: the value (and so the cell) of an overlayfs row on a filesystem that is none
NOT_AN_OVERLAY = "not an overlay"


class _NoLower(Exception):
    """The probe cannot run here; ``answer`` says how that reads."""

    def __init__(self, answer: Capability) -> None:
        super().__init__(answer.reason)
        self.answer = answer


def _overlay(ctx: ProbeContext, t: Trial) -> tuple[MountEntry, str]:
    """(the overlay mount, the kit's path) or _NoLower."""
    mnt = mount_of(ctx.path)
    t.note(f"mount table: {ctx.path} is on {mnt.fstype if mnt else 'an unknown mount'}"
           + (f" at {mnt.mount_point}" if mnt else ""))
    if mnt is None or mnt.fstype != "overlay":
        # The value is the cell's words: "no (checked)" would claim a check
        # that found the feature broken, where there is nothing to check.
        raise _NoLower(t.unsupported("not an overlay filesystem: there is no lower layer",
                                     value=NOT_AN_OVERLAY))
    kit = os.path.join(mnt.mount_point, KIT_DIR)
    if not os.path.isdir(kit):
        raise _NoLower(t.could_not_tell(
            f"no lower-layer kit ({KIT_DIR}/ at the overlay root, which the cowprobe lab "
            "puts in its overlay lowers): no lower-layer file to try"))
    return mnt, kit


def _upper_has(mnt: MountEntry, rel: str) -> bool | None:
    """Is ``rel`` (relative to the overlay root) in the upper layer? None: no upperdir."""
    upper = next((o.split("=", 1)[1] for o in mnt.super_options if o.startswith("upperdir=")),
                 None)
    return None if upper is None else os.path.lexists(os.path.join(upper, rel))


def _spare(ctx: ProbeContext, t: Trial) -> tuple[MountEntry, str, str]:
    """(the overlay, an unused lower-layer spare file, its path from the root)."""
    mnt, kit = _overlay(ctx, t)
    spares = os.path.join(kit, KIT_SPARES)
    names = sorted(os.listdir(spares)) if os.path.isdir(spares) else []
    if not names:
        raise _NoLower(t.could_not_tell(
            f"the lower-layer kit's spare files are used up ({KIT_DIR}/{KIT_SPARES}/ is empty)"))
    spare = os.path.join(spares, names[0])
    return mnt, spare, os.path.relpath(spare, mnt.mount_point)


def clone_lower(ctx: ProbeContext, t: Trial) -> Capability:
    """FICLONE from a lower-layer file (opened read-only: no copy-up) into upper."""
    try:
        mnt, kit = _overlay(ctx, t)
    except _NoLower as no:
        return no.answer
    src = os.path.join(kit, KIT_FILE)
    s_fd = ctx.track(os.open(src, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW))
    d_fd = ctx.create(ctx.name("clone-of-lower"))
    try:
        t.call(f"FICLONE(upper dest, lower {KIT_DIR}/{KIT_FILE})", _linux.ficlone, d_fd, s_fd)
    except OSError as err:
        return t.failed(err, "FICLONE of a lower-layer file")
    data = kit_bytes()
    if pread_all(d_fd, len(data) + 1) != data:
        return t.unsupported("FICLONE succeeded but the clone's bytes differ from the source")
    if _upper_has(mnt, f"{KIT_DIR}/{KIT_FILE}"):
        return t.unsupported("FICLONE copied the lower-layer source up (it must only read it)")
    return t.supported()


def copy_up_shares(ctx: ProbeContext, t: Trial) -> Capability:
    """Opening a lower file for writing copies it up: does the copy share blocks?"""
    try:
        mnt, spare, rel = _spare(ctx, t)
    except _NoLower as no:
        return no.answer
    try:
        fd = ctx.track(t.call(f"open({rel}, O_WRONLY) (copy-up)", os.open, spare,
                              os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW))
    except OSError as err:
        return t.failed(err, "copy-up (open for writing)")
    try:
        if not _upper_has(mnt, rel):
            return t.could_not_tell("open for writing did not copy the file up")
        try:
            shared = t.call("FIEMAP(copied-up file) shared bytes", _linux.shared_bytes, fd)
        except OSError as err:
            return t.could_not_tell(f"FIEMAP of the copied-up file failed with "
                                    f"{describe_errno(err.errno)}: sharing cannot be seen",
                                    err.errno)
        if shared:
            return t.supported(f"the copy-up shares {shared} bytes with the lower file (a clone)",
                               value=shared)
        return t.unsupported("copy-up made a full copy: no block shared with the lower file",
                             value=0)
    finally:
        ctx.close(fd)
        _discard(spare, t)


def rename_lower_dir(ctx: ProbeContext, t: Trial) -> Capability:
    """rename(2) of a directory that lives in the lower layer."""
    try:
        _mnt, kit = _overlay(ctx, t)
    except _NoLower as no:
        return no.answer
    src = os.path.join(kit, KIT_SUBDIR)
    dst = os.path.join(kit, f"{KIT_SUBDIR}-renamed-{ctx.token}")
    try:
        t.call(f"rename({KIT_DIR}/{KIT_SUBDIR}, ...-renamed)", os.rename, src, dst)
    except OSError as err:
        # EXDEV is the kernel's "copy it yourself" (redirect_dir off): mv
        # falls back to copying the tree, a rename(2) caller fails.
        return t.failed(err, "rename of a lower-layer directory",
                        {errno.EXDEV, errno.EOPNOTSUPP, errno.ENOTSUP})
    try:
        t.call("rename it back", os.rename, dst, src)
    except OSError as err:
        return t.could_not_tell(
            f"the rename succeeded but renaming it back failed with {describe_errno(err.errno)}",
            err.errno)
    return t.supported("redirect_dir: the directory was renamed in place")


def hardlink_lower(ctx: ProbeContext, t: Trial) -> Capability:
    """link(2) of a lower-layer file: works, but copies the file up first."""
    try:
        mnt, spare, rel = _spare(ctx, t)
    except _NoLower as no:
        return no.answer
    link = ctx.name("link-to-lower")
    try:
        t.call(f"link({rel}, {link})", os.link, spare, link, dst_dir_fd=ctx.dir_fd,
               follow_symlinks=False)
    except OSError as err:
        # Asked before the spare is discarded: then there is no file to ask.
        foreign = err.errno == errno.EPERM and _foreign(spare, t)
        _discard(spare, t)
        if foreign:
            # fs.protected_hardlinks refuses a link to another user's file
            # with this same EPERM, whatever the overlay could do: the
            # answer is the caller's, not the filesystem's.
            return t.could_not_tell(
                "link failed with EPERM, but the lower-layer file belongs to another user: "
                "fs.protected_hardlinks refuses that link on any filesystem", err.errno)
        return t.failed(err, "hard link of a lower-layer file", {errno.EXDEV, errno.EPERM,
                                                                  errno.EOPNOTSUPP})
    try:
        a = os.stat(spare, follow_symlinks=False)
        b = os.stat(link, dir_fd=ctx.dir_fd, follow_symlinks=False)
        copied = _upper_has(mnt, rel)
        t.note(f"stat: inode {a.st_ino} nlink {a.st_nlink} / inode {b.st_ino} nlink {b.st_nlink}"
               f"; in upper afterwards: {copied}")
        if a.st_nlink != 2 or b.st_nlink != 2:
            return t.unsupported(f"link succeeded but the link counts are {a.st_nlink} and "
                                 f"{b.st_nlink}, not 2")
        if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino):
            # Layers on different filesystems without xino: the copied-up
            # name keeps the lower file's inode number, the new name shows
            # the upper one. Anything that pairs links by (st_dev, st_ino)
            # -- tar, rsync -H, du, pnpm's store -- sees two files.
            return t.unsupported("link succeeded (after a copy-up) but the two names report "
                                 f"different inodes ({a.st_dev}:{a.st_ino} and "
                                 f"{b.st_dev}:{b.st_ino})")
        return t.supported("silent copy-up: the lower file was copied into upper first"
                           if copied else "linked without a copy-up", value=int(bool(copied)))
    finally:
        _discard(spare, t)


def _foreign(path: str, t: Trial) -> bool:
    """Is ``path`` another user's file (or unknown: a stat that fails is no
    proof it is ours)? Only then can EPERM be the protected_hardlinks rule."""
    try:
        owner = os.stat(path, follow_symlinks=False).st_uid
    except OSError as err:
        t.note(f"lstat(spare) -> {describe_errno(err.errno)}")
        return True
    t.note(f"lstat(spare) -> owner uid {owner}, ours {os.geteuid()}")
    return owner != os.geteuid()


def _discard(spare: str, t: Trial) -> None:
    # Through the overlay: the name gets a whiteout, so the next probe on
    # this mount takes the next spare instead of an upper copy.
    try:
        os.unlink(spare)
    except OSError as err:
        t.note(f"unlink(spare) -> {describe_errno(err.errno)}")


PROBES = (
    ProbeSpec("overlay_clone_lower", "clone a lower-layer file into upper", _GROUP, clone_lower,
              ("clone_lower",)),
    ProbeSpec("overlay_copy_up", "copy-up shares blocks with the lower file", _GROUP,
              copy_up_shares, ("copy_up_shares",)),
    ProbeSpec("overlay_rename_dir", "rename a lower-layer directory", _GROUP,
              rename_lower_dir, ("rename_lower_dir",)),
    ProbeSpec("overlay_hardlink", "hard link a lower-layer file", _GROUP, hardlink_lower,
              ("hardlink_lower",)),
)
