"""The result types of the capability probe.

Three-way answers, never two: a capability is *supported*, *unsupported*
(with the errno that said so, or the lie that was caught), or the probe
*could not tell* (a sandbox's EPERM, a read-only mount, an EIO) -- and the
last must never be read as either of the others.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .._outcome import errno_name

__all__ = [
    "Capability",
    "CapabilityReport",
    "Identity",
    "PairReport",
    "ProbePathError",
    "Status",
]


class Status(enum.Enum):
    SUPPORTED = "supported"
    UNSUPPORTED = "unsupported"
    COULD_NOT_TELL = "could-not-tell"


class ProbePathError(ValueError):
    """PATH cannot be probed at all: missing, not a directory, unreadable.

    A ValueError (bad input), not an OSError: nothing was tried on a
    filesystem, so there is no capability answer to give. The one exception
    is ``timed_out``: a check with a time limit (``validate_directory(
    timeout=)``) that the filesystem did not answer -- a hung mount, not a
    typo; ``reason`` then says so without the path, and ``leftover`` names
    a check process left stuck in the kernel, if any.
    """

    # Class defaults, set on the instance where they apply: an exception's
    # instance dict survives the pickle an isolated check sends it through.
    timed_out: bool = False
    reason: str = ""
    leftover: str | None = None


@dataclass(frozen=True)
class Capability:
    """One capability's answer, with the evidence that produced it."""

    name: str
    title: str
    group: str
    status: Status
    #: The errno behind an UNSUPPORTED or COULD_NOT_TELL, when there was one.
    errno: int | None = None
    #: Why, in words: the errno's meaning here, the lie caught, the sandbox.
    reason: str | None = None
    #: The calls made and what came back, in order ("FICLONE(dst, src) -> ok").
    evidence: tuple[str, ...] = ()
    seconds: float = 0.0
    #: A measured quantity, where the capability has one (max name length).
    value: int | str | None = None

    @property
    def errno_name(self) -> str | None:
        return None if self.errno is None else errno_name(self.errno)

    @property
    def supported(self) -> bool:
        return self.status is Status.SUPPORTED


@dataclass(frozen=True)
class Identity:
    """What the filesystem under PATH is, from statfs and the mount table."""

    fstype: str | None
    magic: int | None
    magic_name: str | None
    mount_point: str | None
    mount_options: tuple[str, ...]
    super_options: tuple[str, ...]
    source: str | None
    device: str
    #: The statvfs numbers; None when statvfs failed even on a retry (the
    #: reason is in ``unreadable``): could not tell, never a made-up 0.
    block_size: int | None
    fragment_size: int | None
    total_bytes: int | None
    free_bytes: int | None
    available_bytes: int | None
    name_max: int | None
    read_only: bool
    #: What could not be read, with the errno ("statvfs: EACCES (...)");
    #: empty when the identity is complete.
    unreadable: tuple[str, ...] = ()


class _ByName:
    """Look a capability up by name: ``report["reflink"]``, ``report.get(...)``."""

    capabilities: tuple[Capability, ...]

    def __getitem__(self, name: str) -> Capability:
        for cap in self.capabilities:
            if cap.name == name:
                return cap
        raise KeyError(name)

    def get(self, name: str) -> Capability | None:
        try:
            return self[name]
        except KeyError:
            return None


@dataclass(frozen=True)
class CapabilityReport(_ByName):
    """Everything measured about one directory."""

    path: str
    real_path: str
    #: None only for a column that could not be probed at all (a fakefs
    #: mount that could not be made); ``limitation`` then says why.
    identity: Identity | None
    capabilities: tuple[Capability, ...]
    #: Why write probes could not run (read-only, not writable), else None.
    limitation: str | None = None
    #: Set when the private probe directory could not be removed (the
    #: filesystem refused the unlink); names it so a person can.
    leftover: str | None = None
    seconds: float = 0.0
    label: str | None = None


@dataclass(frozen=True)
class PairReport(_ByName):
    """Capabilities of a (source directory, destination directory) pair:
    EXDEV is a property of the pair, not of either side."""

    source: str
    dest: str
    same_filesystem: bool
    capabilities: tuple[Capability, ...]
    limitation: str | None = None
    leftover: str | None = None
    seconds: float = 0.0
    label: str | None = None
