"""fakefs: fault injection for code that clones, copies and renames files.

Two injection points, one rule grammar (``OPS:GLOB:ACTION[:TRIGGER]...``):

* a FUSE filesystem that passes through to a backing directory and fails,
  stalls or shortens chosen FUSE operations, or makes a file vanish
  (:func:`mount`, :func:`connect`);
* a syscall layer (seccomp user notification) that fails FICLONE,
  FICLONERANGE, FIDEDUPERANGE, copy_file_range, fallocate, fsync, rename,
  link ... on *real* filesystems while unmatched calls run for real
  (:func:`syscall_faults`, ``fakefs run``).

``import fakefs`` needs only the standard library; the per-mount daemon
(``python -m fakefs._daemon``) needs pyfuse3 and trio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from probe._lazy import lazy_exports

if TYPE_CHECKING:
    from ._client import FakeFS, connect, mount
    from ._errors import ControlError, DaemonError, FakeFSError, MountError, SyscallLayerError
    from ._prereq import missing_prerequisites, syscall_missing
    from ._rules import OPS, SYSCALL_OPS, FaultRule, RuleError, parse_rule, refusal
    from ._syscall._inprocess import SyscallFaults, syscall_faults
    from ._syscall._profiles import PROFILES, Profile
    from ._trace import to_jsonl

# Loaded on first use: `fakefs run -- CMD` (no mount) starts as fast as it
# can, because every trapped-call benchmark pays this start-up once, and the
# FUSE client (subprocess, the mount table) is not needed for it.
_LAZY = {
    "OPS": "._rules",
    "PROFILES": "._syscall._profiles",
    "SYSCALL_OPS": "._rules",
    "ControlError": "._errors",
    "DaemonError": "._errors",
    "FakeFS": "._client",
    "FakeFSError": "._errors",
    "FaultRule": "._rules",
    "MountError": "._errors",
    "Profile": "._syscall._profiles",
    "RuleError": "._rules",
    "SyscallFaults": "._syscall._inprocess",
    "SyscallLayerError": "._errors",
    "connect": "._client",
    "missing_prerequisites": "._prereq",
    "mount": "._client",
    "parse_rule": "._rules",
    "refusal": "._rules",
    "syscall_faults": "._syscall._inprocess",
    "syscall_missing": "._prereq",
    "to_jsonl": "._trace",
}

__all__ = [
    "OPS",
    "PROFILES",
    "SYSCALL_OPS",
    "ControlError",
    "DaemonError",
    "FakeFS",
    "FakeFSError",
    "FaultRule",
    "MountError",
    "Profile",
    "RuleError",
    "SyscallFaults",
    "SyscallLayerError",
    "connect",
    "missing_prerequisites",
    "mount",
    "parse_rule",
    "refusal",
    "syscall_faults",
    "syscall_missing",
    "to_jsonl",
]

lazy_exports(globals(), _LAZY)
