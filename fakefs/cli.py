"""The ``fakefs`` command: mount, control, unmount, and run a command
against a mount and/or under syscall faults. Bad input: one line on stderr,
exit status 2, nothing mounted; a daemon or the machine failing: exit 1;
never a traceback."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from typing import TYPE_CHECKING, NoReturn

from probe._exit import exit_now
from probe._helpwidth import Parser, RawDescriptionFormatter

from ._errors import ControlError, DaemonError, MountError, SyscallLayerError
from ._rules import RuleError
from ._syscall._profiles import PROFILES

if TYPE_CHECKING:
    from typing import TypeAlias

    from ._client import FakeFS

    _Sub: TypeAlias = "argparse._SubParsersAction[_Parser]"

# The FUSE client and the mount table are imported by the subcommands that
# use them: `fakefs run -- CMD` without a mount needs neither, and its
# start-up is part of what every run under syscall faults costs.

__all__ = ["entry", "main"]

EXIT_BAD_INPUT = 2


class _Parser(Parser):
    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block: scripts grep for it.
        self.exit(EXIT_BAD_INPUT, f"fakefs: error: {message}\n")


#: The rule grammar, for every --help that takes a RULE (strings only: no
#: cost to a run's start-up).
_GRAMMAR = """\
RULE is OPS:GLOB:ACTION[:TRIGGER]...
  OPS      FUSE operations (lookup, getattr, open, read, write, create,
           rename, ..., or *) or system calls (FICLONE, FICLONERANGE,
           FIDEDUPERANGE, copy_file_range, fallocate, fsync, fdatasync,
           ftruncate, rename, renameat, renameat2, link, linkat, open, creat,
           openat, openat2), comma-separated; sys.fsync means the system
           call where the name is both
  GLOB     a path relative to the mount root (syscalls: to --root), * ? [..]
  ACTION   an errno name (EIO, EXDEV, ENOSPC, ...), delay=50ms, short=N
           (FUSE reads/writes), vanish / vanish-tree (FUSE: removes the
           entry from the backing directory, as the caller)
  TRIGGER  times=N, nth=N, p=0.1 with seed=N, pid=N, src=GLOB (clone and
           copy calls: the source)
