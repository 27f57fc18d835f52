"""One line and an exit code for an OSError a command met on disk.

Exit 2 when it happened at a directory the user named, or at an entry the
command makes directly in it (a lab root, a work directory), for a reason
that is the place's own -- read-only, not ours to write, not a directory,
missing: nothing ran yet, and the fix is another place. Any other OSError
is a failure, exit 1. Either way one "PATH: strerror" line, never a
traceback.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping

from probe._records import TYPE_CHECKING

from . import EXIT_FAILED, EXIT_USAGE

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["error_text", "place_error"]

_THE_PLACES_FAULT = frozenset({errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR,
                               errno.ENOENT})


def place_error(err: OSError, places: Mapping[str, Path | None]) -> tuple[str, int]:
    """(line, exit code) for ``err``; ``places`` maps each option to the
    directory the user gave it (None: not given)."""
    why = err.strerror or str(err)
    name = err.filename
    if not isinstance(name, (str, bytes, os.PathLike)):
        return why, EXIT_FAILED
    at = os.path.realpath(os.fsdecode(name))
    if err.errno in _THE_PLACES_FAULT:
        for flag, given in places.items():
            if given is not None and os.path.realpath(given) in (at, os.path.dirname(at)):
                return f"{flag} {given}: {why}", EXIT_USAGE
    return error_text(err), EXIT_FAILED


def error_text(err: Exception) -> str:
    """An OSError as a user reads it: "PATH: what happened", not Python's
    "[Errno 2] ...: 'PATH'"."""
    if isinstance(err, OSError) and err.strerror:
        where = " -> ".join(os.fsdecode(f) for f in (err.filename, err.filename2)
                            if isinstance(f, (str, bytes, os.PathLike)))
        return f"{where}: {err.strerror}" if where else err.strerror
    return str(err)
