"""`cowprobe materialize SRC_DIR DEST_DIR [DEST_DIR...]`: mirror a tree into
worktrees -- reflinks where the filesystems can, copies where they cannot.

Regular files are cloned or copied; symlinks are recreated as symlinks (same
target text, never followed); empty directories are mirrored; FIFOs, sockets
and devices are reported as failures without being opened. Nothing in a
worktree is deleted: a file there is replaced atomically, while a FIFO,
socket or device node in a file's place is kept and reported as a failure.
No symlink inside a worktree is followed: a symlink where SRC_DIR has a
directory is reported as a failure. Missing parents of a DEST_DIR are
created. A directory this command creates gets its source directory's
permission bits as `cp -r` gives them (masked by the umask, sticky bit
kept); one that exists keeps its own. A worktree this command creates
appears whole at the end, or -- interrupted -- not at all. Exit 0
when every entry was mirrored, 1 when any failed, 2 for bad usage (nothing
changed).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import sys

from probe import JobResult, MaterializeReport, MirrorReport, mirror
from probe._helpwidth import RawDescriptionFormatter
from probe.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, _render, octal_mode
from probe.report import short_size

from ._places import place_error

__all__ = ["register"]

# All of the work is probe.mirror; this module only parses and renders.


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "materialize",
        help="mirror a directory tree into one or more worktrees (reflink or copy)",
        description=__doc__,
        formatter_class=RawDescriptionFormatter,
    )
    p.add_argument("src_dir", metavar="SRC_DIR", help="the tree to mirror")
    p.add_argument("dest_dirs", metavar="DEST_DIR", nargs="+", help="worktrees to mirror it into")
    p.add_argument("--workers", type=int, default=None,
                   help="worker threads, in this one process (default: measured)")
    p.add_argument("--processes", type=int, default=None,
                   help="worker processes, one thread each (default: measured -- 2 on a "
                   "machine with 2 or more CPUs for a big enough tree, unless --workers "
                   "is given)")
    p.add_argument("--stop-on-error", action="store_true", help="stop at the first failure")
    p.add_argument("--mode", type=octal_mode, default=None,
                   help="permission bits for every file, in octal (default: the source's)")
    p.add_argument("--fsync", action="store_true",
                   help="fsync each file before it is put into place, and its directory after")
    p.add_argument("--verify", action="store_true",
                   help="ask the filesystem (FIEMAP) how many bytes really share blocks "
                   "(one extra ioctl per cloned source; off by default, like cp)")
    p.add_argument("--json", action="store_true", help="print a JSON report instead of tables")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # A short-lived process whose batch allocates one tuple or more per file
    # and frees nothing cyclic: the collector's passes over the growing plan
    # are pure cost (a few percent of the user time for 10,000 files).
    gc.disable()
    enabled = False if args.no_progress or args.json else None
    with contextlib.ExitStack() as stack:
        bars: list[_render.Progress] = []
        totals: list[int] = []

        def planned(total: int) -> None:
            totals.append(total)

        def advance(_r: JobResult) -> None:
            # The bar starts with the first result, not at the plan: a
            # progress bar runs a thread, and worker processes are forked
            # (which needs a single-threaded process) after the plan.
            if not bars:
                bars.append(stack.enter_context(_render.progress("materialize", totals[0],
                                                                 enabled=enabled)))
            bars[0].advance()

        try:
            report = mirror(
                args.src_dir,
                args.dest_dirs,
                workers=args.workers,
                stop_on_error=args.stop_on_error,
                mode=args.mode,
                measure_sharing=args.verify,
                fsync=args.fsync,
                on_plan=planned,
                # No bar, no callback: it would be two calls per file for nothing.
                on_result=None if enabled is False else advance,
                processes=args.processes,
            )
        except ValueError as err:
            return _usage(str(err))
        except OSError as err:
            # Raised before anything is written: SRC_DIR unreadable, a
            # DEST_DIR below a file.
            line, code = _place_error(err, args)
            print(f"cowprobe materialize: {line}", file=sys.stderr)
            return code
    if args.json:
        _render.emit_json(report.to_dict())
    else:
        _print_summary(report, verify=args.verify)
    return EXIT_OK if report.ok else EXIT_FAILED


def _usage(problem: str) -> int:
    print(f"cowprobe materialize: {problem}", file=sys.stderr)
    return EXIT_USAGE


def _place_error(err: OSError, args: argparse.Namespace) -> tuple[str, int]:
    """``place_error``'s line and code, for whichever of the places the
    user named ``err`` is about (it takes one directory per name)."""
    from pathlib import Path  # this error's alone: no part of every run's start-up

    for dest in args.dest_dirs:
        line, code = place_error(err, {"DEST_DIR": Path(dest)})
        if code == EXIT_USAGE:
            return line, code
    return place_error(err, {"SRC_DIR": Path(args.src_dir)})


def _size(n: int | None) -> str:
    return "unknown" if n is None else short_size(n)


def _shared(report: MaterializeReport, verify: bool) -> str:
    if report.sharing_verified:
        return _size(report.bytes_shared)
    return "unknown (a FIEMAP failed)" if verify else "not verified (--verify)"


def _print_summary(mirrored: MirrorReport, *, verify: bool) -> None:
    report = mirrored.files
    failed_extra = mirrored.failed_entries
    rows = [
        ["cloned", str(report.cloned)],
        ["copied", str(report.copied)],
        ["failed", str(report.failed + len(failed_extra))],
        ["skipped", str(report.skipped)],
        ["symlinks", str(mirrored.symlinks)],
        ["bytes", _size(report.bytes)],
        ["bytes sharing blocks", _shared(report, verify)],
        ["time", f"{report.seconds:.2f} s"],
        ["worker threads", str(report.workers)],
        ["worker processes", str(report.processes)],
    ]
    _render.print_table("materialize", ["", "count"], rows)
    # The reason without the path it names (the line names it already), so
    # that failures differing only in the file collapse into one line with
    # a count: an unwritable worktree directory printed 20,101 lines.
    failures = [(r.status.value, r.path or r.dest, r.errno_name or "",
                 os.strerror(r.errno) if r.errno is not None else r.error or "")
                for r in report.failures]
    failures += [("failed", e.source or e.dest or "", e.errno_name or "", e.error or "")
                 for e in failed_extra]
    # Plain lines, not a table: a table folds long paths, and these get grepped.
    for line in _render.collapse_failures(failures):
        print(f"cowprobe materialize: {line}", file=sys.stderr)
