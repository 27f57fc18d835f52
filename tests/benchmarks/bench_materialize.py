"""Benchmark: a whole `cowprobe materialize` process against GNU cp.

Run as root (it builds its own lab: btrfs, XFS reflink=1, ext4, unless
``--dirs`` names existing directories)::

    .venv/bin/python tests/benchmarks/bench_materialize.py [--rounds 3] [--out FILE]

Trees: 10,000 files of 4 KiB (100 directories of 100) and 200 files of 8 MiB,
mirrored into 1 and into 4 worktrees. Every peer is a whole process (what a
user runs, start-up included), timed in one run, interleaved round by round
with the order rotating so a noisy neighbour hits all peers alike:

* ``cp``: ``cp -r --reflink=always SRC WT`` once per worktree, one after the
  other (``--reflink=auto`` on ext4, which cannot clone);
* ``cp_parallel``: the same cp, two at a time (``xargs -P2``): one cp per
  worktree, or per top-level directory for a single worktree;
* ``reflink_copy``: a Python process looping os.walk / os.makedirs /
  ``reflink_copy.reflink_or_copy`` per worktree;
* ``ours``: ``cowprobe materialize --no-progress SRC WT...`` (default workers),
  plus ``ours_w1``/``ours_w2``... for each ``--workers`` count asked for,
  and ``ours_p1``... for each ``--processes`` count.

Each timed run starts after ``sync`` and removes its worktrees afterwards.
Prints one JSON document: per case the median, min and max seconds of each
peer (plus user/sys CPU of the median run), ratios of medians against cp and
parallel cp with their min-max spread (ours' fastest over cp's slowest, and
the reverse), the issue's targets and whether they are met; and
``strace -f -c`` syscall counts per file for ours and cp (1 worktree, small
tree) on each filesystem.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from _whole import as_users_run_it, console_script

KINDS = ("btrfs", "xfs", "ext4")
TREES = {"small": (10_000, 4096, 100), "large": (200, 8 << 20, 50)}
# Sparse images: only what is written costs disk. ext4 copies for real, so
# it needs room for the source plus four copies of the 1.6 GB tree.
SIZES_MB = {"btrfs": 4096, "xfs": 4096, "ext4": 10240}
COWPROBE = console_script("cowprobe", "probe.cli")
_REFLINK_COPY_LOOP = """
import os, sys, reflink_copy
src, wts = sys.argv[1], sys.argv[2:]
for wt in wts:
    for dirpath, _dirs, files in os.walk(src):
        out = os.path.join(wt, os.path.relpath(dirpath, src))
        os.makedirs(out, exist_ok=True)
        for f in files:
            reflink_copy.reflink_or_copy(os.path.join(dirpath, f), os.path.join(out, f))
