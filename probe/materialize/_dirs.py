"""Destination directories for a batch: opened once, created staged, published.

Every destination file is created relative to an open directory descriptor,
so a batch resolves each destination directory's path once, not once per
file, and a parent swapped for a symlink mid-batch cannot redirect a write.

Missing directories are *staged*: the topmost missing one is made under a
hidden temporary name (``probe._tempname.temp_name``) and everything below it
with final names. Nothing under a staged directory is reachable by its final
path until ``publish`` renames the staged root into place, which is what
lets files in it be created directly under their final names -- no per-file
temporary and rename -- while still never showing a torn file under a final
path. A fresh worktree therefore appears whole, in one rename, at the end.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from dataclasses import dataclass, field

from .. import _linux
from .._tempname import temp_name

__all__ = ["DestDir", "DirCache"]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_ACL_DEFAULT = "system.posix_acl_default"


@dataclass(eq=False)
class DestDir:
    path: str
    fd: int
    dev: int
    #: created by this batch (below a staged root): files go in under their
    #: final names, because the final path does not resolve yet
    fresh: bool
    #: a default ACL decides new files' modes instead of the umask, so the
    #: mode given to open() cannot be trusted and needs an fchmod
    has_default_acl: bool
    #: for a staged root: (parent DestDir, temporary name, final name)
    stage: tuple[DestDir, str, str] | None = None
    #: for a directory made below a staged root: its parent and name
    made_in: tuple[DestDir, str] | None = None
    #: the staged root this directory lives under (itself, for a root)
    root: DestDir | None = None
    #: directories made under this staged root, in creation order
    created: list[DestDir] = field(default_factory=list)
    #: for a staged root: the error that said the directory was missing (a
    #: FUSE daemon can say ENOENT for a directory that exists)
    missing: OSError | None = None
    #: in a fresh directory: final names of failed jobs' files that could
    #: not be unlinked when the job failed; the publish must not show them
    debris: list[str] = field(default_factory=list)


class DirCache:
    """The batch's destination directories, keyed by the path as given."""

    def __init__(self) -> None:
        self._dirs: dict[str, DestDir] = {}
        self._errors: dict[str, OSError] = {}
        self._roots: list[DestDir] = []
        self._lock = threading.Lock()

    def get(self, path: str) -> DestDir:
        """The open directory ``path``, creating (staged) what is missing.

        Raises the OSError that stopped it; the same error again for every
        later file in that directory, without retrying the syscalls.
        """
        d = self._dirs.get(path)
        if d is not None:
            return d
        with self._lock:
            return self._get_locked(path)

    def lookup(self, path: str) -> DestDir | None:
        """The directory if this batch already opened it; never creates."""
        return self._dirs.get(path)

    def _get_locked(self, path: str) -> DestDir:
        d = self._dirs.get(path)
        if d is not None:
            return d
        err = self._errors.get(path)
        if err is not None:
            raise err
        try:
            d = self._open_or_create(path)
        except OSError as exc:
            if exc.filename is None:
                exc.filename = path
            self._errors[path] = exc
            raise
        self._dirs[path] = d
        return d

    def _open_or_create(self, path: str) -> DestDir:
        try:
            fd = os.open(path, _DIR_FLAGS)
        except FileNotFoundError as err:
            missing: OSError = err
        else:
            return _describe(path, fd, fresh=False)
        parent, name = os.path.split(path.rstrip(os.sep) or os.sep)
        if not name or name in (".", ".."):
            raise FileNotFoundError(errno.ENOENT, "destination directory is missing", path)
        pdir = self._get_locked(parent or ".")
        if pdir.fresh:
            assert pdir.root is not None
            os.mkdir(name, dir_fd=pdir.fd)
            d = _open_made(pdir.fd, name, path)
            d.root = pdir.root
            d.made_in = (pdir, name)
            pdir.root.created.append(d)
            return d
        tmp = temp_name(name)
        try:
            os.mkdir(tmp, dir_fd=pdir.fd)
            d = _open_made(pdir.fd, tmp, path)
        except OSError as err:
            # Name the directory the caller asked for, not our hidden
            # temporary (which means nothing to them, and is gone).
            if err.filename == tmp:
                err.filename = path
            raise
        d.stage = (pdir, tmp, name)
        d.root = d
        d.missing = missing
        self._roots.append(d)
        return d

    def publish(self, used: set[DestDir]) -> dict[DestDir, OSError]:
        """Rename every staged root that holds a finished file into place;
        remove the ones that hold none. Returns errors instead of raising,
        so one failure does not strand the other roots under hidden names."""
        errors: dict[DestDir, OSError] = {}
        for root in self._roots:
            assert root.stage is not None
            parent, tmp, name = root.stage
            try:
                if root in used:
                    _sweep(root)
                    _place(parent.fd, tmp, name, root.missing)
                else:
                    # Nothing finished under it: take back the directories
                    # this batch made rather than publish an empty skeleton.
                    for d in reversed(root.created):
                        assert d.made_in is not None
                        with contextlib.suppress(OSError):
                            os.rmdir(d.made_in[1], dir_fd=d.made_in[0].fd)
                    os.rmdir(tmp, dir_fd=parent.fd)
            except OSError as err:
                errors[root] = err
                # The staged tree is private (a random hidden name nobody
                # else knows) and every entry in it is this batch's: take it
                # all back, finished files too, since their jobs now fail.
                # Left there it would be a hidden directory nobody removes.
                _remove_tree(parent.fd, tmp)
        return errors

    def close(self) -> None:
        for d in self._dirs.values():
            with contextlib.suppress(OSError):
                os.close(d.fd)
        self._dirs.clear()


