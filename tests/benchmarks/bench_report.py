"""Benchmark: the capability report (not a test; run it directly, as root).

    .venv/bin/python tests/benchmarks/bench_report.py [--repeat 5]

Targets (issue 5): a full report of one filesystem <= 0.3 s; `cowprobe
report --lab`, lab creation included, <= 10 s. Issue 15: `cowprobe report
PATH` as a whole process (what a user or a CI job runs) <= 0.15 s. Each
figure comes with a peer measured in the same run, so the ratio stays
meaningful on a slower machine: the full report against one raw reflink
probe (``probe.probe_reflink``) in the same directory; `report --lab`
against building and tearing down the same lab with nothing probed; the
whole `cowprobe report PATH` process against the bare interpreter start-up
(``python -c pass``), alternating, medians. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from _whole import as_users_run_it, console_script

from probe import probe_reflink
from probe.capabilities import probe_capabilities
from probe.cli import main as cli_main
from probe.lab import KINDS, Lab

REPORT_TARGET_S = 0.3
LAB_TARGET_S = 10.0
PROCESS_TARGET_S = 0.15


def _cowprobe() -> list[str]:
    return console_script("cowprobe", "probe.cli")


def _whole_process(path: Path, repeat: int) -> dict[str, object]:
    """`cowprobe report PATH` per output format against `python -c pass`,
    alternating so a load spike on this shared machine hits both."""
    runs: dict[str, list[float]] = {"interpreter": [], "table": [], "json": []}
    argv = {"interpreter": [sys.executable, "-c", "pass"],
            "table": [*_cowprobe(), "report", str(path)],
            "json": [*_cowprobe(), "report", str(path), "--format", "json"]}
    for cmd in argv.values():  # warm-up: caches written, files in the page cache
        subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
    for i in range(repeat):
        order = list(runs) if i % 2 == 0 else list(reversed(runs))
        for name in order:
            t0 = time.perf_counter()
            subprocess.run(argv[name], stdout=subprocess.DEVNULL, check=True)
            runs[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(ts) for name, ts in runs.items()}
    return {
        "path": str(path),
        "interpreter_start_s": round(med["interpreter"], 4),
        **{f"report_{fmt}_s": round(med[fmt], 4) for fmt in ("table", "json")},
        **{f"ratio_{fmt}_to_interpreter": round(med[fmt] / med["interpreter"], 2)
           for fmt in ("table", "json")},
        "target_s": PROCESS_TARGET_S,
        "within_target": max(med["table"], med["json"]) <= PROCESS_TARGET_S,
    }


def _median(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    as_users_run_it()

    per_fs: dict[str, dict[str, float]] = {}
    t0 = time.perf_counter()
    with Lab(kinds=KINDS) as lab:
        build = time.perf_counter() - t0
        for kind in KINDS:
            d = lab.scratch_dir(kind, "bench")
            full = _median(lambda d=d: probe_capabilities(d), args.repeat)  # type: ignore[misc]
            one = _median(lambda d=d: probe_reflink(d), args.repeat)  # type: ignore[misc]
            per_fs[kind] = {"full_report_s": round(full, 4), "reflink_probe_s": round(one, 5),
                            "ratio_full_to_reflink_probe": round(full / one, 1)}
        process = _whole_process(lab.scratch_dir("btrfs", "process"), max(args.repeat, 3))
        t1 = time.perf_counter()
    lab_only = build + (time.perf_counter() - t1)

    sink = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sink):
        code = cli_main(["report", "--lab"])
    lab_report = time.perf_counter() - t0

    worst = max(v["full_report_s"] for v in per_fs.values())
    doc = {
        "benchmark": "report",
        "repeat": args.repeat,
        "filesystems": per_fs,
        "worst_full_report_s": worst,
        "full_report_target_s": REPORT_TARGET_S,
        "full_report_within_target": worst <= REPORT_TARGET_S,
        "whole_process_report": process,
        "report_lab": {
            "exit_code": code,
            "seconds": round(lab_report, 3),
            "peer_lab_build_and_teardown_s": round(lab_only, 3),
            "ratio_to_peer": round(lab_report / lab_only, 2),
            "target_s": LAB_TARGET_S,
            "within_target": lab_report <= LAB_TARGET_S,
        },
    }
    json.dump(doc, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
