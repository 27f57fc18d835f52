"""`cowprobe report`: what each directory's filesystem really does.

Every capability is measured by trying it in a private temporary directory
under PATH (removed afterwards, also on Ctrl-C), never looked up in a table:

  yes                 it worked, and the result was checked
  no (ERRNO)          the kernel refused, with this errno
  no (checked)        no errno, but checking showed it missing or wrong: a
                      call that "succeeded" wrongly (a zero-length copy, a
                      chmod that changed nothing)
  no (not an overlay) an overlayfs row on a filesystem that is none
  could not tell      the probe could not ask (read-only, EPERM, EIO, ...)

  cowprobe report .                           one column for this directory
  cowprobe report /cache /work --pair /cache /work
  cowprobe report --lab                       build btrfs, XFS (reflink on and
                                              off), ext4, tmpfs and a FUSE
                                              mount, and report on all of them
  cowprobe report merge A.json B.json --format html > matrix.html
                                              join reports from many machines
                                              (CI matrix jobs) into one matrix:
                                              a row per capability, a column
                                              per host and filesystem

Formats: table (the terminal; colour where it has it), json (validated by the
JSON Schema shipped as probe/report.schema.json; for merge,
probe/matrix.schema.json), markdown (a pull-request comment or job summary),
html (one self-contained page: no script, nothing fetched).
--host NAME names the machine in the JSON (default: its hostname); merge
uses it as the column's host. A directory called "merge" is ./merge.

Exit codes: 0 the report was produced; 1 the lab could not be built or probe
files could not be removed; 2 bad usage (a PATH missing or not a directory;
for merge, a FILE missing, not a report, or of another schema version).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from probe._helpwidth import RawDescriptionFormatter
from probe.capabilities import (
    CapabilityReport,
    PairReport,
    ProbePathError,
    probe_capabilities,
    probe_pair,
    resolve_names,
    unavailable_pair,
    unavailable_report,
    validate_directory,
)
from probe.report import context_line, matrix, pair_matrix, render_markdown, to_document

from . import EXIT_FAILED, EXIT_OK, EXIT_USAGE, positive_seconds
from ._render import emit_json, print_table, progress

if TYPE_CHECKING:
    from pathlib import Path

    from probe.report import Fleet

# Imported where used, not here: the lab only for --lab, the fleet matrix
# and HTML only for merge and --format html (rich only ever loads when a
# table or a bar is drawn on a terminal: see _render).
# `cowprobe report PATH --format json` in a CI job needs none of them
# (issue 15: report whole-process <= 0.15 s).

__all__ = ["lab_reports", "register"]

FAKEFS_LABEL = "fakefs (FUSE)"

#: (label, source kind, dest kind or "bind:<kind>") for the lab's pair probes:
#: a bind mount (two mounts, one filesystem: clones work on kernels >= 5.18),
#: two CoW filesystems (EXDEV), and two without reflink.
_LAB_PAIRS = (
    ("btrfs → btrfs (bind mount)", "btrfs", "bind:btrfs"),
    ("btrfs → xfs", "btrfs", "xfs"),
    ("ext4 → tmpfs", "ext4", "tmpfs"),
    ("overlay-xfs → overlay-btrfs (two overlay mounts)", "overlay-xfs", "overlay-btrfs"),
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "report",
        help="measure what each directory's filesystem can do (reflinks, links, xattrs, ...)",
        description=__doc__,
        formatter_class=RawDescriptionFormatter,
    )
    p.add_argument("paths", nargs="*", metavar="PATH", help="directories to probe")
    p.add_argument("--pair", nargs=2, action="append", default=[], metavar=("A", "B"),
                   help="also probe reflink and copy_file_range from A to B (repeatable)")
    p.add_argument("--format", choices=("table", "json", "markdown", "html"), default="table")
    p.add_argument("--host", metavar="NAME",
                   help="the machine's name in the report (default: its hostname)")
    p.add_argument("--lab", action="store_true",
                   help="build the real-filesystem lab (and a fakefs mount) and report on it")
    p.add_argument("--only", metavar="CAPS",
                   help="comma-separated capabilities to probe (default: all)")
    p.add_argument("--timeout", type=positive_seconds, metavar="SECONDS",
                   help="per directory and per pair: once this has passed, report the "
                   "capabilities not yet probed as 'could not tell', even when the "
                   "filesystem stopped answering mid-call (the probe runs in a child process)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="table format: also print each answer's reason and evidence")
    p.set_defaults(func=run)


def _err(message: str) -> None:
    print(f"cowprobe report: {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    if args.paths[:1] == ["merge"]:
        return _merge(args, args.paths[1:])
    if not args.paths and not args.pair and not args.lab:
        _err("nothing to report on: give PATH..., --pair A B or --lab")
        return EXIT_USAGE
    try:
        only = None if args.only is None else resolve_names(args.only.split(","))
    except ValueError as err:
        _err(str(err))
        return EXIT_USAGE
    if only == ():
        # As `check --require ,`: an empty list is a slip (a shell variable
        # that expanded to nothing), never a wish for every capability.
        _err("--only names no capability")
        return EXIT_USAGE
    # SIGTERM/SIGHUP unwind like Ctrl-C (the probe directory and the lab
    # are removed) and exit 128+n: probe.cli._signals, for every subcommand.
    try:
        reports, pairs = _collect(args, only)
    except ProbePathError as err:
        _err(str(err))
        return EXIT_USAGE
    except _LabFailed as err:
        _err(str(err))
        return EXIT_FAILED
    _emit(args, reports, pairs)
    everything: list[CapabilityReport | PairReport] = [*reports, *pairs]
    leftovers = [r.leftover for r in everything if r.leftover]
    for left in leftovers:
        _err(f"warning: {left}")
    return EXIT_FAILED if leftovers else EXIT_OK


class _LabFailed(Exception):
    pass


def _collect(args: argparse.Namespace, only: Sequence[str] | None,
             ) -> tuple[list[CapabilityReport], list[PairReport]]:
    # Every PATH is checked before anything is written anywhere, so a typo
    # in the third argument does not leave a half-made report. A path that
    # does not answer the check in time is no typo: a fleet report wants
    # its column ("could not tell", why) beside the others, not exit 2.
    # Its column is the check's outcome, and so is a pair holding it:
    # probing either would wait out the limit a second time (the stalled
    # call still holds the name).
    hung: dict[str, ProbePathError] = {}
    for p in dict.fromkeys([*args.paths, *(x for pair in args.pair for x in pair)]):
        try:
            validate_directory(p, timeout=args.timeout)
        except ProbePathError as err:
            if not err.timed_out:
                raise
            hung[p] = err
    reports: list[CapabilityReport] = []
    pairs: list[PairReport] = []
    total = len(args.paths) + len(args.pair)
    # Popped by the first report standing for the path: named once.
    stuck = {p: err.leftover for p, err in hung.items()}
    with progress("probing", total) as bar:
        for path in args.paths:
            if path in hung:
                why = f"not probed: {hung[path].reason}"
                reports.append(unavailable_report(path, why, label=path, only=only,
                                                  leftover=stuck.pop(path, None)))
            else:
                reports.append(probe_capabilities(path, only=only, label=path,
                                                  timeout=args.timeout,
                                                  isolate=args.timeout is not None))
            bar.advance(label=path)
        for a, b in args.pair:
            if late := [p for p in dict.fromkeys((a, b)) if p in hung]:
                why = "not probed: " + "; ".join(f"{p}: {hung[p].reason}" for p in late)
                left = "; ".join(x for p in late if (x := stuck.pop(p, None))) or None
                pairs.append(unavailable_pair(a, b, why, label=f"{a} → {b}", leftover=left))
            else:
                pairs.append(probe_pair(a, b, label=f"{a} → {b}", timeout=args.timeout,
                                        isolate=args.timeout is not None))
            bar.advance(label=f"{a} → {b}")
    if args.lab:
        lab_reps, lab_pairs = lab_reports(only, timeout=args.timeout)
        reports += lab_reps
        pairs += lab_pairs
    return reports, pairs


def lab_reports(only: Sequence[str] | None = None, *,
                advance: Callable[[str], None] | None = None,
                timeout: float | None = None,
                ) -> tuple[list[CapabilityReport], list[PairReport]]:
    """Build the lab, probe every filesystem in it plus a fakefs mount and
    the lab's directory pairs, tear it all down, return the reports."""
    from probe.lab import LANES as KINDS  # every lane, the overlays too
    from probe.lab import Lab, LabError

    reports: list[CapabilityReport] = []
    pairs: list[PairReport] = []
    try:
        lab = Lab(kinds=KINDS)
        lab.start()
    except LabError as err:
        raise _LabFailed(f"the lab could not be built: {err}") from None
    # closing(), not `with lab`: entering a Lab starts it, and it is started.
    with contextlib.closing(lab), progress("probing the lab",
                                           len(KINDS) + 1 + len(_LAB_PAIRS)) as bar:
        for kind in lab.kinds:
            reports.append(probe_capabilities(lab.scratch_dir(kind, "report"), only=only,
                                              label=kind, timeout=timeout,
                                              isolate=timeout is not None))
            bar.advance(label=kind)
        reports.append(_fakefs_report(lab, only, timeout))
        bar.advance(label=FAKEFS_LABEL)
        for label, a_kind, b_spec in _LAB_PAIRS:
            b_kind = b_spec.removeprefix("bind:")
            if a_kind not in lab or b_kind not in lab:
                continue
            a = lab.scratch_dir(a_kind, "pair")
            b = (lab.bind_mount(b_kind) if b_spec.startswith("bind:")
                 else lab.scratch_dir(b_kind, "pair"))
            pairs.append(probe_pair(a, b, label=label, timeout=timeout,
                                    isolate=timeout is not None))
            bar.advance(label=label)
    return reports, pairs


