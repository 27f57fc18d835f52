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

from ._client import FakeFS, connect, mount
from ._errors import ControlError, DaemonError, FakeFSError, MountError, SyscallLayerError
from ._prereq import missing_prerequisites, syscall_missing
from ._rules import OPS, SYSCALL_OPS, FaultRule, RuleError, parse_rule, refusal
from ._syscall import SyscallFaults, syscall_faults
from ._syscall._profiles import PROFILES, Profile
from ._trace import to_jsonl

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
