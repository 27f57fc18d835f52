"""The probe's private directory: ``PATH/.cowprobe-probe-<random>.d``,
created exclusively with mode 0700, one subdirectory per probe, reached
only through descriptors opened with O_NOFOLLOW, and removed by a walk that
never follows a symlink -- so neither a probe nor its cleanup can be led out
of it by a link planted under PATH."""

from __future__ import annotations

import contextlib
import errno
import os

from .._fd import open_dir_nofollow, remove_tree
from ._context import ProbeContext, describe_errno

__all__ = ["PRIVATE_PREFIX", "READ_ONLY_REASON", "PrivateDir", "create_private"]

PRIVATE_PREFIX = ".cowprobe-probe-"

#: Removal walks of the private directory before what remains is reported
#: as a leftover; see ``PrivateDir.remove``.
_REMOVE_PASSES = 3
READ_ONLY_REASON = "read-only filesystem: nothing can be created here to try anything"


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
        self.name = f"{PRIVATE_PREFIX}{self.token}.d"
        self.path = os.path.join(parent_path, self.name)
        os.mkdir(self.name, 0o700, dir_fd=parent_fd)
        try:
            self.fd = open_dir_nofollow(self.name, parent_fd)
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


def create_private(fd: int, path: str) -> tuple[PrivateDir | None, tuple[str, int] | None]:
    try:
        return PrivateDir(fd, path), None
    except OSError as err:
        code = err.errno or errno.EIO
        if code == errno.EROFS:
            return None, (READ_ONLY_REASON, code)
        return None, (f"cannot create a probe directory in {path}: {describe_errno(code)}", code)
