"""`cowprobe lab`: the real-filesystem lab from the command line.

  up      build the lab, print its mountpoints, keep it until Ctrl-C,
          SIGTERM or SIGHUP, then tear it down
  clean   tear down leftovers of labs whose owner process died
  matrix  build a lab and print the outcome of every conformance scenario
          the lab's real filesystems show without fault injection (the
          real column of probe/conformance/_scenarios.py), against DESIGN.md

Exit codes: 0 done / every matrix cell as expected; 1 the lab could not be
built, a teardown failed, or a matrix cell deviated; 2 bad usage, or a
--base-dir that is no directory to build in (missing, a file, a read-only
mount: the lab makes no parent directories, it removes only its own root).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any

from probe._helpwidth import RawDescriptionFormatter
from probe.conformance import (
    SCENARIOS,
    CaseResult,
    Column,
    LabSite,
    NotHere,
    Scenario,
    Status,
    Variant,
    run_case,
)
from probe.lab import KINDS, LANES, SIZE_HELP, Lab, LabError, cleanup_stale, parse_sizes

from . import EXIT_FAILED, EXIT_OK
from ._places import place_error
from ._render import emit_json, print_table


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "lab",
        help="build / clean the real-filesystem lab, or print its reflink outcome matrix",
        description=__doc__,
        formatter_class=RawDescriptionFormatter,
    )
    _base_dir(p, None)
    labsub = p.add_subparsers(dest="lab_command", required=True, metavar="ACTION")

    up = labsub.add_parser("up", help="build the lab and keep it until Ctrl-C / SIGTERM / SIGHUP")
    up.add_argument(
        "--kinds",
        nargs="+",
        choices=LANES,
        default=list(KINDS),
        help="filesystems to build (default: the plain ones; overlay-* are overlayfs lanes)",
    )
    up.add_argument("--size", type=_sizes, default={}, metavar="SIZE", help=SIZE_HELP)
    up.add_argument("--json", action="store_true", help="print the lab as JSON")
    _base_dir(up, argparse.SUPPRESS)
    up.set_defaults(func=_up)

    clean = labsub.add_parser("clean", help="remove leftovers of labs whose owner died")
    clean.add_argument("--json", action="store_true", help="print the removed roots as JSON")
    _base_dir(clean, argparse.SUPPRESS)
    clean.set_defaults(func=_clean)

    matrix = labsub.add_parser("matrix", help="print the reflink outcome matrix over a fresh lab")
    matrix.add_argument("--json", action="store_true", help="print the matrix as JSON")
    _base_dir(matrix, argparse.SUPPRESS)
    matrix.set_defaults(func=_matrix)


def _base_dir(parser: argparse.ArgumentParser, default: Any) -> None:
    # Before the action and after it: `cowprobe lab up --base-dir X` is how
    # people type it. The action's copy has no default of its own
    # (SUPPRESS), so it never undoes a --base-dir given before the action.
    parser.add_argument("--base-dir", type=Path, default=default,
                        help="an existing directory where lab roots live (default /tmp)")


def _failed(action: str, err: OSError, args: argparse.Namespace) -> int:
    line, code = place_error(err, {"--base-dir": args.base_dir})
    print(f"cowprobe lab {action}: {line}", file=sys.stderr)
    return code


# -------------------------------------------------------------------- up


def _sizes(text: str) -> dict[str, int]:
    try:
        return parse_sizes(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _lab_doc(lab: Lab) -> dict[str, Any]:
    return {
        "root": str(lab.root),
        "build_seconds": lab.build_seconds,
        "filesystems": [
            {
                "kind": fs.kind,
                "fstype": fs.fstype,
                "mountpoint": str(fs.mountpoint),
                "device": fs.device,
                "image": None if fs.image is None else str(fs.image),
                "options": fs.options,
                "size_mb": fs.size_mb,
            }
            for fs in lab
        ],
    }


def _up(args: argparse.Namespace) -> int:
    # SIGHUP too (the terminal went away): the handler run_guarded installs
    # for it never runs while we sit in sigwait (glibc retries sigwait after
    # EINTR), so unless it is waited for it is swallowed and the lab outlives
    # its terminal -- with a live owner, which no `lab clean` may reap.
    stop = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    # Blocked from the start: a signal arriving while the lab is being built
    # stays pending (instead of killing us half-way and leaking mounts) and
    # ends the sigwait below at once, which tears the lab down.
    old = signal.pthread_sigmask(signal.SIG_BLOCK, stop)
    try:
        try:
            lab = Lab(args.kinds, base_dir=args.base_dir, sizes_mb=args.size).__enter__()
        except LabError as err:
            print(f"cowprobe lab up: {err}", file=sys.stderr)
            return EXIT_FAILED
        except OSError as err:
            return _failed("up", err, args)
        try:
            if args.json:
                emit_json(_lab_doc(lab))
            else:
                print_table(
                    f"cowprobe lab at {lab.root} (built in {lab.build_seconds:.2f} s)",
                    ("kind", "fstype", "size", "mountpoint", "device"),
                    [
                        (fs.kind, fs.fstype, f"{fs.size_mb} MiB", str(fs.mountpoint),
                         fs.device or "-")
                        for fs in lab
                    ],
                )
            sys.stdout.flush()
            print("lab is up; Ctrl-C, SIGTERM or SIGHUP tears it down", file=sys.stderr, flush=True)
            signal.sigwait(stop)
        finally:
            failure = _close(lab)
        if failure:
            print(f"cowprobe lab up: {failure}", file=sys.stderr)
            return EXIT_FAILED
        print(f"lab torn down in {lab.teardown_seconds or 0:.2f} s", file=sys.stderr)
        return EXIT_OK
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _close(lab: Lab) -> str | None:
    try:
        lab.close()
    except LabError as err:
        return str(err)
    return None


# ----------------------------------------------------------------- clean


def _clean(args: argparse.Namespace) -> int:
    try:
        reaped = cleanup_stale(args.base_dir)
    except OSError as err:
        return _failed("clean", err, args)
    if args.json:
        emit_json({"removed": [str(p) for p in reaped]})
    elif reaped:
        for root in reaped:
            print(f"removed stale lab {root}")
    else:
        print("no stale labs")
    return EXIT_OK


# ---------------------------------------------------------------- matrix


def lab_matrix() -> list[tuple[Scenario, Variant]]:
    """The real-filesystem cells of the conformance scenarios that a lab
    alone can show: no fault injection, no user directories, no FUSE."""
    cells: list[tuple[Scenario, Variant]] = []
    for s in SCENARIOS:
        if isinstance(s.real, NotHere):
            continue
        cells.extend((s, v) for v in s.real if {v.source, v.dest} <= LabSite.places)
    return cells


def _row(res: CaseResult) -> dict[str, Any]:
    v = res.variant
    assert v is not None
    return {
        "scenario": res.scenario.id,
        "title": res.scenario.title,
        "variant": v.label,
        "source": v.source,
        "dest": v.dest,
        "op": v.op.value,
        "observed": res.observed or None,
        "expected": res.scenario.expect_for(v).describe(),
        "status": res.status.value,
        "ok": res.status is not Status.FAIL,
        "problem": res.detail or None,
    }


def _matrix(args: argparse.Namespace) -> int:
    # A lab that fails to build, to bind-mount or to tear down is exit 1 with
    # its message, as documented -- not a traceback.
    try:
        with Lab(KINDS, base_dir=args.base_dir) as lab, LabSite(lab) as site:
            results = [run_case(site, s, Column.REAL, v) for s, v in lab_matrix()]
    except LabError as err:
        print(f"cowprobe lab matrix: {err}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as err:
        return _failed("matrix", err, args)
    rows = [_row(r) for r in results]
    bad = [r for r in rows if not r["ok"]]
    if args.json:
        emit_json({"kernel": os.uname().release, "cells": rows, "ok": not bad})
    else:
        print_table(
            f"reflink outcome matrix (kernel {os.uname().release}; "
            "the real column of `cowprobe conformance`)",
            ("scenario", "set-up", "observed", "expected", "verdict"),
            [
                (
                    r["title"],
                    r["variant"],
                    r["observed"] or "-",
                    r["expected"],
                    r["status"] if r["problem"] is None else f"{r['status']} ({r['problem']})",
                )
                for r in rows
            ],
        )
    return EXIT_FAILED if bad else EXIT_OK
