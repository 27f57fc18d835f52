"""Named syscall rule sets for behaviours this machine cannot run.

Each profile is data: the rules, and where the behaviour comes from. The
rules only approximate where the real trigger is not a path (ZFS's EAGAIN
depends on the source's unsynced transaction group, not on its name): the
approximation is named in the profile's ``note``.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["PROFILES", "Profile", "profile"]

_CLONES = "FICLONE,FICLONERANGE"


class Profile(NamedTuple):
    name: str
    rules: tuple[str, ...]
    source: str
    note: str = ""


PROFILES: dict[str, Profile] = {p.name: p for p in (
    Profile(
        "zfs-unsynced-source", (f"{_CLONES}:*:EAGAIN:times=3",),
        "OpenZFS 2.2+ block cloning: zfs_clone_range() (module/zfs/zfs_vnops.c) "
        "returns EAGAIN while a source block is still dirty in an open transaction "
        "group; uv and DVC report it for files written moments before the clone",
        "a file written within the last few seconds: modelled as the first three "
        "clone attempts failing, whatever the file",
    ),
    Profile(
        "zfs-cloning-off", (f"{_CLONES}:*:EOPNOTSUPP",),
        "OpenZFS: with the zfs_bclone_enabled module parameter 0 (the default in "
        "2.2.0-2.2.2) zpl_clone_file_range() answers EOPNOTSUPP",
    ),
    Profile(
        "zfs-across-datasets", (f"{_CLONES}:*:EXDEV",),
        "OpenZFS zfs_clone_range(): EXDEV when source and destination are in "
        "different datasets/pools; copy_file_range then falls back to a real copy "
        "in the kernel (no rule on it: it still copies)",
    ),
    Profile(
        "nfs-no-clone", (f"{_CLONES},FIDEDUPERANGE:*:EOPNOTSUPP",),
        "NFSv4.2 CLONE is optional (RFC 7862 section 15.13); fs/nfs/nfs42proc.c "
        "turns a server's NFS4ERR_NOTSUPP into EOPNOTSUPP; copy_file_range still "
        "copies (server-side COPY or the splice fallback)",
    ),
    Profile(
        "old-kernel", ("copy_file_range:*:ENOSYS", f"{_CLONES},FIDEDUPERANGE:*:ENOTTY"),
        "Linux 4.5 added copy_file_range(2) (ENOSYS before) and made FICLONE, "
        "FICLONERANGE and FIDEDUPERANGE generic VFS ioctls; before that only btrfs "
        "knew them and every other filesystem answered ENOTTY",
    ),
    Profile(
        "idmapped-container", (f"{_CLONES}:*:EPERM",),
        "field reports collected in DESIGN.md: FICLONE answers EPERM on idmapped "
        "mounts, in user namespaces and under container seccomp profiles",
        "not reproduced on this machine; the rule stands for the reports",
    ),
)}


def profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        from .._rules import RuleError

        raise RuleError(
            f"unknown profile {name!r}; known: {', '.join(sorted(PROFILES))}"
        ) from None
