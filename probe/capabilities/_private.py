"""The probe's private directory: ``PATH/.cowprobe-probe-<owner>-<random>.d``,
created exclusively with mode 0700, one subdirectory per probe, reached
only through descriptors opened with O_NOFOLLOW, and removed by a walk that
never follows a symlink -- so neither a probe nor its cleanup can be led out
of it by a link planted under PATH.

A probe killed by SIGKILL removes nothing, so the name carries its owner
(pid, start time, boot, as temporaries do: ``probe._tempname``) and the
owner holds a shared flock on the directory while it lives. The next probe
of PATH removes a private directory only when both say its owner is gone:
the pid is dead (or of another boot) *and* an exclusive flock is granted.
The lock is what keeps a live probe in another pid namespace (a container
sharing the volume) or on another host (NFS refuses the exclusive lock on
a directory opened read-only) from being taken for dead.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import stat

from .._fd import open_dir_nofollow, remove_tree
from .._tempname import OWNER_PATTERN, my_owner, owner_gone
from ._context import ProbeContext, describe_errno

__all__ = ["PRIVATE_PREFIX", "READ_ONLY_REASON", "PrivateDir", "create_private"]

PRIVATE_PREFIX = ".cowprobe-probe-"

#: Removal walks of the private directory before what remains is reported
#: as a leftover; see ``PrivateDir.remove``.
_REMOVE_PASSES = 3
READ_ONLY_REASON = "read-only filesystem: nothing can be created here to try anything"
_OWNED = re.compile(re.escape(PRIVATE_PREFIX) + OWNER_PATTERN + r"-[0-9a-f]{12}\.d\Z")


def _remove_tree(parent_fd: int, name: str, errors: list[str]) -> None:
    """Remove ``name`` under ``parent_fd``, never following a symlink; each
    failure becomes a line of the report's cleanup errors."""
    errors += [
        f"remove {err.filename or name}: {describe_errno(err.errno)}"
        for err in remove_tree(parent_fd, name)
    ]


class PrivateDir:
    """``PATH/.cowprobe-probe-<random>.d`` and the per-probe subdirectories."""

    def __init__(self, parent_fd: int, parent_path: str) -> None:
        self.parent_fd = parent_fd
        self.token = os.urandom(6).hex()
        self.name = f"{PRIVATE_PREFIX}{my_owner()}-{self.token}.d"
        self.path = os.path.join(parent_path, self.name)
        os.mkdir(self.name, 0o700, dir_fd=parent_fd)
        try:
            self.fd = open_dir_nofollow(self.name, parent_fd)
            # Held until ``remove``; the kernel drops it when we die. A
            # filesystem without flock only loses the reaping (see reap_dead).
            with contextlib.suppress(OSError):
                fcntl.flock(self.fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BaseException:
            with contextlib.suppress(OSError):
                os.rmdir(self.name, dir_fd=parent_fd)
            raise

    def context(self, stem: str) -> ProbeContext:
        os.mkdir(stem, 0o700, dir_fd=self.fd)
        fd = open_dir_nofollow(stem, self.fd)
        return ProbeContext(fd, os.path.join(self.path, stem), self.token)

    def release(self, ctx: ProbeContext) -> None:
        ctx.close_all()
        os.close(ctx.dir_fd)
        # Best effort now, so one probe's files never meet the next probe's;
        # whatever stays is retried by ``remove``.
        _remove_tree(self.fd, os.path.basename(ctx.path), [])

    def _gone(self, errors: list[str]) -> bool:
        # The walk takes ENOENT as "already removed", but a FUSE daemon (or
        # a racing lookup) can answer ENOENT for a directory that is still
        # there; only a fresh lookup saying so ends the retries.
        try:
            os.stat(self.name, dir_fd=self.parent_fd, follow_symlinks=False)
        except FileNotFoundError:
            return True
        except OSError as err:
            errors.append(f"check {self.name}: {describe_errno(err.errno)}")
            return False
        errors.append(f"{self.name} still present after removal")
        return False

    def remove(self) -> str | None:
        """Remove everything; None, or what could not be removed."""
        os.close(self.fd)
        errors: list[str] = []
        # One EIO/EACCES from a flaky network or FUSE filesystem (on the
        # open, the listing, an unlink or the rmdir) must not leave the
        # directory behind: the walk is idempotent, so a later pass removes
        # what the failed step left. Only what fails on every pass is a
        # leftover, named with the last pass's errors.
        for _ in range(_REMOVE_PASSES):
            errors = []
            _remove_tree(self.parent_fd, self.name, errors)
            if not errors and self._gone(errors):
                return None
        return f"{self.path} could not be fully removed: {'; '.join(errors[:3])}"


def _owner_gone(name: str) -> bool:
    m = _OWNED.match(name)
    if m is None:
        return False  # not ours, or made before names carried their owner
    # Another boot (or host) reads as gone: the flock decides.
    return owner_gone(int(m.group(1)), int(m.group(2)), m.group(3))


def reap_dead(parent_fd: int) -> list[str]:
    """Remove the private directories under ``parent_fd`` whose probe was
    killed (see the module docstring); the names removed. Only our own
    user's real directories are touched; every failure keeps the entry."""
    try:
        names = [n for n in os.listdir(parent_fd) if n.startswith(PRIVATE_PREFIX)]
    except OSError:
        return []
    reaped: list[str] = []
    for name in names:
        if not _owner_gone(name):
            continue
        try:
            st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
                continue
            fd = open_dir_nofollow(name, parent_fd)
        except OSError:
            continue
        try:
            # Granted only if no live probe holds its shared lock.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        try:
            if not remove_tree(parent_fd, name):
                reaped.append(name)
        finally:
            os.close(fd)
    return reaped


def create_private(fd: int, path: str) -> tuple[PrivateDir | None, tuple[str, int] | None]:
    reap_dead(fd)
    try:
        return PrivateDir(fd, path), None
    except OSError as err:
        code = err.errno or errno.EIO
        if code == errno.EROFS:
            return None, (READ_ONLY_REASON, code)
        return None, (f"cannot create a probe directory in {path}: {describe_errno(code)}", code)
