"""What a single probe works with: its own directory, and a recorder for the
evidence it gathers.

Every probe runs in a fresh subdirectory of the private probe directory and
reaches its files only relative to that directory's descriptor, with
O_NOFOLLOW and O_EXCL: a symlink planted anywhere under PATH can never
redirect a probe's write outside it.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from .._fd import names_now
from .._outcome import errno_name
from ._model import Capability, Status

__all__ = [
    "NOT_SUPPORTED_ERRNOS",
    "ProbeContext",
    "ProbeFn",
    "ProbeSpec",
    "Trial",
    "describe_errno",
    "pread_all",
]

T = TypeVar("T")

_CREATE = os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_OPEN_EXTRA = os.O_NOFOLLOW | os.O_CLOEXEC

#: Errnos with which a kernel says "this filesystem has no such operation".
#: ENOTTY is an ioctl the filesystem does not implement at all; EINVAL is a
#: flag or mode the call does not know. EPERM and EACCES are deliberately
#: absent: a sandbox (seccomp, an LSM) answers with them, and that says
#: nothing about the filesystem -- "could not tell".
NOT_SUPPORTED_ERRNOS = frozenset(
    {errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOTTY, errno.ENOSYS, errno.EINVAL, errno.EXDEV}
)


def describe_errno(code: int | None) -> str:
    if code is None:
        return "?"
    return f"{errno_name(code)} ({os.strerror(code)})"


class ProbeContext:
    """A directory of one's own (``dir_fd``) plus tracked descriptors."""

    def __init__(self, dir_fd: int, path: str, token: str) -> None:
        self.dir_fd = dir_fd
        #: The directory's path, for display and for calls that need a path.
        self.path = path
        self.token = token
        self._fds: list[int] = []
        self._n = 0

    def name(self, stem: str) -> str:
        self._n += 1
        return f"{stem}-{self._n}"

    def path_of(self, name: str) -> str:
        """A path naming ``name`` *through our directory descriptor*.

        /proc/self/fd/N is the directory we opened, whatever happens to the
        path above it afterwards; the joined path is the fallback where there
        is no procfs.
        """
        proc = f"/proc/self/fd/{self.dir_fd}"
        if os.path.isdir(proc):
            return f"{proc}/{name}"
        return os.path.join(self.path, name)

    def track(self, fd: int) -> int:
        self._fds.append(fd)
        return fd

    def create(self, name: str, data: bytes = b"", *, mode: int = 0o600,
               flags: int = os.O_RDWR) -> int:
        """A new file (exclusive, no-follow) holding ``data``; its fd, tracked."""
        fd = self.track(os.open(name, flags | _CREATE, mode, dir_fd=self.dir_fd))
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        return fd

    def open(self, name: str, flags: int = os.O_RDONLY) -> int:
        return self.track(os.open(name, flags | _OPEN_EXTRA, dir_fd=self.dir_fd))

    def listdir(self) -> list[str]:
        """The directory's entries, sorted; the probe's own files included
        (``names_now``: ``dir_fd`` was opened before they existed)."""
        return sorted(names_now(self.dir_fd))

    def close(self, fd: int) -> None:
        if fd in self._fds:
            self._fds.remove(fd)
            os.close(fd)

    def close_all(self) -> None:
        while self._fds:
            fd = self._fds.pop()
            with contextlib.suppress(OSError):
                os.close(fd)


def pread_all(fd: int, length: int, offset: int = 0) -> bytes:
    """Read exactly ``length`` bytes unless EOF comes first (short reads from
    FUSE or a signal are retried, so a mismatch is never a read artefact)."""
    parts: list[bytes] = []
    got = 0
    while got < length:
        chunk = os.pread(fd, length - got, offset + got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


class Trial:
    """The evidence recorder for one capability."""

    def __init__(self) -> None:
        self.evidence: list[str] = []

    def note(self, line: str) -> None:
        self.evidence.append(line)

    def call(self, description: str, fn: Callable[..., T], *args: object,
             show: Callable[[T], str] | None = None, **kwargs: object) -> T:
        """Run ``fn``, recording "description -> result" or "-> ERRNO"."""
        try:
            result = fn(*args, **kwargs)
        except OSError as err:
            self.evidence.append(f"{description} -> {describe_errno(err.errno)}")
            raise
        shown = show(result) if show is not None else ("ok" if result is None else repr(result))
        self.evidence.append(f"{description} -> {shown}")
        return result

    def _make(self, status: Status, *, errno_: int | None, reason: str | None,
              value: int | str | None) -> Capability:
        # name/title/group/seconds are filled in by the runner.
        return Capability(name="", title="", group="", status=status, errno=errno_,
                          reason=reason, evidence=tuple(self.evidence), value=value)

    def supported(self, reason: str | None = None, value: int | str | None = None) -> Capability:
        return self._make(Status.SUPPORTED, errno_=None, reason=reason, value=value)

    def unsupported(self, reason: str, errno_: int | None = None,
                    value: int | str | None = None) -> Capability:
        return self._make(Status.UNSUPPORTED, errno_=errno_, reason=reason, value=value)

    def could_not_tell(self, reason: str, errno_: int | None = None) -> Capability:
        return self._make(Status.COULD_NOT_TELL, errno_=errno_, reason=reason, value=None)

    def failed(self, err: OSError, what: str,
               unsupported: Iterable[int] = NOT_SUPPORTED_ERRNOS) -> Capability:
        """Read ``err`` from ``what``: "no such operation" errnos mean
        unsupported; anything else (EIO, EPERM, ENOSPC) means we could not
        tell, because the filesystem never got to answer the question."""
        code = err.errno
        if code in frozenset(unsupported):
            return self.unsupported(f"{what} failed with {describe_errno(code)}", code)
        return self.could_not_tell(f"{what} failed with {describe_errno(code)}", code)


ProbeFn = Callable[[ProbeContext, Trial], Capability]


@dataclass(frozen=True)
class ProbeSpec:
    name: str
    title: str
    group: str
    fn: ProbeFn
    #: Aliases accepted by ``cowprobe check --require``.
    aliases: tuple[str, ...] = ()
