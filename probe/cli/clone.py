"""`cowprobe clone SRC DEST`: like ``cp --reflink=auto`` for one file, saying
which happened and why.

Exit codes: 0 cloned or copied; 1 the operation failed (or ``--reflink
always`` and the filesystem cannot clone) -- DEST is then untouched; 2 bad
usage or input (missing source, a directory/FIFO as source, NUL in a path).
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from typing import Any

from probe._copy import ReflinkUnavailableError, clone_or_copy
from probe._outcome import errno_name
from probe._platform import SpecialFileError

from . import EXIT_FAILED, EXIT_OK, EXIT_USAGE, octal_mode
from ._render import emit_json

# Errors that say the *input* was wrong, as opposed to the operation failing.
_USAGE_ERRNOS = frozenset({errno.ENOENT, errno.EISDIR, errno.ENOTDIR, errno.ELOOP})


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "clone",
        help="clone one file (reflink where possible, copy otherwise)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source")
    p.add_argument("dest")
    p.add_argument(
        "--reflink",
        choices=("auto", "always", "never"),
        default="auto",
        help="auto: clone, else copy (default); always: fail rather than copy; never: copy",
    )
    p.add_argument("--mode", type=octal_mode, help="permission bits (octal) for DEST")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    doc: dict[str, Any] = {"source": args.source, "dest": args.dest}
    try:
        result = clone_or_copy(args.source, args.dest, mode=args.mode, reflink=args.reflink)
    except (ValueError, SpecialFileError) as err:
        return _fail(args, doc, err, EXIT_USAGE)
    except ReflinkUnavailableError as err:
        doc["action"] = "none"
        return _fail(args, doc, err, EXIT_FAILED)
    except OSError as err:
        usage = err.errno in _USAGE_ERRNOS and err.filename == args.source
        code = EXIT_USAGE if usage else EXIT_FAILED
        return _fail(args, doc, err, code)
    doc["action"] = "cloned" if result.cloned else "copied"
    if result.attempt is not None:
        doc["reflink"] = result.attempt.outcome.value
        doc["errno"] = result.attempt.errno_name
    doc["bytes_copied"] = result.copied_bytes
    if args.json:
        emit_json(doc)
    else:
        why = ""
        if result.attempt is not None:
            why = f" (reflink {result.attempt.outcome.value}"
            why += f": {result.attempt.errno_name})" if result.attempt.errno else ")"
        elif args.reflink == "never":
            why = " (--reflink never)"
        print(f"{doc['action']} {args.source} -> {args.dest}{why}")
    return EXIT_OK


def _fail(args: argparse.Namespace, doc: dict[str, Any], err: Exception, code: int) -> int:
    doc.setdefault("action", "failed")
    doc["error"] = str(err)
    if isinstance(err, OSError) and err.errno is not None:
        doc["errno"] = errno_name(err.errno)
    if args.json:
        emit_json(doc)
    print(f"cowprobe clone: {err}", file=sys.stderr)
    if os.environ.get("COWPROBE_DEBUG"):
        raise err
    return code
