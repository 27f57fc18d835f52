"""Descriptor helpers every part of probe shares: quiet close, directory
opens that never follow a symlink, and removal of a tree we made.

Everything here works relative to an open directory descriptor, so a name
swapped for a symlink by someone else between two of our calls can make a
call fail, never send it somewhere else.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable

__all__ = ["DIR_FLAGS", "close_quietly", "names_now", "open_dir_nofollow", "remove_tree"]

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def close_quietly(fd: int) -> None:
    """Close ``fd`` where its close() error cannot matter.

    For a read-only source (nothing of ours to lose: FUSE and NFS still send
    FLUSH and may fail it), or while another error is already on its way out
    and must not be replaced by this one.
    """
    with contextlib.suppress(OSError):
        os.close(fd)


def open_dir_nofollow(name: str, dir_fd: int) -> int:
    """Open the directory ``name`` in ``dir_fd``; a symlink there is refused.

    O_NOFOLLOW with O_DIRECTORY answers ENOTDIR for a symlink, the same as
    for a file; the lstat after the failure says which one it was, because
    "a symlink is in the way" is what the user needs to hear.
    """
    try:
        return os.open(name, DIR_FLAGS | os.O_NOFOLLOW, dir_fd=dir_fd)
    except NotADirectoryError:
        try:
            is_link = stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
        except OSError:
            is_link = False
        if is_link:
            raise OSError(
                errno.ELOOP,
                "a symlink is where a directory should be (not followed: it may lead "
                "out of the worktree)",
                name,
            ) from None
        raise


def names_now(dir_fd: int) -> list[str]:
    """The entries of the directory ``dir_fd`` as they are now, read through
    a fresh descriptor.

    btrfs fixes the end of a directory stream when the directory is opened
    (so a reader creating entries cannot loop forever), and that end stays
    with the open file, rewinds and dup()s included: listing ``dir_fd``
    itself never shows an entry made after it was opened.
    """
    fd = os.open(".", DIR_FLAGS, dir_fd=dir_fd)
    try:
        return os.listdir(fd)
    finally:
        os.close(fd)


def remove_tree(parent_fd: int, name: str) -> list[OSError]:
    """Remove ``name`` (in ``parent_fd``) and everything below it; the
    errors met on the way, in order. Never follows a symlink: entries are
    unlinked, not walked into, unless they are real directories (opened
    O_NOFOLLOW). Names already gone count as removed."""
    errors: list[OSError] = []
    try:
        fd = os.open(name, DIR_FLAGS | os.O_NOFOLLOW, dir_fd=parent_fd)
    except FileNotFoundError:
        return errors
    except OSError as err:
        if err.errno not in (errno.ENOTDIR, errno.ELOOP):
            return [err]
        # A file or a symlink: unlink the entry itself, not its target.
        _unlink(name, parent_fd, errors)
        return errors
    try:
        with os.scandir(fd) as it:
            children = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        for child, is_dir in children:
            if is_dir:
                errors += remove_tree(fd, child)
            else:
                _unlink(child, fd, errors)
    except OSError as err:
        errors.append(err)
    finally:
        os.close(fd)
    _unlink(name, parent_fd, errors, os.rmdir)
    return errors


def _unlink(
    name: str, dir_fd: int, errors: list[OSError], remove: Callable[..., None] = os.unlink
) -> None:
    try:
        remove(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except OSError as err:
        errors.append(err)