def _fakefs_report(lab: Any, only: Sequence[str] | None,
                   timeout: float | None = None) -> CapabilityReport:
    """A fakefs (FUSE passthrough) mount over a lab scratch directory; a
    could-not-tell column naming the reason if it cannot be mounted."""
    try:
        # Through import_module: fakefs is optional here, and its handle API
        # is reached by name so this column degrades instead of the import.
        mount = importlib.import_module("fakefs").mount
    except Exception as err:  # ImportError, or a fakefs without mount()
        return unavailable_report("(not mounted)", f"fakefs is not available: {err}",
                                  label=FAKEFS_LABEL, only=only)
    backing: Path = lab.scratch_dir("btrfs" if "btrfs" in lab else lab.kinds[0], "fakefs-data")
    mountpoint: Path = lab.scratch_dir("tmpfs" if "tmpfs" in lab else lab.kinds[0], "fakefs-mnt")
    try:
        with mount(backing, mountpoint):
            return probe_capabilities(mountpoint, only=only, label=FAKEFS_LABEL,
                                      timeout=timeout, isolate=timeout is not None)
    except ProbePathError as err:
        return unavailable_report(str(mountpoint), f"fakefs mount unusable: {err}",
                                  label=FAKEFS_LABEL, only=only)
    except Exception as err:  # a mount that failed must cost a column, not the report
        return unavailable_report(str(mountpoint), f"fakefs could not be mounted: "
                                  f"{type(err).__name__}: {err}", label=FAKEFS_LABEL, only=only)