"""

Command = Callable[[Path, list[Path], str], list[str]]


def make_tree(root: Path, n: int, size: int, per_dir: int) -> None:
    chunk = os.urandom(size)
    for i in range(n):
        d = root / f"d{i // per_dir:03d}"
        if i % per_dir == 0:
            d.mkdir(parents=True)
        # Distinct content per file (a prefix), so nothing can dedupe.
        (d / f"f{i:05d}.bin").write_bytes(i.to_bytes(8, "little") + chunk[8:])


def _flag(kind: str) -> str:
    return "--reflink=auto" if kind == "ext4" else "--reflink=always"


def cmd_cp(src: Path, wts: list[Path], kind: str) -> list[str]:
    script = " && ".join(f"cp -r {_flag(kind)} {shlex.quote(str(src))} {shlex.quote(str(w))}"
                         for w in wts)
    return ["sh", "-c", script]


def cmd_cp_parallel(src: Path, wts: list[Path], kind: str) -> list[str]:
    # Two cp processes at a time: one per worktree, or for one worktree one
    # per top-level directory (what a user would script with xargs -P2).
    q = shlex.quote
    if len(wts) > 1:
        feed = " ".join(q(str(w)) for w in wts)
        body = f"printf '%s\\n' {feed} | xargs -P2 -I{{}} cp -r {_flag(kind)} {q(str(src))} {{}}"
    else:
        w = q(str(wts[0]))
        body = (f"mkdir {w} && cd {q(str(src))} && ls -A | "
                f"xargs -P2 -I{{}} cp -r {_flag(kind)} {{}} {w}/")
    return ["sh", "-c", body]


def cmd_reflink_copy(src: Path, wts: list[Path], kind: str) -> list[str]:
    return [sys.executable, "-c", _REFLINK_COPY_LOOP, str(src), *map(str, wts)]


def cmd_ours(*extra: str) -> Command:
    def cmd(src: Path, wts: list[Path], kind: str) -> list[str]:
        return [*COWPROBE, "materialize", "--no-progress", *extra, str(src), *map(str, wts)]
    return cmd


def timed(argv: list[str], wts: list[Path]) -> tuple[float, float, float]:
    """Wall, user and sys seconds of one whole process (and its children)."""
    os.sync()
    before = os.times()
    t = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    elapsed = time.perf_counter() - t
    after = os.times()
    for wt in wts:
        shutil.rmtree(wt)
    os.sync()
    return (elapsed, after.children_user - before.children_user,
            after.children_system - before.children_system)


def target_vs_cp(kind: str, tree: str, worktrees: int) -> float:
    return 0.75 if kind in ("btrfs", "xfs") and tree == "small" and worktrees == 4 else 1.0


def syscalls(argv: list[str], wts: list[Path], files: int) -> dict[str, float]:
    """strace -f -c of one run: syscalls per file, in total and the top ones."""
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        subprocess.run(["strace", "-f", "-c", "-o", out.name, *argv], check=True,
                       stdout=subprocess.DEVNULL)
        text = out.read()
    for wt in wts:
        shutil.rmtree(wt)
    counts: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$", line)
        if m:
            counts[m.group(2)] = int(m.group(1))
    per_file = {k: round(v / files, 2) for k, v in sorted(counts.items(), key=lambda kv: -kv[1])
                if k != "total" and v >= files // 10}
    return {"total": round(counts.get("total", 0) / files, 2), **per_file}


def bench(base: dict[str, Path], rounds: int, trees: list[str], peers: dict[str, Command],
          strace: bool) -> tuple[list[dict[str, object]], dict[str, object]]:
    cases: list[dict[str, object]] = []
    counts: dict[str, object] = {}
    for kind, root in base.items():
        for tree in trees:
            n, size, per_dir = TREES[tree]
            src = root / f"bench-src-{tree}"
            make_tree(src, n, size, per_dir)
            os.sync()
            try:
                if strace and tree == "small" and shutil.which("strace"):
                    wts = [root / "bench-strace"]
                    counts[kind] = {p: syscalls(peers[p](src, wts, kind), wts, n)
                                    for p in ("cp", "ours")}
                    print(json.dumps({"syscalls_per_file": {kind: counts[kind]}}),
                          file=sys.stderr, flush=True)
                for worktrees in (1, 4):
                    cases.append(_case(kind, tree, n, size, worktrees, src=src, rounds=rounds,
                                       peers=peers))
                    print(json.dumps(cases[-1]), file=sys.stderr, flush=True)
            finally:
                shutil.rmtree(src, ignore_errors=True)
                os.sync()
    return cases, counts


def _case(kind: str, tree: str, n: int, size: int, worktrees: int, *, src: Path, rounds: int,
          peers: dict[str, Command]) -> dict[str, object]:
    runs: dict[str, list[tuple[float, float, float]]] = {p: [] for p in peers}
    names = list(peers)
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for peer in order:
            wts = [src.parent / f"bench-wt-{peer}-{i}" for i in range(worktrees)]
            runs[peer].append(timed(peers[peer](src, wts, kind), wts))
    wall = {p: sorted(x[0] for x in v) for p, v in runs.items()}
    med = {p: statistics.median(v) for p, v in wall.items()}

    def cpu(p: str) -> dict[str, float]:
        mid = sorted(runs[p])[len(runs[p]) // 2]
        return {"user": round(mid[1], 3), "sys": round(mid[2], 3)}

    def ratio(a: str, b: str) -> dict[str, float]:
        return {"median": round(med[a] / med[b], 3),
                "min": round(wall[a][0] / wall[b][-1], 3),
                "max": round(wall[a][-1] / wall[b][0], 3)}

    want = target_vs_cp(kind, tree, worktrees)
    case: dict[str, object] = {
        "fs": kind,
        "tree": f"{n} x {size // 1024} KiB",
        "worktrees": worktrees,
        "seconds_median": {p: round(v, 4) for p, v in med.items()},
        "seconds_all": {p: [round(x, 4) for x in v] for p, v in wall.items()},
        "cpu_of_median_run": {p: cpu(p) for p in peers},
        "ours_vs_cp": ratio("ours", "cp"),
        "ours_vs_cp_parallel": ratio("ours", "cp_parallel"),
        "ours_vs_reflink_copy": ratio("ours", "reflink_copy"),
        "target_vs_cp": want,
    }
    met = med["ours"] / med["cp"] <= want
    if kind != "ext4" and tree == "small" and worktrees == 4:
        case["target_vs_cp_parallel"] = 1.0
        met = met and med["ours"] <= med["cp_parallel"]
    case["meets_target"] = met
    return case


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--trees", default="small,large", help="comma-separated: small,large")
    ap.add_argument("--kinds", default=",".join(KINDS), help="comma-separated filesystems")
    ap.add_argument("--workers", default="", help="also run ours with these --workers, e.g. 1,2")
    ap.add_argument("--processes", default="",
                    help="also run ours with these --processes, e.g. 1,2")
    ap.add_argument("--dirs", default="", help="KIND=DIR,... existing directories instead of a lab")
    ap.add_argument("--no-strace", action="store_true", help="skip the syscall counts")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = ap.parse_args()
    as_users_run_it()
    kinds = args.kinds.split(",")
    peers: dict[str, Command] = {"cp": cmd_cp, "cp_parallel": cmd_cp_parallel,
                                 "reflink_copy": cmd_reflink_copy, "ours": cmd_ours()}
    for w in filter(None, args.workers.split(",")):
        peers[f"ours_w{int(w)}"] = cmd_ours("--workers", str(int(w)))
    for p in filter(None, args.processes.split(",")):
        peers[f"ours_p{int(p)}"] = cmd_ours("--processes", str(int(p)))
    started = time.time()
    with ExitStack() as stack:
        if args.dirs:
            base = {k: Path(v) for k, v in (kv.split("=", 1) for kv in args.dirs.split(","))}
        else:
            from probe.lab import Lab

            lab = stack.enter_context(Lab(kinds=kinds, sizes_mb=SIZES_MB))
            base = {k: lab.path(k) for k in kinds}
        cases, counts = bench(base, args.rounds, args.trees.split(","), peers,
                              not args.no_strace)
    doc = {
        "benchmark": "materialize (whole processes)",
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "kernel": os.uname().release,
        "load_average_at_end": os.getloadavg(),
        "wall_seconds": round(time.time() - started, 1),
        "syscalls_per_file": counts,
        "cases": cases,
    }
    text = json.dumps(doc, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
