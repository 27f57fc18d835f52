"""Vanish: a rule removes the name an operation just succeeded on from the
backing directory, as that operation's caller would remove it.

A user with write access to the backing directory may rename or swap any
name between two of our calls, and no syscall removes a name only if it
leads to a given inode. So the removal runs under the caller's fsuid/fsgid
with no capability in effect (``Creds.run_unprivileged``): whatever was
moved or swapped into the names it works on, the kernel lets it remove only
what the caller could have removed there with their own ``rm -r`` -- never
root's file in a sticky directory, never the contents of a root-owned
directory a user carried into the tree inside one of their own.
"""

from __future__ import annotations

import os
import stat

from probe._fd import DIR_FLAGS, remove_tree

from ._creds import Caller, Creds
from ._nodes import Node

__all__ = ["vanish"]


def vanish(node: Node, tree: bool, creds: Creds, caller: Caller) -> bool:
    """Remove ``node``'s name (with everything below it, if ``tree``).

    Refused (False) for the mount root, for a directory unless the rule
    said ``vanish-tree``, when the name no longer leads to the node's inode
    (it was renamed or replaced meanwhile), and when the caller may not
    remove it or something below it (what they may remove is gone then).
    """
    parent = node.parent
    if parent is None or not parent.alive or (node.is_dir and not tree):
        return False
    try:
        # Taken as the daemon: a parent that gave its descriptor up is
        # reopened by name and checked (``_nodes``), whoever asks.
        pfd = parent.fd
        return creds.run_unprivileged(caller.uid, caller.gid, lambda: _remove(node, pfd))
    except OSError:
        return False


def _remove(node: Node, pfd: int) -> bool:
    if node.is_dir:
        fd = os.open(node.name, DIR_FLAGS | os.O_NOFOLLOW, dir_fd=pfd)
        try:
            # Emptied through a descriptor checked to be the node's own, so
            # never the contents of a directory swapped in for it.
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != node.key:
                return False
            with os.scandir(fd) as it:
                names = [e.name for e in it]
            if any(remove_tree(fd, name) for name in names):
                return False
        finally:
            os.close(fd)
    st = os.stat(node.name, dir_fd=pfd, follow_symlinks=False)
    if (st.st_dev, st.st_ino) != node.key or stat.S_IFMT(st.st_mode) != node.mode:
        return False
    # unlinkat and rmdir take a name, not an inode: a swap right after the
    # check above removes the newcomer's name. Removed as the caller, that
    # is one the caller could remove in this directory anyway (and rmdir
    # takes only an empty one). The check stays for the honest case: a
    # name renamed away and taken by another entry since the kernel looked
    # it up is not the node's to lose.
    if node.is_dir:
        os.rmdir(node.name, dir_fd=pfd)
    else:
        os.unlink(node.name, dir_fd=pfd)
    return True
