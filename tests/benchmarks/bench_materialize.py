"""Benchmark: probe.materialize against `cp -r --reflink` and a reflink-copy loop.

Run as root (it builds its own lab: btrfs, XFS reflink=1, ext4)::

    .venv/bin/python tests/benchmarks/bench_materialize.py [--rounds 3] [--out FILE]

Trees: 10,000 files of 4 KiB (100 directories of 100) and 200 files of 8 MiB,
mirrored into 1 and into 4 worktrees. Peers, timed in the same process and
interleaved round by round (rotating who goes first) so a noisy neighbour
hits all three alike:

* ``cp``: ``cp -r --reflink=always SRC WT`` once per worktree
  (``--reflink=auto`` on ext4, which cannot clone);
* ``reflink_copy``: a Python loop (os.walk, os.makedirs,
  ``reflink_copy.reflink_or_copy`` per file) per worktree;
* ``ours``: what ``cowprobe materialize`` does -- ``plan_mirror`` (the walk)
  and ``materialize`` with default settings.

Each timed run starts after ``sync`` and removes its worktrees afterwards.
Prints one JSON document: per case the median and best seconds of each peer,
ratios ours/cp and ours/reflink_copy (of medians, and of bests), and whether
the issue's targets are met (<= 0.75x cp for 4 worktrees on XFS and btrfs,
<= 1.0x cp otherwise, <= 0.8x the reflink-copy loop everywhere).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import reflink_copy

from probe.lab import Lab
from probe.materialize import materialize
from probe.materialize._tree import plan_mirror

KINDS = ("btrfs", "xfs", "ext4")
TREES = {"small": (10_000, 4096, 100), "large": (200, 8 << 20, 50)}
# Sparse images: only what is written costs disk. ext4 copies for real, so
# it needs room for the source plus four copies of the 1.6 GB tree.
SIZES_MB = {"btrfs": 4096, "xfs": 4096, "ext4": 10240}


def make_tree(root: Path, n: int, size: int, per_dir: int) -> None:
    chunk = os.urandom(size)
    for i in range(n):
        d = root / f"d{i // per_dir:03d}"
        if i % per_dir == 0:
            d.mkdir(parents=True)
        # Distinct content per file (a prefix), so nothing can dedupe.
        (d / f"f{i:05d}.bin").write_bytes(i.to_bytes(8, "little") + chunk[8:])


def run_cp(src: Path, wts: list[Path], kind: str) -> None:
    flag = "--reflink=auto" if kind == "ext4" else "--reflink=always"
    for wt in wts:
        subprocess.run(["cp", "-r", flag, str(src), str(wt)], check=True)


def run_reflink_copy(src: Path, wts: list[Path], kind: str) -> None:
    for wt in wts:
        for dirpath, _dirs, files in os.walk(src):
            out = os.path.join(wt, os.path.relpath(dirpath, src))
            os.makedirs(out, exist_ok=True)
            for f in files:
                reflink_copy.reflink_or_copy(os.path.join(dirpath, f), os.path.join(out, f))


def run_ours(src: Path, wts: list[Path], kind: str) -> None:
    plan = plan_mirror(str(src), [str(w) for w in wts])
    report = materialize(plan.jobs)
    if not report.ok:
        raise RuntimeError(f"materialize failed: {report.failures[:3]}")
    want_clone = kind != "ext4"
    if (report.cloned == len(plan.jobs)) != want_clone:
        raise RuntimeError(f"unexpected outcome on {kind}: {report.to_dict(jobs=False)['totals']}")


PEERS: dict[str, Callable[[Path, list[Path], str], None]] = {
    "cp": run_cp,
    "reflink_copy": run_reflink_copy,
    "ours": run_ours,
}


def timed(fn: Callable[[Path, list[Path], str], None], src: Path, wts: list[Path],
          kind: str) -> float:
    os.sync()
    t = time.perf_counter()
    fn(src, wts, kind)
    elapsed = time.perf_counter() - t
    for wt in wts:
        shutil.rmtree(wt)
    os.sync()
    return elapsed


def target(kind: str, worktrees: int) -> float:
    return 0.75 if kind in ("btrfs", "xfs") and worktrees == 4 else 1.0


def bench(lab: Lab, rounds: int, trees: list[str]) -> list[dict[str, object]]:
    cases: list[dict[str, object]] = []
    for kind in KINDS:
        base = lab.path(kind)
        for tree in trees:
            n, size, per_dir = TREES[tree]
            src = base / f"src-{tree}"
            make_tree(src, n, size, per_dir)
            os.sync()
            for worktrees in (1, 4):
                times: dict[str, list[float]] = {p: [] for p in PEERS}
                names = list(PEERS)
                for r in range(rounds):
                    order = names[r % len(names):] + names[: r % len(names)]
                    for peer in order:
                        wts = [base / f"wt-{peer}-{i}" for i in range(worktrees)]
                        times[peer].append(timed(PEERS[peer], src, wts, kind))
                med = {p: statistics.median(v) for p, v in times.items()}
                best = {p: min(v) for p, v in times.items()}
                case: dict[str, object] = {
                    "fs": kind,
                    "tree": f"{n} x {size // 1024} KiB",
                    "worktrees": worktrees,
                    "seconds_median": {p: round(v, 4) for p, v in med.items()},
                    "seconds_best": {p: round(v, 4) for p, v in best.items()},
                    "seconds_all": {p: [round(x, 4) for x in v] for p, v in times.items()},
                    "ours_vs_cp": round(med["ours"] / med["cp"], 3),
                    "ours_vs_cp_best": round(best["ours"] / best["cp"], 3),
                    "ours_vs_reflink_copy": round(med["ours"] / med["reflink_copy"], 3),
                    "ours_vs_reflink_copy_best": round(best["ours"] / best["reflink_copy"], 3),
                    "reflink_copy_vs_cp": round(med["reflink_copy"] / med["cp"], 3),
                    "target_vs_cp": target(kind, worktrees),
                    "target_vs_reflink_copy": 0.8,
                }
                case["meets_cp_target"] = case["ours_vs_cp"] <= target(kind, worktrees)  # type: ignore[operator]
                case["meets_reflink_copy_target"] = case["ours_vs_reflink_copy"] <= 0.8  # type: ignore[operator]
                print(json.dumps(case), file=sys.stderr, flush=True)
                cases.append(case)
            shutil.rmtree(src)
            os.sync()
    return cases


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--trees", default="small,large", help="comma-separated: small,large")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args()
    started = time.time()
    with Lab(kinds=KINDS, sizes_mb=SIZES_MB) as lab:
        cases = bench(lab, args.rounds, args.trees.split(","))
    doc = {
        "benchmark": "materialize",
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "kernel": os.uname().release,
        "load_average_at_end": os.getloadavg(),
        "wall_seconds": round(time.time() - started, 1),
        "cases": cases,
    }
    text = json.dumps(doc, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
