"""Putting a batch's staged directories into place -- or taking them back.

A staged root is a hidden directory (``probe._copy.temp_name``) holding a
whole fresh subtree. At the end of a batch it is renamed to its final name
in one rename(2), so nobody ever sees it half built. A batch that ends in an
exception instead (Ctrl-C, SIGTERM turned into an exception, a bug) never
publishes: its staged roots are removed, because a worktree with 5,000 of
its 20,000 files under its final name looks finished to every tool after it.
A publish (or, with fsync, a directory sync) that fails turns the jobs it
undid into failures (``fail_unpublished``).

Directories are made 0700 (``_dirs``) and get their modes here, once their
files are in: what mkdir(0777) would have given them (umask or default
ACL), or, for a mirrored one, what ``cp -r`` gives a directory it makes
(``_final_mode``). Those that keep the owner's rwx get it before the
rename, so the tree appears with its modes; the others (a read-only source
directory) after it, since the merge and the clean-up of a failed publish
must still be able to list, empty and remove them.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable

from .. import _linux
from .._fd import DIR_FLAGS, open_dir_nofollow, remove_tree
from .._platform import check_replaceable
from .._records import NamedTuple
from ._dirs import DestDir, DirCache
from ._report import JobResult, JobStatus
from ._worker import Dest

__all__ = [
    "Failure", "Failures", "discard_roots", "fail_unpublished", "publish_roots", "sync_dirs",
]


class Failure(NamedTuple):
    err: OSError
    #: what it stopped, for the job's message
    what: str
    #: for a root whose merge failed part way: the entries (paths relative
    #: to the root, "/"-separated) that did reach their final place -- a
    #: directory covers everything below it. Their jobs are done, and
    #: reporting them failed would be a lie the next run trips over.
    placed: tuple[str, ...] = ()


#: directory -> its failure; a root's entry covers its tree
Failures = dict[DestDir, Failure]

# A second Ctrl-C while the staged trees are being removed must not leave
# them half removed: the removal is simply started again (it is idempotent),
# this many times at most.
_CLEANUP_TRIES = 8


def publish_roots(roots: list[DestDir], used: set[DestDir], *, fsync: bool,
                  umask: int | None) -> Failures:
    """Rename every staged root that holds a finished entry into place;
    remove the ones that hold none. Returns errors instead of raising, so
    one failure does not strand the other roots under hidden names.

    ``fsync``: every directory of a staged tree is synced before its rename
    (the files in it were synced by the worker), and the parent after it.
    Interrupted (any BaseException), the roots not yet in place are removed
    before the exception goes on. ``umask``: the batch's reading of it
    (None: it could not be read from /proc; it is then set and put back,
    which is safe now that the batch's own workers are done).
    """
    errors: Failures = {}
    done = 0
    if umask is None and roots:
        umask = os.umask(0o077)
        os.umask(umask)
    try:
        for root in roots:
            _publish_one(root, root in used, fsync, errors, umask or 0)
            done += 1
    except BaseException:
        discard_roots(roots[done:])
        raise
    return errors


def _publish_one(root: DestDir, used: bool, fsync: bool, errors: Failures, umask: int) -> None:
    assert root.stage is not None
    parent, tmp, name = root.stage
    placed: list[str] = []
    late: list[tuple[DestDir, int]] = []
    what = f"could not move the finished directory into place at {root.path}"
    try:
        if not used:
            # Nothing finished under it: take back the directories this
            # batch made rather than publish an empty skeleton.
            remove_tree(parent.fd, tmp)
            return
        _sweep(root)
        # Deepest first, the root last: nobody else can enter the tree
        # before every directory in it has its mode.
        for d in (*reversed(root.created), root):
            mode = _final_mode(d, umask)
            if mode & 0o700 != 0o700:
                late.append((d, mode))
            elif mode != d.made:
                what = f"could not set the mode of {d.path}"
                os.fchmod(d.fd, mode)
        what = f"could not move the finished directory into place at {root.path}"
        if fsync:
            for d in (*root.created, root):
                os.fsync(d.fd)
        _move_dir(parent.fd, tmp, parent.fd, name, missing=root.missing, placed=placed)
    except OSError as err:
        errors[root] = Failure(err, what, tuple(placed))
        # The staged tree is private (a random hidden name nobody else
        # knows) and every entry in it is this batch's: take it all back,
        # finished files too, since their jobs now fail. Left there it would
        # be a hidden directory nobody removes.
        remove_tree(parent.fd, tmp)
        return
    for d, mode in late:
        try:
            os.fchmod(d.fd, mode)
            if fsync:
                os.fsync(d.fd)
        except OSError as err:
            # Its files are in place, but not as the batch was asked to
            # leave them: failed, as for a parent that could not be synced.
            errors[root] = Failure(err, f"in place, but the mode of {d.path} could not be set")
    if fsync:
        try:
            os.fsync(parent.fd)
        except OSError as err:
            errors[root] = Failure(err, f"in place, but its parent could not be synced: "
                                        f"{root.path}")


def _final_mode(d: DestDir, umask: int) -> int:
    """The mode for ``d``, a directory this batch made (0700, with the
    set-group-ID bit of a set-group-ID parent, which it keeps)."""
    # What mkdir leaves of 0777 where ``d`` is: a default ACL there decides
    # instead of the umask (``d`` inherited its parent's default ACL).
    limit = 0o777 & ~umask if d.acl_limit is None else d.acl_limit
    src = d.src_mode
    if src is None:
        return (d.made & 0o7000) | limit
    # GNU cp -r (coreutils 9.1), for a directory it makes: mkdir with the
    # source's bits minus group and other write, the sticky bit kept and the
    # set-ID bits dropped by mkdir; afterwards those write bits are added
    # back where the umask allows them. So with a default ACL the umask
    # still masks them, and without one all of it is the source's & ~umask.
    return ((d.made & 0o7000) | (src & 0o1000) | (src & 0o755 & limit)
            | (src & 0o022 & ~umask))


def fail_unpublished(
    dirs: DirCache,
    plan: list[tuple[str, list[Dest]]],
    results: list[JobResult | None],
    failures: Failures,
) -> None:
    """Jobs whose directory could not be put into place (or synced) did not
    produce their dest after all (or not durably)."""
    for source, dests in plan:
        for d in dests:
            ddir = dirs.lookup(d.parent)
            r = results[d.job]
            if ddir is None or r is None or not r.ok:
                continue
            hit = failures.get(ddir) or (failures.get(ddir.root) if ddir.root else None)
            if hit is None or (hit.placed and ddir.root and _placed(d.dest, ddir.root, hit)):
                continue
            results[d.job] = JobResult(
                source, d.dest, JobStatus.FAILED, errno=hit.err.errno, path=d.parent,
                error=f"{hit.err.strerror}: {hit.what}",
            )


def _placed(dest: str, root: DestDir, hit: Failure) -> bool:
    """Did ``dest`` reach its final place in the part of a merge that
    happened before it failed?"""
    parts = [c for c in dest[len(root.path):].split("/") if c and c != "."]
    return any("/".join(parts[:n]) in hit.placed for n in range(1, len(parts) + 1))


def sync_dirs(dirs: list[DestDir]) -> Failures:
    """fsync each existing directory the batch renamed files into, so the
    renames themselves survive a crash."""
    errors: Failures = {}
    for d in dirs:
        try:
            os.fsync(d.fd)
        except OSError as err:
            errors[d] = Failure(err, f"renamed into place, but the directory could not be "
                                     f"synced: {d.path}")
    return errors


def discard_roots(roots: list[DestDir]) -> None:
    """Remove staged roots and everything in them (the batch was stopped by
    an exception); never raises, never follows a symlink."""
    pending = list(roots)

    def remove() -> None:
        while pending:
            root = pending[0]
            assert root.stage is not None
            parent, tmp, _name = root.stage
            remove_tree(parent.fd, tmp)
            pending.pop(0)

    _uninterrupted(remove)


def _uninterrupted(fn: Callable[[], None]) -> None:
    for _ in range(_CLEANUP_TRIES):
        try:
            fn()
            return
        except BaseException:  # noqa: S112 - a second signal: finish the cleanup first
            continue


def _sweep(root: DestDir) -> None:
    """Unlink, once more, failed jobs' files in ``root``'s tree whose unlink
    failed at the time; raises if one is still there, because publishing
    would put a torn file under its final name."""
    for d in (root, *root.created):
        for name in d.debris:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=d.fd)
        d.debris.clear()


def _move_dir(
    src_parent: int,
    src: str,
    dst_parent: int,
    dst: str,
    *,
    missing: OSError | None,
    placed: list[str],
    rel: str = "",
) -> None:
    """Rename the staged directory ``src`` to ``dst``, merging into a
    directory of that name that appeared meanwhile (never replacing one:
    plain rename(2) would silently swap out an empty directory someone else
    just made and may be about to fill). Never into a symlink that appeared
    there: that is how a write escapes the worktree. Each entry that reaches
    its final place is appended to ``placed`` (relative to the root)."""
    try:
        _rename_noreplace(src, dst, src_parent, dst_parent)
    except OSError as err:
        if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise
    else:
        placed.append(rel)
        return
    # Fresh descriptors for the walk: a directory fd's read position is
    # shared with every dup of it, and the batch's own one may not be at 0.
    staged = os.open(src, DIR_FLAGS | os.O_NOFOLLOW, dir_fd=src_parent)
    try:
        target = open_dir_nofollow(dst, dst_parent)
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
            _merge(staged, target, placed, rel)
        finally:
            os.close(target)
    finally:
        os.close(staged)
    os.rmdir(src, dir_fd=src_parent)


def _merge(src_fd: int, dst_fd: int, placed: list[str], rel: str) -> None:
    with os.scandir(src_fd) as it:
        entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
    for name, is_dir in entries:
        sub = f"{rel}/{name}" if rel else name
        if is_dir:
            _move_dir(src_fd, name, dst_fd, name, missing=None, placed=placed, rel=sub)
        else:
            # A finished file of this batch: replacing what is there is what
            # the job asked for, and rename keeps it atomic -- but never a
            # device, FIFO or socket someone made there meanwhile.
            check_replaceable(name, dst_fd, sub)
            os.replace(name, name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
            placed.append(sub)


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
