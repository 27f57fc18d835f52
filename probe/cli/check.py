"""`cowprobe check PATH --require reflink,xattr,...`: a CI gate.

Probes only the required capabilities, prints one line per capability that
is missing or could not be established (with its errno and reason), and
exits with:

  0  every required capability is present
  1  at least one is missing (unsupported, or caught lying)
  3  none is missing, but at least one could not be established
     (read-only mount, a sandbox's EPERM, EIO) -- neither pass nor fail
  2  bad usage: unknown capability name, PATH missing or not a directory

Names: see `cowprobe check --list`.
"""

from __future__ import annotations

import argparse
import sys

from probe._helpwidth import RawDescriptionFormatter
from probe.capabilities import (
    ProbePathError,
    Status,
    capability_specs,
    probe_capabilities,
    resolve_names,
)

from . import EXIT_COULD_NOT_TELL, EXIT_FAILED, EXIT_OK, EXIT_USAGE, positive_seconds

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "check",
        help="exit 0 if PATH's filesystem has every --require'd capability (CI gate)",
        description=__doc__,
        formatter_class=RawDescriptionFormatter,
    )
    p.add_argument("path", nargs="?", metavar="PATH")
    p.add_argument("--require", action="append", default=[], metavar="CAPS",
                   help="comma-separated capability names (repeatable)")
    p.add_argument("--list", action="store_true", help="list the capability names and exit")
    p.add_argument("--timeout", type=positive_seconds, metavar="SECONDS",
                   help="once this has passed, the capabilities not yet probed could not "
                   "be established (exit 3), even mid-call on a stalled filesystem")
    p.set_defaults(func=run)


def _err(message: str) -> None:
    print(f"cowprobe check: {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    if args.list:
        from ._render import print_table

        print_table(None, ["name", "what", "aliases"],
                    [[s.name, s.title, ", ".join(s.aliases)] for s in capability_specs()],
                    colour_cells=False)
        return EXIT_OK
    if args.path is None or not args.require:
        _err("usage: cowprobe check PATH --require CAP[,CAP...]  (names: cowprobe check --list)")
        return EXIT_USAGE
    try:
        wanted = resolve_names(x for arg in args.require for x in arg.split(","))
    except ValueError as err:
        _err(str(err))
        return EXIT_USAGE
    if not wanted:
        _err("--require names no capability")
        return EXIT_USAGE
    try:
        report = probe_capabilities(args.path, only=wanted, timeout=args.timeout,
                                    isolate=args.timeout is not None)
    except ProbePathError as err:
        _err(str(err))
        return EXIT_USAGE
    fstype = report.identity.fstype if report.identity else "?"
    missing = [c for c in report.capabilities if c.status is Status.UNSUPPORTED]
    unknown = [c for c in report.capabilities if c.status is Status.COULD_NOT_TELL]
    for cap in missing:
        print(f"missing: {cap.name} ({cap.errno_name or 'no errno: found by checking'}): "
              f"{cap.reason}")
    for cap in unknown:
        print(f"could not tell: {cap.name} ({cap.errno_name or 'no errno'}): {cap.reason}")
    if report.leftover:
        _err(f"warning: {report.leftover}")
    if missing:
        print(f"{args.path} ({fstype}): {len(missing)} of {len(wanted)} required "
              "capabilities missing")
        return EXIT_FAILED
    if unknown:
        print(f"{args.path} ({fstype}): {len(unknown)} of {len(wanted)} required "
              "capabilities could not be established")
        return EXIT_COULD_NOT_TELL
    print(f"{args.path} ({fstype}): all required capabilities present: {', '.join(wanted)}")
    return EXIT_OK
