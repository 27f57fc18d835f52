"""``fakefs run [BACKING MOUNTPOINT] [--root DIR] [--profile NAME] --fault
RULE... [--trace FILE] -- CMD...``: CMD under FUSE and/or syscall faults.

Without BACKING/MOUNTPOINT nothing is mounted and only syscall rules are
accepted. CMD's exit status passes through. SIGINT, SIGTERM and SIGHUP are
forwarded to CMD; fakefs waits for it, unmounts, and exits 128+signal (a
signal before CMD started aborts the start-up the same way). Counters go
to stderr as one JSON line; ``--trace FILE`` keeps every trace record
(FUSE and syscall) as JSON lines.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from types import FrameType
from typing import IO, TYPE_CHECKING, Any

from ._errors import ControlError, DaemonError, MountError
from ._rules import FaultRule, parse_rule
from ._syscall._filter import parse_syscall_rules
from ._syscall._profiles import profile
from ._syscall._spawn import Filtered, spawn
from ._trace import to_jsonl

if TYPE_CHECKING:
    from ._client import FakeFS

__all__ = ["FORWARDED", "run_command"]

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_CANNOT_EXEC = 127


class _Interrupted(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _Forwarder:
    """Signal handlers for the life of the run: before CMD is started a
    signal aborts the start-up (unwinding unmounts); from then on it goes
    to CMD.

    "Started" begins before the fork (``spawning``): a signal raised as an
    exception between the fork and the moment ``proc`` is known would
    unwind past a child nobody kills -- CMD left running, holding the
    caller's pipes open, behind a fakefs that has exited. Until ``proc`` is
    known, a signal is only recorded, and sent on once it is."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.received: int | None = None
        self.spawning = False

    def __call__(self, signum: int, _frame: FrameType | None) -> None:
        self.received = signum
        if self.proc is None:
            if self.spawning:
                return
            raise _Interrupted(signum)
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signum)

    def started(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        if self.received is not None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(self.received)

    @contextlib.contextmanager
    def installed(self) -> Iterator[_Forwarder]:
        saved = {s: signal.signal(s, self) for s in FORWARDED}
        try:
            yield self
        finally:
            for s, handler in saved.items():
                signal.signal(s, handler)


def _rules(faults: list[str], profile_name: str | None, mounting: bool) -> list[FaultRule]:
    # Without a mount every rule is a syscall rule, so fsync/rename/link
    # need no "sys." there.
    layer = None if mounting else "syscall"
    rules = [parse_rule(r, layer=layer) for r in faults]
    if profile_name:
        rules += [parse_rule(r, layer="syscall") for r in profile(profile_name).rules]
    return rules


def run_command(args: Any) -> int:
    command = list(args.cmd)
    if not command:
        raise MountError("run needs a command after --")
    if (args.backing is None) != (args.mountpoint is None):
        raise MountError("run takes both BACKING and MOUNTPOINT, or neither")
    rules = _rules(args.fault, args.profile, args.backing is not None)
    fuse_rules = [r for r in rules if not r.syscall]
    sys_rules = parse_syscall_rules([r for r in rules if r.syscall])
    if args.root is not None and not os.path.isdir(args.root):
        raise MountError(f"--root {args.root!r} is not a directory")
    trace_file: IO[str] | None = None
    if args.trace:
        try:
            trace_file = open(args.trace, "w", encoding="utf-8")  # noqa: SIM115 - closed below
        except OSError as err:
            raise MountError(f"cannot write the trace to {args.trace!r}: {err.strerror}") from None
    forwarder = _Forwarder()
    try:
        with forwarder.installed():
            status = _run(args, command, fuse_rules, sys_rules, forwarder, trace_file)
    except _Interrupted as sig:
        return 128 + sig.signum
    finally:
        if trace_file is not None:
            trace_file.close()
    if forwarder.received is not None:
        return 128 + forwarder.received
    return status if status >= 0 else 128 - status


def _ended(status: int) -> str:
    """A Popen returncode in words."""
    if status < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-status).name}"
        return f"was killed by signal {-status}"
    return f"exited with status {status}"


def _run(args: Any, command: list[str], fuse_rules: list[FaultRule],  # noqa: PLR0917
         sys_rules: list[FaultRule], forwarder: _Forwarder,
         trace_file: IO[str] | None) -> int:
    with contextlib.ExitStack() as stack:
        fs: FakeFS | None = None
        env = dict(os.environ)
        if args.backing is not None:
            # Here, not at the top: a run without a mount never loads the
            # FUSE client.
            from ._client import mount

            fs = stack.enter_context(mount(
                args.backing, args.mountpoint, fuse_rules, cache_timeout=args.cache_timeout,
                trace_limit=args.trace_limit))
            env["FAKEFS_MOUNTPOINT"] = str(fs.mountpoint)
        root = args.root or (str(fs.mountpoint) if fs else os.getcwd())
        filtered: Filtered | None = None
        forwarder.spawning = True
        try:
            if sys_rules:
                filtered = spawn(command, sys_rules, root, env)
                stack.callback(filtered.close)
                proc = filtered.proc
            else:
                proc = subprocess.Popen(command, env=env)
        except OSError as err:
            print(f"fakefs: error: cannot run {command[0]!r}: {err.strerror}", file=sys.stderr)
            return _CANNOT_EXEC
        forwarder.started(proc)
        status = proc.wait()
        try:
            counters: dict[str, Any] = fs.counters() if fs is not None else {}
            records: list[dict[str, Any]] = fs.trace() if fs is not None and trace_file else []
        except ControlError:
            # Without this the command's own status was lost behind
            # "cannot reach fakefs daemon": say both.
            raise DaemonError(
                f"the fakefs daemon died during the run, so its counters are lost; the "
                f"command {_ended(status)}") from None
        if filtered is not None:
            counters.update(filtered.table.counters())
            records += filtered.table.records()
        print(json.dumps(counters, sort_keys=True), file=sys.stderr)
        if trace_file is not None:
            trace_file.write(to_jsonl(records))
    return status
