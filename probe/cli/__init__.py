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

from probe._helpwidth import Parser
from probe._records import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import NoReturn

__all__ = ["EXIT_COULD_NOT_TELL", "EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "entry", "main",
           "octal_mode", "positive_seconds"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_COULD_NOT_TELL = 3

#: subcommand -> its one-line help. Only the chosen subcommand's module is
#: imported (``cowprobe --help`` imports none: the lab, conformance and rich
#: cost more than the rest of start-up together); this help must equal the
#: one the module registers (tests/test_startup.py checks it).
_SUBCOMMANDS = {
    "clone": "clone one file (reflink where possible, copy otherwise)",
    "report": "measure what each directory's filesystem can do (reflinks, links, xattrs, ...)",
    "check": "exit 0 if PATH's filesystem has every --require'd capability (CI gate)",
    "materialize": "mirror a directory tree into one or more worktrees (reflink or copy)",
    "conformance": "run the reflink scenario matrix on the lab or on two directories",
    "lab": "build / clean the real-filesystem lab, or print its reflink outcome matrix",
}


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


#: the longest ``--timeout``: a week. Far beyond any probe, and far below
#: what the waits it reaches can take (threading.TIMEOUT_MAX, ~292 years,
#: overflowed with a traceback; poll()'s milliseconds end at ~24 days).
_MAX_SECONDS = 7 * 24 * 3600


def positive_seconds(text: str) -> float:
    """argparse ``type=`` for a ``--timeout``: a finite number of seconds
    above zero ("0" would mean "probe nothing", "inf" no limit at all: both
    are more likely a slip than a wish), at most ``_MAX_SECONDS``."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    if value > _MAX_SECONDS:
        raise argparse.ArgumentTypeError(
            f"at most {_MAX_SECONDS} seconds (a week), got {text!r}")
    return value


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``cowprobe`` parser with ``command``'s real sub-parser (every
    subcommand's with ``command="*"``). With no command (``cowprobe
    --help``, a mistyped name) the others are listed by name and help only,
    which is all the top-level help and the "invalid choice" error show; with
    one, they are left out: each is a whole ArgumentParser, and the six
    cost ~2 ms of every run, more than cp takes to clone 200 files."""
    parser = Parser(
        prog="cowprobe",
        description="Copy-on-write cloning, filesystem support reports and conformance checks.",
    )
    from probe import __version__

    parser.add_argument("--version", action="version", version=f"cowprobe {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in _SUBCOMMANDS.items():
        if command in (name, "*"):
            importlib.import_module(f"probe.cli.{name}").register(sub)
        elif command is None:
            sub.add_parser(name, help=text)
    return parser


def _command(argv: Sequence[str]) -> str | None:
    # The top-level options (--help, --version) take no value, so the first
    # word that is not an option is the subcommand, if it is one.
    for word in argv:
        if word == "--":
            return None
        if not word.startswith("-"):
            return word if word in _SUBCOMMANDS else None
    return None


def _parse(parser: argparse.ArgumentParser, words: list[str]) -> argparse.Namespace | int:
    """The parsed arguments, or the exit code for a --help or --version
    whose output could not be written (141 a closed pipe, 1 a full disk)."""
    try:
        try:
            return parser.parse_args(words)
        except SystemExit:
            # --help and --version leave here with their text still in
            # stdout's buffer: flushed now, while a failure can still be
            # one line (at exit it would be a traceback).
            sys.stdout.flush()
            raise
    except OSError as err:
        # Imported only now: `cowprobe --help` loads no module of the CLI.
        from ._signals import OutputFailed, output_failed

        return output_failed(OutputFailed(err), "cowprobe: cannot write output")


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command(words))
    args = _parse(parser, words)
    if isinstance(args, int):
        return args
    # SIGTERM/SIGHUP clean up like Ctrl-C; a closed or full stdout is one
    # line and an exit code, never a traceback.
    from ._signals import run_guarded

    code: int = run_guarded(lambda: args.func(args))
    return code


def entry() -> NoReturn:
    """The ``cowprobe`` console script."""
    from probe._exit import exit_now

    exit_now(main())


if __name__ == "__main__":
    # sys.exit, not entry(): `python -m cProfile -m ...` must still get to
    # print its profile after main() returns.
    sys.exit(main())