examples:
  fakefs run --fault 'FICLONE:b*:EXDEV' -- cp --reflink=always a b
  fakefs run BACKING MNT --fault 'read:blobs/*:EIO:times=1' -- cat MNT/blobs/x
  fakefs fault add MNT 'open:*.lock:EACCES:p=0.5:seed=7'"""


def _common(sp: argparse.ArgumentParser, optional: bool = False) -> None:
    nargs = "?" if optional else None
    sp.add_argument("backing", nargs=nargs, help="directory the mount passes through to")
    sp.add_argument("mountpoint", nargs=nargs,
                    help="empty directory to mount on, not inside BACKING (nor BACKING "
                    "inside it)")
    sp.add_argument("--fault", action="append", default=[], metavar="RULE",
                    help="OPS:GLOB:ACTION[:TRIGGER]... (repeatable)")
    sp.add_argument("--cache-timeout", type=_seconds, default=60.0,
                    help="kernel cache timeout for paths no rule targets (s)")
    sp.add_argument("--trace-limit", type=_count, default=10_000,
                    help="trace records kept, newest last (0: none)")


def _count(text: str) -> int:
    from ._mounts import check_trace_limit

    try:
        return check_trace_limit(int(text))
    except (ValueError, MountError) as err:
        raise argparse.ArgumentTypeError(_why(err, text)) from None


def _seconds(text: str) -> float:
    from ._mounts import check_cache_timeout

    try:
        return check_cache_timeout(float(text))
    except (ValueError, MountError) as err:
        raise argparse.ArgumentTypeError(_why(err, text)) from None


def _why(err: Exception, text: str) -> str:
    return str(err) if isinstance(err, MountError) else f"not a number: {text!r}"


def _mount(sub: _Sub) -> None:
    m = sub.add_parser("mount", help="mount (foreground unless --background)",
                       epilog=_GRAMMAR, formatter_class=RawDescriptionFormatter)
    _common(m)
    m.add_argument("--background", action="store_true",
                   help="return once mounted; the daemon keeps running")


def _unmount(sub: _Sub) -> None:
    sub.add_parser("unmount", help="unmount a fakefs mount").add_argument("mountpoint")


def _fault(sub: _Sub) -> None:
    f = sub.add_parser("fault", help="add/remove/clear/list rules of a running mount")
    fsub = f.add_subparsers(dest="action", required=True, parser_class=_Parser)
    fa = fsub.add_parser("add", help="arm rules; prints each rule's id",
                         epilog=_GRAMMAR, formatter_class=RawDescriptionFormatter)
    fa.add_argument("mountpoint")
    fa.add_argument("rules", nargs="+", metavar="RULE")
    fr = fsub.add_parser("remove", help="disarm rules by id (fakefs fault list shows them)")
    fr.add_argument("mountpoint")
    fr.add_argument("ids", nargs="+", type=int, metavar="ID")
    for name, what in (("clear", "disarm every rule"),
                       ("list", "the armed rules with their hits, as JSON lines")):
        fsub.add_parser(name, help=what).add_argument("mountpoint")


def _trace(sub: _Sub) -> None:
    t = sub.add_parser("trace", help="print the operation trace as JSON lines")
    t.add_argument("mountpoint")
    t.add_argument("--clear", action="store_true", help="empty the trace after printing it")


def _counters(sub: _Sub) -> None:
    sub.add_parser("counters", help="print the counters as JSON").add_argument("mountpoint")


def _run(sub: _Sub) -> None:
    r = sub.add_parser(
        "run", help="run CMD under FUSE and/or syscall faults, print counters",
        usage="fakefs run [BACKING MOUNTPOINT] [--root DIR] [--profile NAME] "
              "[--fault RULE]... [--trace FILE] -- CMD [ARGS]",
        description="Without BACKING MOUNTPOINT nothing is mounted and only syscall rules "
        "(FICLONE, copy_file_range, fsync, rename, openat, ...) apply. CMD's exit status passes "
        "through; SIGINT/SIGTERM/SIGHUP go to CMD, then fakefs exits 128+signal. If the FUSE "
        "daemon dies during the run, fakefs exits 1 and names CMD's status in its message "
        "(the faults stopped, so the run is no pass).",
        epilog=_GRAMMAR, formatter_class=RawDescriptionFormatter)
    _common(r, optional=True)
    r.add_argument("--root", metavar="DIR",
                   help="directory syscall rules' globs are relative to (default: the "
                   "mountpoint when mounting, else the current directory)")
    r.add_argument("--profile", choices=sorted(PROFILES), metavar="NAME",
                   help=f"a named syscall rule set: {', '.join(sorted(PROFILES))}")
    r.add_argument("--trace", metavar="FILE", help="keep the trace as JSON lines in FILE")


_COMMANDS = {"mount": _mount, "unmount": _unmount, "fault": _fault, "trace": _trace,
             "counters": _counters, "run": _run}


def _parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; for a known ``command``, with that subcommand alone.

    Every ArgumentParser argparse makes asks gettext for its strings, and
    gettext looks for catalogues on disk at every ask: the whole tree cost
    ~10 ms of each ``fakefs run``, which every run under syscall faults
    pays. Nothing else is needed to parse one subcommand's line (``fakefs
    --help`` and a bad command name still get them all)."""
    p = _Parser(prog="fakefs", description="FUSE passthrough that injects faults on command, "
                "and faults at system calls (FICLONE, copy_file_range, fsync, ...) on real "
                "filesystems", epilog=_GRAMMAR,
                formatter_class=RawDescriptionFormatter)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, build in _COMMANDS.items():
        if command not in _COMMANDS or name == command:
            build(sub)
    return p


