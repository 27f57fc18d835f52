"""`cowprobe lab`: the real-filesystem lab from the command line.

  up      build the lab, print its mountpoints, keep it until Ctrl-C or
          SIGTERM, then tear it down
  clean   tear down leftovers of labs whose owner process died
  matrix  build a lab and print the reflink outcome of every scenario the
          kernel can show without fault injection, against DESIGN.md

Exit codes: 0 done / every matrix cell as expected; 1 the lab could not be
built, a teardown failed, or a matrix cell deviated; 2 bad usage.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from probe._linux import FS_NOCOW_FL, change_dir_flags
from probe._outcome import ReflinkResult, errno_name
from probe._reflink import reflink
from probe.lab import KINDS, Lab, LabError, cleanup_stale

from . import EXIT_FAILED, EXIT_OK
from ._render import emit_json, print_table


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "lab",
        help="build / clean the real-filesystem lab, or print its reflink outcome matrix",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--base-dir",
        type=Path,
        default=None,
        help="where lab roots live (default /tmp)",
    )
    labsub = p.add_subparsers(dest="lab_command", required=True, metavar="ACTION")

    up = labsub.add_parser("up", help="build the lab and keep it until Ctrl-C / SIGTERM")
    up.add_argument(
        "--kinds",
        nargs="+",
        choices=KINDS,
        default=list(KINDS),
        help="filesystems to build (default: all)",
    )
    up.add_argument("--json", action="store_true", help="print the lab as JSON")
    up.set_defaults(func=_up)

    clean = labsub.add_parser("clean", help="remove leftovers of labs whose owner died")
    clean.add_argument("--json", action="store_true", help="print the removed roots as JSON")
    clean.set_defaults(func=_clean)

    matrix = labsub.add_parser("matrix", help="print the reflink outcome matrix over a fresh lab")
    matrix.add_argument("--json", action="store_true", help="print the matrix as JSON")
    matrix.set_defaults(func=_matrix)


# -------------------------------------------------------------------- up


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
            }
            for fs in lab
        ],
    }


def _up(args: argparse.Namespace) -> int:
    stop = {signal.SIGINT, signal.SIGTERM}
    # Blocked from the start: a signal arriving while the lab is being built
    # stays pending (instead of killing us half-way and leaking mounts) and
    # ends the sigwait below at once, which tears the lab down.
    old = signal.pthread_sigmask(signal.SIG_BLOCK, stop)
    try:
        try:
            lab = Lab(args.kinds, base_dir=args.base_dir).__enter__()
        except LabError as err:
            print(f"cowprobe lab up: {err}", file=sys.stderr)
            return EXIT_FAILED
        try:
            if args.json:
                emit_json(_lab_doc(lab))
            else:
                print_table(
                    f"cowprobe lab at {lab.root} (built in {lab.build_seconds:.2f} s)",
                    ("kind", "fstype", "mountpoint", "device"),
                    [(fs.kind, fs.fstype, str(fs.mountpoint), fs.device or "-") for fs in lab],
                )
            sys.stdout.flush()
            print("lab is up; Ctrl-C or SIGTERM tears it down", file=sys.stderr, flush=True)
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
    reaped = cleanup_stale(args.base_dir)
    if args.json:
        emit_json({"removed": [str(p) for p in reaped]})
    elif reaped:
        for root in reaped:
            print(f"removed stale lab {root}")
    else:
        print("no stale labs")
    return EXIT_OK


# ---------------------------------------------------------------- matrix


@dataclass(frozen=True)
class Expect:
    """What DESIGN.md says a cell must show: an outcome word and an errno."""

    outcome: str  # "cloned", "unsupported", "source_vanished" or "error"
    errno: int | None


@dataclass(frozen=True)
class Cell:
    scenario: str
    source_fs: str
    dest_fs: str
    expect: Expect
    outcome: str
    errno: int | None
    #: Something wrong besides the outcome (e.g. a dest left behind).
    detail: str = ""

    @property
    def problem(self) -> str | None:
        """Why this cell is not what DESIGN.md says; None when it is."""
        return deviation(self.expect, self.outcome, self.errno) or self.detail or None


def deviation(expect: Expect, outcome: str, err: int | None) -> str | None:
    """Why (outcome, errno) is not what ``expect`` says; None if it is."""
    if outcome != expect.outcome:
        return f"expected {expect.outcome}, got {outcome}"
    if err != expect.errno:
        want = "no errno" if expect.errno is None else errno_name(expect.errno)
        got = "no errno" if err is None else errno_name(err)
        return f"expected {want}, got {got}"
    return None


_SOURCE_BYTES = 128 * 1024  # well above btrfs's inline limit: a real extent


def _kernel_at_least(major: int, minor: int) -> bool:
    try:
        parts = os.uname().release.split(".")
        return (int(parts[0]), int(parts[1].split("-")[0])) >= (major, minor)
    except (ValueError, IndexError):
        return True


def _attempt(source: Path, dest: Path) -> tuple[str, int | None]:
    try:
        result: ReflinkResult = reflink(source, dest)
    except OSError as err:
        return "error", err.errno
    return result.outcome.value, result.errno


def _source_on(lab: Lab, kind: str, tag: str) -> Path:
    src = lab.scratch_dir(kind, f"matrix-{tag}-src") / "source"
    src.write_bytes(os.urandom(_SOURCE_BYTES))
    return src


def _nocow_dir(lab: Lab) -> Path:
    d = lab.scratch_dir("btrfs", "matrix-nocow")
    # On a directory the flag is inherited by files created in it later;
    # btrfs then refuses to clone a COW file into them (EINVAL).
    change_dir_flags(d, add=FS_NOCOW_FL)
    return d


def _through(mount: Path, lab: Lab) -> Path:
    """A fresh empty btrfs directory, reached through the bind ``mount``."""
    fresh = lab.scratch_dir("btrfs", "matrix-dest")
    return mount / fresh.relative_to(lab.path("btrfs"))


def build_matrix(lab: Lab) -> list[Cell]:
    """Run every cell against ``lab`` (which must have all of KINDS)."""
    eop, exdev = errno.EOPNOTSUPP, errno.EXDEV
    cloned = Expect("cloned", None)
    cells: list[Cell] = []

    def run(
        scenario: str, src_kind: str, dest_kind: str, expect: Expect, dest_dir: Callable[[], Path]
    ) -> None:
        src = _source_on(lab, src_kind, scenario.replace(" ", "-").replace("/", "-"))
        outcome, err = _attempt(src, dest_dir() / "dest")
        cells.append(Cell(scenario, src_kind, dest_kind, expect, outcome, err))

    def on(kind: str) -> Callable[[], Path]:
        return lambda: lab.scratch_dir(kind, "matrix-dest")

    for kind in KINDS:
        expect = cloned if kind in ("btrfs", "xfs") else Expect("unsupported", eop)
        run(f"same fs ({kind})", kind, kind, expect, on(kind))
    for src_kind, dest_kind in (
        ("btrfs", "xfs"),
        ("xfs", "btrfs"),
        ("btrfs", "tmpfs"),
        ("ext4", "btrfs"),
    ):
        run(
            f"cross-fs {src_kind}->{dest_kind}",
            src_kind,
            dest_kind,
            Expect("unsupported", exdev),
            on(dest_kind),
        )
    # Linux 5.18 allowed clones across two mounts of one filesystem; older
    # kernels answer EXDEV, which is still the right classification there.
    bind_expect = cloned if _kernel_at_least(5, 18) else Expect("unsupported", exdev)
    run(
        "bind mount of btrfs",
        "btrfs",
        "btrfs (bind)",
        bind_expect,
        lambda: _through(lab.bind_mount("btrfs"), lab),
    )
    run(
        "NOCOW dest dir",
        "btrfs",
        "btrfs (+C dir)",
        Expect("unsupported", errno.EINVAL),
        lambda: _nocow_dir(lab),
    )
    run(
        "read-only bind",
        "btrfs",
        "btrfs (ro bind)",
        Expect("error", errno.EROFS),
        lambda: _through(lab.readonly_bind("btrfs"), lab),
    )
    run(
        "dest parent missing",
        "btrfs",
        "btrfs",
        Expect("error", errno.ENOENT),
        lambda: lab.scratch_dir("btrfs", "matrix-dest") / "missing",
    )
    missing = lab.scratch_dir("btrfs", "matrix-missing")
    outcome, err = _attempt(missing / "no-such-source", missing / "dest")
    cells.append(
        Cell(
            "source missing",
            "btrfs",
            "btrfs",
            Expect("source_vanished", None),
            outcome,
            err,
            "dest created" if (missing / "dest").exists() else "",
        )
    )
    return cells


def _errno_cell(err: int | None) -> str:
    return "-" if err is None else errno_name(err)


def _matrix(args: argparse.Namespace) -> int:
    # A lab that fails to build, to bind-mount or to tear down is exit 1 with
    # its message, as documented -- not a traceback.
    try:
        with Lab(KINDS, base_dir=args.base_dir) as lab:
            cells = build_matrix(lab)
    except LabError as err:
        print(f"cowprobe lab matrix: {err}", file=sys.stderr)
        return EXIT_FAILED
    bad = [c for c in cells if c.problem]
    if args.json:
        emit_json(
            {
                "kernel": os.uname().release,
                "cells": [
                    {
                        "scenario": c.scenario,
                        "source": c.source_fs,
                        "dest": c.dest_fs,
                        "outcome": c.outcome,
                        "errno": None if c.errno is None else errno_name(c.errno),
                        "expected": c.expect.outcome,
                        "expected_errno": None
                        if c.expect.errno is None
                        else errno_name(c.expect.errno),
                        "ok": c.problem is None,
                        "problem": c.problem,
                    }
                    for c in cells
                ],
                "ok": not bad,
            }
        )
    else:
        print_table(
            f"reflink outcome matrix (kernel {os.uname().release})",
            ("scenario", "source", "dest", "outcome", "errno", "expected", "verdict"),
            [
                (
                    c.scenario,
                    c.source_fs,
                    c.dest_fs,
                    c.outcome.replace("_", " "),
                    _errno_cell(c.errno),
                    f"{c.expect.outcome.replace('_', ' ')} {_errno_cell(c.expect.errno)}",
                    "ok" if c.problem is None else f"fail ({c.problem})",
                )
                for c in cells
            ],
        )
    return EXIT_FAILED if bad else EXIT_OK
