"""`cowprobe materialize SRC_DIR DEST_DIR [DEST_DIR...]`: mirror a tree into
worktrees -- reflinks where the filesystems can, copies where they cannot.

Regular files are cloned or copied; symlinks are recreated as symlinks (same
target text, never followed); empty directories are mirrored; FIFOs, sockets
and devices are reported as failures without being opened. Nothing in a
worktree is deleted. Exit 0 when every entry was mirrored, 1 when any failed,
2 for bad usage (nothing changed).
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from typing import Any

from probe._outcome import errno_name
from probe.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, _render, octal_mode
from probe.materialize import materialize
from probe.materialize._report import JobResult, MaterializeReport
from probe.materialize._tree import MirrorPlan, make_symlink, plan_mirror

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "materialize",
        help="mirror a directory tree into one or more worktrees (reflink or copy)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("src_dir", metavar="SRC_DIR", help="the tree to mirror")
    p.add_argument("dest_dirs", metavar="DEST_DIR", nargs="+", help="worktrees to mirror it into")
    p.add_argument("--workers", type=int, default=None, help="worker threads (default: measured)")
    p.add_argument("--stop-on-error", action="store_true", help="stop at the first failure")
    p.add_argument("--mode", type=octal_mode, default=None,
                   help="permission bits for every file, in octal (default: the source's)")
    p.add_argument("--verify", action="store_true",
                   help="ask the filesystem (FIEMAP) how many bytes really share blocks "
                   "(one extra ioctl per cloned source; off by default, like cp)")
    p.add_argument("--json", action="store_true", help="print a JSON report instead of tables")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _usage_error(args: argparse.Namespace) -> str | None:
    src = args.src_dir
    if not os.path.isdir(src):
        return f"SRC_DIR is not a directory: {src}"
    if args.workers is not None and args.workers < 1:
        return f"--workers must be >= 1, not {args.workers}"
    real_src = os.path.realpath(src)
    seen: set[str] = set()
    for d in args.dest_dirs:
        if os.path.lexists(d) and not os.path.isdir(d):
            return f"DEST_DIR exists and is not a directory: {d}"
        real = os.path.realpath(d)
        if real == real_src or real.startswith(real_src.rstrip(os.sep) + os.sep):
            return f"DEST_DIR {d} is inside SRC_DIR {src}: the mirror would copy itself"
        if real in seen:
            return f"DEST_DIR {d} is given twice"
        seen.add(real)
    return None


def run(args: argparse.Namespace) -> int:
    problem = _usage_error(args)
    if problem is not None:
        print(f"cowprobe materialize: {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        plan = plan_mirror(args.src_dir, args.dest_dirs)
    except OSError as err:
        print(f"cowprobe materialize: cannot read {args.src_dir}: {err.strerror}", file=sys.stderr)
        return EXIT_USAGE
    enabled = False if args.no_progress or args.json else None
    with _render.progress("materialize", len(plan.jobs), enabled=enabled) as bar:

        def advance(_r: JobResult) -> None:
            bar.advance()

        report = materialize(
            plan.jobs,
            workers=args.workers,
            stop_on_error=args.stop_on_error,
            mode=args.mode,
            measure_sharing=args.verify,
            on_result=advance,
        )
    extra = _finish_tree(plan, report, stop_on_error=args.stop_on_error)
    ok = report.ok and not any(e["status"] == "failed" for e in extra)
    if args.json:
        doc = report.to_dict(jobs=False)
        doc["ok"] = ok
        doc["entries"] = extra
        doc["totals"]["symlinks"] = sum(1 for e in extra if e["kind"] == "symlink"
                                        and e["status"] == "created")
        doc["totals"]["failed_entries"] = sum(1 for e in extra if e["status"] == "failed")
        _render.emit_json(doc)
    else:
        _print_summary(report, extra, verify=args.verify)
    return EXIT_OK if ok else EXIT_FAILED


def _finish_tree(
    plan: MirrorPlan, report: MaterializeReport, *, stop_on_error: bool
) -> list[dict[str, Any]]:
    """Empty directories, symlinks and special files: after the batch, whose
    staged directories are in place by then."""
    out: list[dict[str, Any]] = []
    stopped = stop_on_error and not report.ok
    for src, what in plan.specials:
        out.append({"kind": "special", "source": src, "dest": None, "status": "failed",
                    "errno": errno_name(errno.EINVAL),
                    "error": f"not copied: {what}, not a regular file or symlink"})
    if stopped or (stop_on_error and out):
        return out
    for d in plan.dirs:
        try:
            os.makedirs(d, exist_ok=True)
        except OSError as err:
            out.append({"kind": "directory", "source": None, "dest": d, "status": "failed",
                        "errno": errno_name(err.errno) if err.errno else None,
                        "error": err.strerror})
            if stop_on_error:
                return out
    for src, target, dest in plan.symlinks:
        try:
            make_symlink(target, dest)
        except OSError as err:
            out.append({"kind": "symlink", "source": src, "dest": dest, "status": "failed",
                        "errno": errno_name(err.errno) if err.errno else None,
                        "error": err.strerror})
            if stop_on_error:
                return out
        else:
            out.append({"kind": "symlink", "source": src, "dest": dest, "status": "created",
                        "errno": None, "error": None})
    return out


def _size(n: int | None) -> str:
    # Imported here: probe.report loads the capability probe (a third of
    # this command's start-up), which a --json run never needs.
    from probe.report import short_size

    return "unknown" if n is None else short_size(n)


def _shared(report: MaterializeReport, verify: bool) -> str:
    if report.sharing_verified:
        return _size(report.bytes_shared)
    return "unknown (a FIEMAP failed)" if verify else "not verified (--verify)"


def _print_summary(
    report: MaterializeReport, extra: list[dict[str, Any]], *, verify: bool
) -> None:
    links = sum(1 for e in extra if e["kind"] == "symlink" and e["status"] == "created")
    failed_extra = [e for e in extra if e["status"] == "failed"]
    rows = [
        ["cloned", str(report.cloned)],
        ["copied", str(report.copied)],
        ["failed", str(report.failed + len(failed_extra))],
        ["skipped", str(report.skipped)],
        ["symlinks", str(links)],
        ["bytes", _size(report.bytes)],
        ["bytes sharing blocks", _shared(report, verify)],
        ["time", f"{report.seconds:.2f} s"],
        ["worker threads", str(report.workers)],
    ]
    _render.print_table("materialize", ["", "count"], rows)
    failures = [[r.status.value, r.path or r.dest, r.errno_name or "", r.error or ""]
                for r in report.failures]
    failures += [["failed", e["source"] or e["dest"], e["errno"] or "", e["error"] or ""]
                 for e in failed_extra]
    # One plain line per failure, not a table: a table folds long paths
    # across lines, and these lines get grepped.
    for status, path, err, text in failures:
        print(f"cowprobe materialize: {status}: {path}: {err} {text}".rstrip(), file=sys.stderr)
