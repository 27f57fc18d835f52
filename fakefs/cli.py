"""The ``fakefs`` command: mount, control, unmount, and run a command
against a mount. Bad input: one line on stderr, exit status 2, nothing
mounted."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import NoReturn

from ._client import ControlError, FakeFS, connect, mount, start
from ._mounts import MountError, find_mount, unmount
from ._rules import RuleError, parse_rule
from ._trace import to_jsonl

__all__ = ["main"]

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block: scripts grep for it.
        self.exit(EXIT_BAD_INPUT, f"fakefs: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="fakefs", description="FUSE passthrough that injects faults on command")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("backing", help="directory the mount passes through to")
        sp.add_argument("mountpoint", help="empty directory to mount on")
        sp.add_argument("--fault", action="append", default=[], metavar="RULE",
                        help="OPS:GLOB:ACTION[:TRIGGER]... (repeatable)")
        sp.add_argument("--cache-timeout", type=float, default=60.0,
                        help="kernel cache timeout for paths no rule targets (s)")
        sp.add_argument("--trace-limit", type=int, default=10_000)

    m = sub.add_parser("mount", help="mount (foreground unless --background)")
    common(m)
    m.add_argument("--background", action="store_true",
                   help="return once mounted; the daemon keeps running")

    u = sub.add_parser("unmount", help="unmount a fakefs mount")
    u.add_argument("mountpoint")

    f = sub.add_parser("fault", help="add/remove/clear/list rules of a running mount")
    fsub = f.add_subparsers(dest="action", required=True, parser_class=_Parser)
    fa = fsub.add_parser("add")
    fa.add_argument("mountpoint")
    fa.add_argument("rules", nargs="+", metavar="RULE")
    fr = fsub.add_parser("remove")
    fr.add_argument("mountpoint")
    fr.add_argument("ids", nargs="+", type=int, metavar="ID")
    for name in ("clear", "list"):
        fsub.add_parser(name).add_argument("mountpoint")

    t = sub.add_parser("trace", help="print the operation trace as JSON lines")
    t.add_argument("mountpoint")
    t.add_argument("--clear", action="store_true", help="empty the trace after printing it")

    c = sub.add_parser("counters", help="print the counters as JSON")
    c.add_argument("mountpoint")

    r = sub.add_parser("run", help="mount, run CMD against it, print counters, unmount",
                       usage="fakefs run BACKING MOUNTPOINT [--fault RULE]... -- CMD [ARGS]")
    common(r)
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
    args = _parser().parse_args(argv)
    args.cmd = command
    try:
        return _dispatch(args)
    except (RuleError, MountError) as err:
        return _die(str(err))
    except ControlError as err:
        return _die(str(err), 1)


def _dispatch(args: argparse.Namespace) -> int:
    cmd = args.command
    if cmd == "mount":
        for rule in args.fault:
            parse_rule(rule)
        if args.background:
            fs = start(args.backing, args.mountpoint, args.fault,
                       cache_timeout=args.cache_timeout, trace_limit=args.trace_limit,
                       background=True)
            print(json.dumps({"mountpoint": str(fs.mountpoint), "backing": str(fs.backing),
                              "pid": fs.pid, "control": fs.control}))
            return 0
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
        return 0
    if cmd == "run":
        return _run(args)
    fs = connect(args.mountpoint)
    try:
        return _control(fs, args)
    finally:
        fs.close()


def _control(fs: FakeFS, args: argparse.Namespace) -> int:
    if args.command == "fault":
        if args.action == "add":
            rules = [parse_rule(r) for r in args.rules]  # all valid, or none armed
            for rule in rules:
                print(json.dumps({"id": fs.add_fault(rule), "rule": rule.text}))
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


def _run(args: argparse.Namespace) -> int:
    command = list(args.cmd)
    if not command:
        raise MountError("run needs a command after --")
    for rule in args.fault:
        parse_rule(rule)
    with mount(args.backing, args.mountpoint, args.fault, cache_timeout=args.cache_timeout,
               trace_limit=args.trace_limit) as fs:
        env = dict(os.environ, FAKEFS_MOUNTPOINT=str(fs.mountpoint))
        try:
            status = subprocess.run(command, env=env, check=False).returncode
        except OSError as err:
            print(f"fakefs: error: cannot run {command[0]!r}: {err.strerror}", file=sys.stderr)
            status = 127
        print(json.dumps(fs.counters(), sort_keys=True), file=sys.stderr)
    return status if status >= 0 else 128 - status


if __name__ == "__main__":
    sys.exit(main())
