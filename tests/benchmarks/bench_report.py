"""Benchmark: the capability report (not a test; run it directly, as root).

    .venv/bin/python tests/benchmarks/bench_report.py [--repeat 5]

Targets (issue 5): a full report of one filesystem <= 0.3 s; `cowprobe
report --lab`, lab creation included, <= 10 s. Each figure comes with a
peer measured in the same process, so the ratio stays meaningful on a
slower machine: the full report against one raw reflink probe
(``probe.probe_reflink``) in the same directory, and `report --lab`
against building and tearing down the same lab with nothing probed.
Prints one JSON document.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import time
from collections.abc import Callable

from probe import probe_reflink
from probe.capabilities import probe_capabilities
from probe.cli import main as cli_main
from probe.lab import KINDS, Lab

REPORT_TARGET_S = 0.3
LAB_TARGET_S = 10.0


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
