"""`cowprobe`: the command line. Each subcommand lives in its own module
``probe.cli.<name>`` exposing ``register(subparsers)``; the module sets
``func`` on its parser, which returns the exit code.

Exit codes shared by every subcommand:
  0  success (the operation happened / every check passed)
  1  the operation failed, or a check found a deviation
  2  bad usage or bad input (nothing was changed)
  3  could not tell (a capability could not be established), where relevant
  128+n  ended by signal n: 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP (cleaned up)
  141  standard output was a closed pipe
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["EXIT_COULD_NOT_TELL", "EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "main", "octal_mode"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_COULD_NOT_TELL = 3

_SUBCOMMANDS = ("clone", "report", "check", "materialize", "conformance", "lab")


def octal_mode(text: str) -> int:
    """argparse ``type=`` for a ``--mode``: permission bits in octal, or a
    usage error naming the bad value (never a mode nobody asked for)."""
    try:
        value = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an octal mode: {text!r}") from None
    if not 0 <= value <= 0o7777:
        raise argparse.ArgumentTypeError(f"mode out of range: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cowprobe",
        description="Copy-on-write cloning, filesystem support reports and conformance checks.",
    )
    from probe import __version__

    parser.add_argument("--version", action="version", version=f"cowprobe {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _SUBCOMMANDS:
        importlib.import_module(f"probe.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # SIGTERM/SIGHUP clean up like Ctrl-C; a closed or full stdout is one
    # line and an exit code, never a traceback.
    from ._signals import run_guarded

    code: int = run_guarded(lambda: args.func(args))
    return code


if __name__ == "__main__":
    sys.exit(main())