def _die(message: str, code: int = EXIT_BAD_INPUT) -> int:
    print(f"fakefs: error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command: list[str] = []
    if argv[:1] == ["run"] and "--" in argv:
        # Everything after "--" is the command, options and all: argparse
        # would otherwise claim a "--fault" that belongs to it.
        cut = argv.index("--")
        argv, command = argv[:cut], argv[cut + 1:]
    args = _parser(argv[0] if argv else None).parse_args(argv)
    args.cmd = command
    try:
        return _dispatch(args)
    except (RuleError, MountError) as err:
        return _die(str(err))
    except (ControlError, DaemonError, SyscallLayerError) as err:
        return _die(str(err), 1)
    except _Stopped as stop:
        return 128 + stop.signum
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except BrokenPipeError:
        # Our stdout's reader went away (`| head`, `| true`): what a shell
        # reports for a command killed by SIGPIPE, and no traceback. A
        # background mount whose line could not be printed was undone.
        return 128 + signal.SIGPIPE


class _Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived while a background mount was starting."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _stop(signum: int, _frame: object) -> None:
    # Once: a second signal must not abort the abort half way.
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    raise _Stopped(signum)


def _mount_background(args: argparse.Namespace) -> int:
    from ._client import start

    # The daemon runs in a session of its own and mounts whether or not we
    # are still there. Killed by SIGTERM/SIGHUP's default action while it
    # starts, we would leave a mount nobody was told about (no pid printed,
    # an error exit); as an exception the signal reaches start()'s abort, as
    # Ctrl-C does. Until its line is printed the mount is still ours to undo.
    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    fs = None
    try:
        fs = start(args.backing, args.mountpoint, args.fault,
                   cache_timeout=args.cache_timeout, trace_limit=args.trace_limit,
                   background=True)
        print(json.dumps({"mountpoint": str(fs.mountpoint), "backing": str(fs.backing),
                          "pid": fs.pid, "control": fs.control}), flush=True)
    except BaseException:
        if fs is not None:
            fs.close()
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _dispatch(args: argparse.Namespace) -> int:
    cmd = args.command
    if cmd == "run":
        from ._runcmd import run_command

        return run_command(args)
    from ._client import connect, fuse_rule_text
    from ._mounts import (
        check_backing,
        check_mountpoint,
        check_not_nested,
        clear_dead_mount,
        find_mount,
        unmount,
    )

    if cmd == "mount":
        for rule in args.fault:
            fuse_rule_text(rule)
        if args.background:
            return _mount_background(args)
        # The daemon checks too, but only this side can say it before a
        # process exists: a nested mount would deadlock it.
        from pathlib import Path

        check_not_nested(check_backing(args.backing), Path(os.path.abspath(args.mountpoint)))
        check_mountpoint(args.mountpoint)
        from ._daemon import main as daemon_main

        argv = [args.backing, args.mountpoint, "--cache-timeout", str(args.cache_timeout),
                "--trace-limit", str(args.trace_limit)]
        for rule in args.fault:
            argv += ["--fault", rule]
        return daemon_main(argv)
    if cmd == "unmount":
        info = find_mount(args.mountpoint)
        if info is None or info.control is None:
            raise MountError(f"{os.path.abspath(args.mountpoint)!r} is not a fakefs mount")
        if not unmount(args.mountpoint, info.mount_id):
            return _die(f"could not unmount {os.path.abspath(args.mountpoint)!r}", 1)
        # A SIGKILLed daemon left its control directory too.
        clear_dead_mount(info)
        return 0
    fs = connect(args.mountpoint)
    try:
        return _control(fs, args)
    finally:
        fs.close()


def _control(fs: FakeFS, args: argparse.Namespace) -> int:
    from ._client import fuse_rule_text
    from ._trace import to_jsonl

    if args.command == "fault":
        if args.action == "add":
            rules = [fuse_rule_text(r) for r in args.rules]  # all valid, or none armed
            for rule in rules:
                print(json.dumps({"id": fs.add_fault(rule), "rule": rule}))
        elif args.action == "remove":
            for rule_id in args.ids:
                fs.remove_fault(rule_id)
        elif args.action == "clear":
            fs.clear_faults()
        else:
            for entry in fs.faults():
                print(json.dumps(entry))
        return 0
    if args.command == "trace":
        sys.stdout.write(to_jsonl(fs.trace()))
        if args.clear:
            fs.clear_trace()
        return 0
    print(json.dumps(fs.counters(), sort_keys=True))
    return 0


def entry() -> NoReturn:
    """The ``fakefs`` console script."""
    exit_now(main())


if __name__ == "__main__":
    # sys.exit, not entry(): `python -m cProfile -m ...` must still get to
    # print its profile after main() returns.
    sys.exit(main())
