"""Publishing a finished temporary under its final name, durably on request.

Without fsync a crash shortly after the rename can publish an empty or torn
file: the rename reached the disk before the data did (bazel fsyncs before
renaming for this reason). With ``fsync=True`` the file is synced before the
rename and the directory after it, and a failed sync fails the operation
with the old destination still in place.
"""

from __future__ import annotations

import errno
import os

__all__ = ["KEEP", "fsync_at", "publish"]

#: Attribute set on an error whose temporary holds the *old* file.
KEEP = "_cowprobe_keep_temp"

_RENAME_EXCHANGE = 2
# renameat2 flags the filesystem (or an old kernel, or a non-Linux system)
# does not know: fall back to a plain rename.
_NO_EXCHANGE = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP})


def fsync_at(name: str, dir_fd: int) -> None:
    """fsync the file ``name`` in ``dir_fd`` (never through a symlink).

    Read-only is enough: fsync flushes the inode, not the descriptor's
    writes, and the clone path has no descriptor of its own left open.
    """
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp: str, name: str, dir_fd: int, *, fsync: bool) -> list[str]:
    """Rename ``tmp`` over ``name``; with ``fsync``, durably.

    Returns names of ours that could not be removed (the old file after an
    exchange). On any failure the old ``name`` is back in place (or, when
    there was none, no ``name`` is left) and ``tmp`` is the caller's to
    discard.
    """
    if not fsync:
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        return []
    fsync_at(tmp, dir_fd)
    if _exchange(tmp, name, dir_fd):
        # name: the new file; tmp: the old one, until the directory is synced.
        try:
            os.fsync(dir_fd)
        except OSError as err:
            try:
                _exchange(tmp, name, dir_fd)  # the old file back under its name
            except OSError:
                # The old file now lives under tmp: it must not be discarded.
                err.add_note(f"the old destination is kept as {tmp}")
                setattr(err, KEEP, tmp)
            raise
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            return [tmp]
        return []
    existed = _exists(name, dir_fd)
    os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    try:
        os.fsync(dir_fd)
    except OSError as err:
        if not existed:
            # Nothing was there before: leaving nothing is keeping it.
            os.unlink(name, dir_fd=dir_fd)
        else:
            err.add_note("the destination was replaced; its directory could not be synced")
        raise
    return []


def _exchange(tmp: str, name: str, dir_fd: int) -> bool:
    """Swap ``tmp`` and ``name`` atomically; False where that cannot be done
    (no such name yet, or no RENAME_EXCHANGE here)."""
    # Off Linux renameat2 is missing (ENOSYS): the same answer as a
    # filesystem without RENAME_EXCHANGE.
    from . import _linux

    try:
        _linux.renameat2(tmp, name, _RENAME_EXCHANGE, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except OSError as err:
        if err.errno == errno.ENOENT or err.errno in _NO_EXCHANGE:
            return False
        raise
    return True


def _exists(name: str, dir_fd: int) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True
