"""argparse help sized by ``os``, not ``shutil``.

Every ``add_argument`` builds a help formatter (to check the metavar), and
argparse's formatter asks ``shutil.get_terminal_size`` for the width:
importing shutil (and with it zlib, bz2, lzma, fnmatch) is ~3 ms of every
``cowprobe`` and ``fakefs`` start-up, part of every whole command the
benchmarks time. ``os`` knows the width as well.
"""

from __future__ import annotations

import argparse
import os
import sys

from ._records import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

__all__ = ["Formatter", "Parser", "RawDescriptionFormatter"]


def _width() -> int:
    # shutil's order: $COLUMNS, the terminal on stdout, 80.
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        try:
            columns = os.get_terminal_size(sys.stdout.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 80
    return max(columns, 40) - 2


class Formatter(argparse.HelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=_width())


class RawDescriptionFormatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=_width())


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose formatter (and its sub-parsers', which are of
    the parent's class) never imports shutil."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", Formatter)
        super().__init__(*args, **kwargs)