def _describe(path: str, fd: int, *, fresh: bool) -> DestDir:
    try:
        st = os.fstat(fd)
        try:
            os.getxattr(fd, _ACL_DEFAULT)
        except OSError as err:
            # ENODATA: no default ACL; EOPNOTSUPP: no ACLs on this filesystem.
            # Anything else: cannot tell, so take the safe (fchmod) path.
            acl = err.errno not in (errno.ENODATA, errno.EOPNOTSUPP)
        else:
            acl = True
    except BaseException:
        os.close(fd)
        raise
    return DestDir(path, fd, st.st_dev, fresh, acl)


def _open_made(parent_fd: int, name: str, path: str) -> DestDir:
    """Open and describe the directory this batch just made as ``name``;
    if that fails, remove it again (it is empty, and nothing else knows it)."""
    try:
        return _describe(path, os.open(name, _DIR_FLAGS, dir_fd=parent_fd), fresh=True)
    except BaseException:
        with contextlib.suppress(OSError):
            os.rmdir(name, dir_fd=parent_fd)
        raise


def _sweep(root: DestDir) -> None:
    """Unlink, once more, failed jobs' files in ``root``'s tree whose unlink
    failed at the time; raises if one is still there, because publishing
    would put a torn file under its final name."""
    for d in (root, *root.created):
        for name in d.debris:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=d.fd)
        d.debris.clear()


def _remove_tree(parent_fd: int, name: str) -> None:
    """Best-effort removal of the staged directory ``name`` and everything
    in it. Never follows a symlink: entries are unlinked, not walked into,
    unless they are real directories (opened O_NOFOLLOW)."""
    with contextlib.suppress(OSError):
        fd = os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=parent_fd)
        try:
            with os.scandir(fd) as it:
                entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
            for entry, is_dir in entries:
                if is_dir:
                    _remove_tree(fd, entry)
                else:
                    with contextlib.suppress(OSError):
                        os.unlink(entry, dir_fd=fd)
        finally:
            os.close(fd)
        os.rmdir(name, dir_fd=parent_fd)


def _place(parent_fd: int, tmp: str, name: str, missing: OSError | None = None) -> None:
    """Rename the staged directory ``tmp`` to ``name``, merging into a
    directory of that name that appeared meanwhile (never replacing one:
    plain rename(2) would silently swap out an empty directory someone else
    just made and may be about to fill)."""
    try:
        _rename_noreplace(tmp, name, parent_fd)
        return
    except OSError as err:
        if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise
    # Fresh descriptors for the walk: a directory fd's read position is
    # shared with every dup of it, and the batch's own one may not be at 0.
    staged = os.open(tmp, _DIR_FLAGS, dir_fd=parent_fd)
    try:
        target = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        try:
            if missing is not None and os.fstat(target).st_dev != os.fstat(staged).st_dev:
                # Not a directory that appeared meanwhile: a mount point the
                # lookup said was missing (a FUSE root whose GETATTR failed
                # with ENOENT), so the staged tree was built on the parent
                # filesystem. No rename can cross into it (EXDEV, after part
                # of the merge), and the error that explains it is the
                # lookup's, so that is the one reported.
                raise OSError(
                    missing.errno,
                    f"{missing.strerror} (said of a directory that exists, "
                    "as a mount point)",
                    missing.filename,
                )
            _merge(staged, target)
        finally:
            os.close(target)
    finally:
        os.close(staged)
    os.rmdir(tmp, dir_fd=parent_fd)


def _merge(src_fd: int, dst_fd: int) -> None:
    with os.scandir(src_fd) as it:
        entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
    for name, is_dir in entries:
        if not is_dir:
            # A finished file of this batch: replacing what is there is what
            # the job asked for, and rename keeps it atomic.
            os.replace(name, name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
            continue
        try:
            _rename_noreplace(name, name, src_fd, dst_fd)
            continue
        except OSError as err:
            if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
        sub_src = os.open(name, _DIR_FLAGS, dir_fd=src_fd)
        try:
            sub_dst = os.open(name, _DIR_FLAGS, dir_fd=dst_fd)
            try:
                _merge(sub_src, sub_dst)
            finally:
                os.close(sub_dst)
        finally:
            os.close(sub_src)
        os.rmdir(name, dir_fd=src_fd)


def _rename_noreplace(src: str, dst: str, src_fd: int, dst_fd: int | None = None) -> None:
    dst_fd = src_fd if dst_fd is None else dst_fd
    try:
        _linux.renameat2(src, dst, _linux.RENAME_NOREPLACE, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
    except OSError as err:
        # EINVAL: this filesystem (some FUSE daemons) has no RENAME_NOREPLACE;
        # ENOSYS: the kernel has no renameat2. Check-then-rename is racy but
        # is the best either allows.
        if err.errno not in (errno.EINVAL, errno.ENOSYS):
            raise
        try:
            os.stat(dst, dir_fd=dst_fd, follow_symlinks=False)
        except FileNotFoundError:
            os.rename(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
            return
        raise FileExistsError(errno.EEXIST, "already exists", dst) from None
    except AttributeError:  # no renameat2 in this C library
        os.rename(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
