"""Does this directory's filesystem clone? Asked of the kernel, not a table."""

from __future__ import annotations

import os

from ._outcome import ReflinkOutcome, ReflinkResult
from ._paths import PathArg, as_path
from ._reflink import reflink_at

__all__ = ["filesystem_supports_reflink", "probe_reflink"]

# Large enough to be a real extent everywhere: btrfs stores files below
# max_inline (2 KiB by default) inside the metadata tree, where a clone is a
# different code path from the one real files take.
_PROBE_BYTES = b"cowprobe reflink probe\n" * 512


def probe_reflink(directory: PathArg) -> ReflinkResult:
    """Try one raw clone between two fresh files in ``directory``.

    The raw clone, never clone-or-copy: a probe that falls back to a copy and
    then says yes is a known bug elsewhere. Names are unique, so two probes
    running in one directory at once both answer right; both files are
    removed whatever happens, KeyboardInterrupt included. Errors creating the
    probe files (read-only, full, no permission) raise OSError.
    """
    path = as_path(directory, "directory")
    dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    token = os.urandom(8).hex()
    src = f".cowprobe-probe-{token}.src"
    dst = f".cowprobe-probe-{token}.dst"
    failed = True
    try:
        fd = os.open(src, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
        try:
            os.write(fd, _PROBE_BYTES)
        finally:
            os.close(fd)
        # The source must be named by a path for the seam; /proc/self/fd would
        # tie the probe to Linux, so join the directory path instead.
        result = reflink_at(os.path.join(path, src), dst, dir_fd)
        failed = False
        return result
    finally:
        problem = _remove(dir_fd, (dst, src))
        os.close(dir_fd)
        # A probe file we could not remove is an error of its own -- unless
        # the probe already failed: then this is the same cause seen again
        # (a read-only mount refuses unlink with EROFS before it even looks
        # the name up) and the first error is the one to report.
        if problem is not None and not failed:
            raise problem


def _remove(dir_fd: int, names: tuple[str, ...]) -> OSError | None:
    """Unlink every name (all of them, whatever fails); the first failure."""
    first: OSError | None = None
    for name in names:
        try:
            os.unlink(name, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        except OSError as err:
            first = first or err
    return first


def filesystem_supports_reflink(directory: PathArg) -> bool:
    """True if a clone inside ``directory`` really succeeds right now.

    False for "cannot" and for "could not tell" (read-only, full, missing);
    use ``probe_reflink`` or the capability report to tell those apart.
    """
    try:
        return probe_reflink(directory).outcome is ReflinkOutcome.CLONED
    except OSError:
        return False
