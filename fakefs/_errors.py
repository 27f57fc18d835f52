"""fakefs's exception types, in one place.

Two families, because the CLI maps them to different exit statuses:

* bad input (a rule, a path, a mountpoint the user named) -- ``RuleError``,
  ``MountError``: ValueError subclasses, exit 2, nothing was started;
* the machine or a daemon failed (start-up, control channel, seccomp not
  available) -- ``DaemonError``, ``ControlError``, ``SyscallLayerError``:
  RuntimeError subclasses, exit 1. A daemon that could not start is not
  "bad input", and scripts retrying on exit 2 would loop forever.
"""

from __future__ import annotations

__all__ = [
    "ControlError",
    "DaemonError",
    "FakeFSError",
    "MountError",
    "SyscallLayerError",
]


class FakeFSError(Exception):
    """Base of every error fakefs raises on purpose; the message is one line."""


class MountError(FakeFSError, ValueError):
    """Bad input for a mount: a backing directory or mountpoint that cannot
    be used (missing, not empty, inside one another, already mounted)."""


class DaemonError(FakeFSError, RuntimeError):
    """The daemon could not start, or died before it was ready."""


class ControlError(FakeFSError, RuntimeError):
    """The daemon refused a command, or the control channel broke."""


class SyscallLayerError(FakeFSError, RuntimeError):
    """The syscall layer cannot run here (no seccomp user notification,
    unsupported architecture) or was misused (nested blocks)."""