_LEGEND = ("yes = tried and verified · no (ERRNO) = refused by the kernel · "
           "no (checked) = no errno, checking showed it missing or wrong · "
           "no (not an overlay) = nothing to try an overlayfs row on · "
           "could not tell = see --verbose")


def _merge(args: argparse.Namespace, files: Sequence[str]) -> int:
    """`cowprobe report merge FILE.json...`: many machines' reports, one matrix."""
    extra = [flag for flag, used in (("--pair", args.pair), ("--lab", args.lab),
                                     ("--only", args.only is not None), ("--verbose", args.verbose),
                                     ("--host", args.host)) if used]
    if extra:
        _err(f"merge joins existing reports; {', '.join(extra)} cannot be used with it")
        return EXIT_USAGE
    if not files:
        _err("merge: give the JSON reports to join (`cowprobe report PATH --format json`)")
        return EXIT_USAGE
    from probe.report import ReportFileError, fleet_of, read_report

    try:
        fleet = fleet_of([(f, read_report(f)) for f in files])
    except ReportFileError as err:
        _err(str(err))
        return EXIT_USAGE
    _emit_fleet(args.format, fleet)
    return EXIT_OK


def _emit_fleet(fmt: str, fleet: Fleet) -> None:
    from probe.report import fleet_document, render_fleet_markdown, render_html

    if fmt == "json":
        emit_json(fleet_document(fleet))
    elif fmt == "markdown":
        sys.stdout.write(render_fleet_markdown(fleet))
    elif fmt == "html":
        sys.stdout.write(render_html(fleet))
    else:
        for table in fleet.tables:
            headers, rows = table.grid()
            print_table(table.title, headers, rows)
        print(_LEGEND)


def _emit(args: argparse.Namespace, reports: list[CapabilityReport],
          pairs: list[PairReport]) -> None:
    if args.format in ("json", "html"):
        doc = to_document(reports, pairs, host_name=args.host)
        if args.format == "json":
            emit_json(doc)
        else:
            from probe.report import fleet_of, render_html

            # One machine's report is a one-host matrix.
            sys.stdout.write(render_html(fleet_of([("(this run)", doc)])))
        return
    if args.format == "markdown":
        sys.stdout.write(render_markdown(reports, pairs))
        return
    if reports:
        headers, rows = matrix(reports)
        print_table("cowprobe report", headers, rows)
    if pairs:
        headers, rows = pair_matrix(pairs)
        print_table("between directories", headers, rows)
    print(_LEGEND)
    print(context_line())
    everything: list[CapabilityReport | PairReport] = [*reports, *pairs]
    for rep in everything:
        if rep.limitation:
            print(f"{rep.label}: {rep.limitation}")
    if args.verbose:
        _print_details(everything)


def _print_details(reps: Sequence[CapabilityReport | PairReport]) -> None:
    for rep in reps:
        print(f"\n{rep.label} ({rep.seconds * 1000:.0f} ms)")
        for cap in rep.capabilities:
            mark = {"supported": "+", "unsupported": "-"}.get(cap.status.value, "?")
            why = f": {cap.reason}" if cap.reason else ""
            print(f"  {mark} {cap.title} [{cap.status.value}]{why}")
            for line in cap.evidence:
                print(f"      {line}")
