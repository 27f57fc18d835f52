"""Hard links and symlinks, each checked after the call succeeds."""

from __future__ import annotations

import errno
import os
import stat

from ._context import NOT_SUPPORTED_ERRNOS, ProbeContext, ProbeSpec, Trial
from ._model import Capability

__all__ = ["PROBES"]

_GROUP = "links & metadata"

# link(2)/symlink(2) document EPERM as "this filesystem cannot create such
# links" (FAT, some FUSE daemons), so here it does mean unsupported.
_LINK_UNSUPPORTED = NOT_SUPPORTED_ERRNOS | {errno.EPERM}


def hardlink(ctx: ProbeContext, t: Trial) -> Capability:
    a = ctx.name("file")
    b = ctx.name("link")
    fd = ctx.create(a, b"hard link probe\n")
    try:
        t.call(f"link({a}, {b})", os.link, a, b, src_dir_fd=ctx.dir_fd, dst_dir_fd=ctx.dir_fd,
               follow_symlinks=False)
    except OSError as err:
        return t.failed(err, "link", _LINK_UNSUPPORTED)
    orig = os.fstat(fd)
    other = os.stat(b, dir_fd=ctx.dir_fd, follow_symlinks=False)
    t.note(f"fstat({a}) -> inode {orig.st_ino}, nlink {orig.st_nlink}; "
           f"lstat({b}) -> inode {other.st_ino}, nlink {other.st_nlink}")
    if (orig.st_dev, orig.st_ino) != (other.st_dev, other.st_ino):
        return t.unsupported("link succeeded but the new name is a different inode (a copy)")
    if orig.st_nlink != 2 or other.st_nlink != 2:
        return t.unsupported(f"link succeeded but the link count is {orig.st_nlink}, not 2")
    return t.supported()


def symlink(ctx: ProbeContext, t: Trial) -> Capability:
    name = ctx.name("symlink")
    # A relative target that does not exist: a probe symlink must never
    # point anywhere real, least of all outside PATH.
    target = f"cowprobe-nonexistent-{ctx.token}"
    try:
        t.call(f"symlink({target!r}, {name})", os.symlink, target, name, dir_fd=ctx.dir_fd)
    except OSError as err:
        return t.failed(err, "symlink", _LINK_UNSUPPORTED)
    st = os.stat(name, dir_fd=ctx.dir_fd, follow_symlinks=False)
    got = t.call(f"readlink({name})", os.readlink, name, dir_fd=ctx.dir_fd)
    if not stat.S_ISLNK(st.st_mode):
        return t.unsupported("symlink succeeded but the entry is not a symlink")
    if got != target:
        return t.unsupported(f"symlink succeeded but reads back as {got!r}")
    return t.supported()


PROBES = (
    ProbeSpec("hardlink", "hard links", _GROUP, hardlink,
              ("hardlinks", "link")),
    ProbeSpec("symlink", "symlinks", _GROUP, symlink, ("symlinks",)),
)
