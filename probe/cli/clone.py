"""`cowprobe clone SRC DEST`: like ``cp --reflink=auto`` for one file, saying
which happened and why.

Exit codes: 0 cloned or copied; 1 the operation failed (or ``--reflink
always`` and the filesystem cannot clone) -- DEST is then untouched -- or
the report could not be written (the message says what happened to DEST);
2 bad usage or input (missing source or DEST directory, a directory/FIFO as
source, a directory, FIFO, socket or device as DEST, the same file twice,
NUL in a path); 141 stdout was a closed pipe; 128+n ended by signal n (cleaned up).
With ``--json`` the object's "dest" says "created", "replaced" or
"untouched".
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from typing import Any

from probe import (
    ReflinkUnavailableError,
    SpecialFileError,
    clone_or_copy,
    errno_name,
    leftovers,
)
from probe._helpwidth import RawDescriptionFormatter

from . import EXIT_FAILED, EXIT_OK, EXIT_USAGE, octal_mode
from ._places import error_text
from ._render import emit_json
from ._signals import OutputFailed, output_failed

# Errors that say the *input* was wrong, as opposed to the operation failing.
_USAGE_ERRNOS = frozenset({errno.ENOENT, errno.EISDIR, errno.ENOTDIR, errno.ELOOP})


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "clone",
        help="clone one file (reflink where possible, copy otherwise)",
        description=__doc__,
        formatter_class=RawDescriptionFormatter,
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
    p.add_argument(
        "--fsync",
        action="store_true",
        help="sync DEST and its directory before returning (a crash cannot publish a torn file)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    doc: dict[str, Any] = {"source": args.source, "dest": args.dest}
    existed = os.path.lexists(args.dest)
    try:
        result = clone_or_copy(
            args.source, args.dest, mode=args.mode, reflink=args.reflink, fsync=args.fsync
        )
    except (ValueError, SpecialFileError) as err:
        return _fail(args, doc, err, EXIT_USAGE)
    except ReflinkUnavailableError as err:
        doc["action"] = "none"
        return _fail(args, doc, err, EXIT_FAILED)
    except OSError as err:
        # A missing source or DEST directory, a directory as DEST: the
        # input was wrong, nothing failed. (Not any ENOENT naming DEST: a
        # directory removed mid-copy is a failure.)
        usage = (err.errno in _USAGE_ERRNOS
                 and err.filename in (args.source, os.path.dirname(args.dest) or ".")
                 ) or (err.errno == errno.EISDIR and err.filename == args.dest)
        code = EXIT_USAGE if usage else EXIT_FAILED
        return _fail(args, doc, err, code)
    doc["action"] = "cloned" if result.cloned else "copied"
    doc["dest_state"] = "replaced" if existed else "created"
    if result.attempt is not None:
        doc["reflink"] = result.attempt.outcome.value
        doc["errno"] = result.attempt.errno_name
    elif result.transient_errno is not None:
        doc["reflink"] = "busy"
        doc["errno"] = errno_name(result.transient_errno)
    doc["bytes_copied"] = result.copied_bytes
    doc["fsynced"] = bool(args.fsync)
    doc["leftovers"] = list(result.leftovers)
    for path in result.leftovers:
        print(f"cowprobe clone: temporary could not be removed: {path}", file=sys.stderr)
    try:
        if args.json:
            emit_json(doc)
        else:
            why = ""
            if "reflink" in doc:
                why = f" (reflink {doc['reflink']}"
                why += f": {doc['errno']})" if doc["errno"] else ")"
            elif args.reflink == "never":
                why = " (--reflink never)"
            print(f"{doc['action']} {args.source} -> {args.dest}{why}")
        sys.stdout.flush()
    except OutputFailed as err:
        # DEST *was* written: say so, rather than the "untouched" of a
        # failed operation.
        line = f"cowprobe clone: {doc['action']} {args.source} -> {args.dest} ({doc['dest_state']})"
        return output_failed(err, f"{line}, but the report could not be written")
    return EXIT_OK


def _fail(args: argparse.Namespace, doc: dict[str, Any], err: Exception, code: int) -> int:
    doc.setdefault("action", "failed")
    doc["dest_state"] = "untouched"
    doc["error"] = text = error_text(err)
    if isinstance(err, OSError) and err.errno is not None:
        doc["errno"] = errno_name(err.errno)
    left = leftovers(err)
    doc["leftovers"] = left
    try:
        if args.json:
            emit_json(doc)
            sys.stdout.flush()
    except OutputFailed:
        pass  # the stderr line below says it all; the exit code stands
    print(f"cowprobe clone: {text} (DEST untouched)", file=sys.stderr)
    for path in left:
        print(f"cowprobe clone: temporary could not be removed: {path}", file=sys.stderr)
    if os.environ.get("COWPROBE_DEBUG"):
        raise err
    return code
