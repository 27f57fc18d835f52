"""Leaving a command's process once its work is done.

A command's own clean-up (unmounts, staging removed, temporaries reaped)
is over when its main() returns; what the interpreter does afterwards --
tearing down a few hundred modules one by one -- takes 15-20 ms on every
run, paid by every script that calls the command in a loop and by the
command ``fakefs run`` wraps. So the console scripts run the atexit
handlers (the lab's safety net is one), flush, and ``os._exit``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys

from ._records import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import NoReturn

__all__ = ["exit_now"]


def exit_now(status: int) -> NoReturn:
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        # A closed pipe or a closed stream: main() already said what it
        # could and chose the status.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)
