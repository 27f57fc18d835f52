"""`cowprobe conformance`: run the DESIGN.md scenario matrix and report it.

By default on the built-in lab (loopback btrfs, XFS reflink=1/0, ext4,
tmpfs, plus a fakefs mount for the simulated column; needs root). With
``--source-dir A --dest-dir B`` between two directories you name (no root
needed): only the scenarios that apply there run, the rest are reported as
not applicable with what is missing.

Every cell is pass / fail / n/a. Not applicable never counts as a pass.

Exit codes: 0 no deviation; 1 at least one deviation, the lab failed while
running or tearing down, or the JUnit file could not be written after the
run; 2 bad usage, or a place that cannot be used: a --junit FILE that is a
directory or a device, a read-only --dest-dir (nothing ran); 3 could not
tell (the lab cannot be built here, or nothing at all could run).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from probe._helpwidth import RawDescriptionFormatter
from probe.conformance import (
    SCENARIOS,
    CaseResult,
    Column,
    DirSite,
    JunitFile,
    LabSite,
    Report,
    Scenario,
    Site,
    Status,
    plan,
    run,
)

from . import EXIT_COULD_NOT_TELL, EXIT_FAILED, EXIT_OK, EXIT_USAGE
from ._places import place_error
from ._render import emit_json, markdown_table, print_table, progress


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "conformance",
        help="run the reflink scenario matrix on the lab or on two directories",
        description=__doc__,
        formatter_class=RawDescriptionFormatter,
    )
    p.add_argument("--source-dir", type=Path, help="run between this directory ...")
    p.add_argument("--dest-dir", type=Path, help="... and this one (no root needed)")
    p.add_argument(
        "--scenario",
        action="append",
        metavar="ID",
        choices=[s.id for s in SCENARIOS],
        help="run only this scenario (repeatable; default: all)",
    )
    p.add_argument("--markdown", action="store_true", help="print the matrix as Markdown")
    p.add_argument("--json", action="store_true", help="print every case as JSON")
    p.add_argument("--junit", type=Path, metavar="FILE", help="write JUnit XML to FILE")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: when stderr is a terminal)",
    )
    p.set_defaults(func=run_command)


def _usage(msg: str) -> int:
    print(f"cowprobe conformance: {msg}", file=sys.stderr)
    return EXIT_USAGE


def run_command(args: argparse.Namespace) -> int:
    if (args.source_dir is None) != (args.dest_dir is None):
        return _usage("--source-dir and --dest-dir go together")
    scenarios = [s for s in SCENARIOS if not args.scenario or s.id in args.scenario]
    places = {"--source-dir": args.source_dir, "--dest-dir": args.dest_dir}
    for flag, d in places.items():
        if d is not None and not d.is_dir():
            return _usage(f"{flag} {d}: not a directory")
    try:
        # Opened before the suite runs: a --junit that cannot be written
        # (a directory, a device, a read-only mount) is refused now, not
        # after minutes of cases.
        junit = None if args.junit is None else JunitFile(args.junit)
    except OSError as err:
        return _usage(f"--junit {args.junit}: {err.strerror or err}")
    try:
        return _run_site(scenarios, args, junit)
    except OSError as err:
        # The runner turns a case's own errors into failed cases; what gets
        # here is the site's set-up: its work directories, the lab's root.
        line, code = place_error(err, places)
        print(f"cowprobe conformance: {line}", file=sys.stderr)
        return code
    finally:
        if junit is not None:
            junit.close()


def _run_site(scenarios: list[Scenario], args: argparse.Namespace,
              junit: JunitFile | None) -> int:
    if args.source_dir is not None:
        dirs = DirSite(args.source_dir.resolve(), args.dest_dir.resolve())
        return _run_on(dirs, scenarios, args, junit)

    from probe.lab import Lab, LabError, LabUnavailable

    t0 = time.monotonic()
    try:
        with Lab() as lab, LabSite(lab) as site:
            code = _run_on(site, scenarios, args, junit, started=t0)
    except LabUnavailable as err:
        print(
            f"cowprobe conformance: cannot build the lab: {err}\n"
            "  (run as root, or name two directories with --source-dir/--dest-dir)",
            file=sys.stderr,
        )
        return EXIT_COULD_NOT_TELL
    except LabError as err:
        print(f"cowprobe conformance: lab failure: {err}", file=sys.stderr)
        return EXIT_FAILED
    return code


def _run_on(site: Site, scenarios: list[Scenario], args: argparse.Namespace,
            junit: JunitFile | None, started: float | None = None) -> int:
    # The reported time includes building the lab, which a user waits for too.
    t0 = started if started is not None else time.monotonic()
    # Planning asks the site, which makes its work directories: inside
    # `with site`, so they are removed also when making one of them fails.
    with site:
        total = len(plan(site, scenarios))
        with progress("conformance", total, enabled=args.progress) as bar:
            def on_case(res: CaseResult) -> None:
                bar.advance(label=f"{res.scenario.id} / {res.label}: {res.status.value}")

            report = run(site, scenarios, on_case=on_case)
    report.seconds = time.monotonic() - t0
    _print(report, args)
    if junit is not None:
        try:
            junit.write(report)
        except OSError as err:  # the suite ran: a failure to keep its result
            print(f"cowprobe conformance: cannot write --junit {args.junit}: "
                  f"{err.strerror or err}", file=sys.stderr)
            return EXIT_FAILED
        print(f"JUnit XML written to {args.junit}", file=sys.stderr)
    if report.failed:
        return EXIT_FAILED
    if report.ran == 0:
        print("cowprobe conformance: nothing could run here (every case n/a)", file=sys.stderr)
        return EXIT_COULD_NOT_TELL
    return EXIT_OK


def _rows(report: Report) -> list[list[str]]:
    rows = []
    for s in {c.scenario.id: c.scenario for c in report.cells}.values():
        cells = {c.column: c for c in report.cells if c.scenario.id == s.id}
        rows.append([
            s.title,
            s.expect.describe(),
            cells[Column.REAL].text() if Column.REAL in cells else "",
            cells[Column.SIMULATED].text() if Column.SIMULATED in cells else "",
        ])
    return rows


def _summary(report: Report) -> str:
    return (
        f"{report.count(Status.PASS)} passed, {report.count(Status.FAIL)} failed, "
        f"{report.count(Status.NA)} not applicable ({len(report.cases)} cases, "
        f"{len({c.scenario.id for c in report.cases})} scenarios) in {report.seconds:.1f}s"
    )


def _print(report: Report, args: argparse.Namespace) -> None:
    if args.json:
        emit_json({
            "properties": report.properties,
            "seconds": round(report.seconds, 3),
            "passed": report.count(Status.PASS),
            "failed": report.count(Status.FAIL),
            "not_applicable": report.count(Status.NA),
            "cases": [
                {
                    "scenario": c.scenario.id,
                    "column": c.column.value,
                    "variant": c.label,
                    "status": c.status.value,
                    "expected": c.scenario.expect_for(c.variant).describe() if c.variant else None,
                    "observed": c.observed or None,
                    "detail": c.detail or None,
                    "seconds": round(c.seconds, 3),
                }
                for c in report.cases
            ],
        })
        return
    headers = ["scenario", "expected", "real filesystem", "simulated (fakefs)"]
    rows = _rows(report)
    if args.markdown:
        print(markdown_table(headers, rows), end="")
        _deviations(report)
        print(f"\n{_summary(report)}")
        return
    env = ", ".join(f"{k}={v}" for k, v in report.properties.items() if k.endswith(".fstype"))
    print_table(
        f"cowprobe conformance (kernel {report.properties.get('kernel.release', '?')})",
        headers,
        rows,
    )
    if env:
        print(f"filesystems: {env}")
    _deviations(report)
    print(_summary(report))


def _deviations(report: Report) -> None:
    # One line per deviation, with its whole detail: a CI log is searched
    # line by line, and a table cell is no place for a paragraph.
    for c in report.cases:
        if c.status is Status.FAIL:
            print(f"DEVIATION {c.scenario.id} [{c.column.value}] {c.label}: {c.detail}")
