"""fakefs: a FUSE filesystem that passes through to a backing directory and,
on command, fails chosen operations with chosen errnos, stalls them, or
makes a file vanish between two operations.

``import fakefs`` needs only the standard library; the per-mount daemon
(``python -m fakefs._daemon``) needs pyfuse3 and trio.
"""

from ._client import ControlError, FakeFS, connect, mount
from ._mounts import MountError
from ._rules import OPS, FaultRule, RuleError, parse_rule, refusal
from ._trace import to_jsonl

__all__ = [
    "OPS",
    "ControlError",
    "FakeFS",
    "FaultRule",
    "MountError",
    "RuleError",
    "connect",
    "mount",
    "parse_rule",
    "refusal",
    "to_jsonl",
]
