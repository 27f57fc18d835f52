"""Permission bits and user extended attributes, as stored, not as claimed."""

from __future__ import annotations

import os
import stat

from ._context import ProbeContext, ProbeSpec, Trial
from ._model import Capability

__all__ = ["PROBES"]

_GROUP = "links & metadata"


def chmod(ctx: ProbeContext, t: Trial) -> Capability:
    """Set the exec bit, then clear it, and read each state back.

    Filesystems without Unix modes (FAT, many FUSE and SMB mounts) accept
    chmod and change nothing; checking two different modes catches both
    "stuck at 0777" and "stuck at 0644". The probe file is created with
    0600 and then chmod'ed, so the umask never decides what we read back.
    """
    name = ctx.name("mode")
    fd = ctx.create(name, b"#!/bin/sh\n", mode=0o600)
    for want in (0o755, 0o640):
        try:
            t.call(f"fchmod({name}, {want:#o})", os.fchmod, fd, want)
        except OSError as err:
            return t.failed(err, "fchmod")
        got = stat.S_IMODE(os.fstat(fd).st_mode)
        t.note(f"fstat({name}).st_mode & 0o7777 -> {got:#o}")
        if got != want:
            return t.unsupported(f"chmod {want:#o} succeeded but the mode is {got:#o}")
    return t.supported()


def xattr(ctx: ProbeContext, t: Trial) -> Capability:
    name = ctx.name("xattr")
    fd = ctx.create(name, b"x")
    key = "user.cowprobe.probe"
    value = f"cowprobe-{ctx.token}".encode()
    try:
        t.call(f"fsetxattr({name}, {key!r})", os.setxattr, fd, key, value)
        got = t.call(f"fgetxattr({name}, {key!r})", os.getxattr, fd, key)
        names = t.call(f"flistxattr({name})", os.listxattr, fd)
    except OSError as err:
        return t.failed(err, "user xattr")
    if got != value:
        return t.unsupported(f"setxattr succeeded but the value reads back as {got!r}")
    if key not in names:
        return t.unsupported("setxattr succeeded but listxattr does not list the attribute")
    return t.supported()


PROBES = (
    ProbeSpec("chmod", "chmod / exec bit", _GROUP, chmod, ("exec_bit", "exec", "mode")),
    ProbeSpec("xattr", "user xattrs", _GROUP, xattr, ("user_xattr", "xattrs")),
)
