"""Benchmark: the cost of the syscall layer (seccomp user notification).

Run as root (it builds its own btrfs lab)::

    .venv/bin/python tests/benchmarks/bench_syscall.py [--rounds 5] [--files 3000] [--out FILE]

Three measurements, each against its peer in the same run:

* ``materialize``: ``cowprobe materialize`` of FILES small files into one
  worktree on btrfs, as whole processes -- plain, and under
  ``fakefs run --fault FICLONE:no-such-name:EXDEV`` (every FICLONE is
  trapped, resolved through /proc, and answered CONTINUE), and under a rule
  on a call it never makes (the fixed cost: ``fakefs run``'s own start-up,
  which a user pays too, the fork, the filter), so the overhead splits into
  that and wall time per trapped call. Rounds are interleaved (alternating
  who goes first) so a noisy neighbour hits every case.
* ``cp``: GNU ``cp -r --reflink=always`` of the same tree, plain and under
  the same ``fakefs run``: a single-threaded foreign program, which waits
  out every round trip in full (the materializer's two worker processes
  overlap theirs), so its per-file difference is the wall-clock cost of a
  trapped call as most programs feel it.
* ``per_call``: in one process, N ``fdatasync`` calls on an empty file
  (a near-free syscall, so the difference is the round trip): plain vs
  inside ``fakefs.syscall_faults`` with a rule that never matches, and with
  no rule at all after a block (the "continue everything" fast path).

Both programs also run under ``peers/notify_floor.c``, compiled here: a
supervisor in C with no interpreter to start that answers every trapped
FICLONE CONTINUE at once (``floor``), and one that first reads the
destination's path from /proc as any supervisor deciding by path must
(``floor_readlink``). They are the floor of the mechanism on this machine:
what ``fakefs`` costs above ``floor_readlink`` is fakefs's own.

Prints one JSON document: medians, the ratio ours/plain for materialize
(issue 13's target: <= 1.5), the floors' ratios, and microseconds per
trapped call.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _whole import as_users_run_it, console_script

import fakefs
from probe.lab import Lab

#: what the program runs under: nothing; a rule on a call it never makes
#: (fakefs run's fixed cost: its start-up, the fork, the filter); a rule on
#: every FICLONE that matches none (each clone trapped and let through)
RULES = {"plain": None, "fixed": "FIDEDUPERANGE:no-such-name:EIO",
         "fakefs": "FICLONE:no-such-name:EXDEV"}

_FLOOR_SOURCE = Path(__file__).with_name("peers") / "notify_floor.c"


def build_floor(into: Path) -> Path:
    """The C peer, compiled for this machine (a compiler is there: pyfuse3
    is built from source on it)."""
    exe = into / "notify_floor"
    subprocess.run(["cc", "-O2", "-o", str(exe), str(_FLOOR_SOURCE), "-lpthread"], check=True)
    return exe


def _wrapped(cmd: list[str], src: Path, rule: str | list[str] | None) -> list[str]:
    # A list is a peer supervisor's own command line (the C floor).
    if isinstance(rule, list):
        return [*rule, *cmd]
    if rule is not None:
        return [*console_script("fakefs", "fakefs.cli"), "run", "--root", str(src.parent),
                "--fault", rule, "--", *cmd]
    return cmd


def _timed(cmd: list[str], src: Path, rule: str | list[str] | None) -> tuple[float, str]:
    cmd = _wrapped(cmd, src, rule)
    subprocess.run(["sync"], check=True)
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {res.stderr[-500:]}")
    return seconds, res.stdout


def _materialize(src: Path, wt: Path, rule: str | list[str] | None) -> float:
    seconds, out = _timed([*console_script("cowprobe", "probe.cli"), "materialize",
                           "--no-progress", "--json", str(src), str(wt)], src, rule)
    cloned = json.loads(out)["totals"]["cloned"]
    shutil.rmtree(wt)
    if cloned == 0:
        raise RuntimeError("nothing cloned: not the case being measured")
    return seconds


def _cp(src: Path, wt: Path, rule: str | list[str] | None) -> float:
    seconds, _ = _timed(["cp", "-r", "--reflink=always", str(src), str(wt)], src, rule)
    shutil.rmtree(wt)
    return seconds


def _calls(path: Path, n: int) -> float:
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        t0 = time.perf_counter()
        for _ in range(n):
            os.fdatasync(fd)
        return time.perf_counter() - t0
    finally:
        os.close(fd)


def per_call(d: Path, n: int, rounds: int) -> dict[str, float]:
    plain, trapped, after = [], [], []
    target = d / "f"
    for _ in range(rounds):
        plain.append(_calls(target, n))
    # From here on this thread is filtered for good (see fakefs/_syscall/_inprocess.py).
    for _ in range(rounds):
        with fakefs.syscall_faults(["fdatasync:no-such-name:EIO"], root=d):
            trapped.append(_calls(target, n))
        after.append(_calls(target, n))
    med = {k: statistics.median(v) for k, v in
           (("plain", plain), ("trapped", trapped), ("after_block", after))}
    return {
        "calls": n,
        "plain_us": med["plain"] / n * 1e6,
        "trapped_us": med["trapped"] / n * 1e6,
        "after_block_us": med["after_block"] / n * 1e6,
        "round_trip_us": (med["trapped"] - med["plain"]) / n * 1e6,
        "fast_path_round_trip_us": (med["after_block"] - med["plain"]) / n * 1e6,
    }


def _split(med: dict[str, float], prefix: str, files: int) -> dict[str, float]:
    """The overhead as fixed cost plus wall time per trapped call, and the
    C floors beside it (they have no fixed cost worth the name)."""
    plain = med[prefix + "plain"]
    fixed = med[prefix + "fixed"] - plain
    return {"fixed_cost_s": fixed, "fixed_ratio": med[prefix + "fixed"] / plain,
            "wall_us_per_trapped_call": (med[prefix + "fakefs"] - med[prefix + "fixed"]) / files
            * 1e6,
            "floor_ratio": med[prefix + "floor"] / plain,
            "floor_readlink_ratio": med[prefix + "floor_readlink"] / plain,
            "floor_readlink_us_per_trapped_call": (med[prefix + "floor_readlink"] - plain)
            / files * 1e6,
            "ours_over_floor_readlink": med[prefix + "fakefs"] / med[prefix + "floor_readlink"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--files", type=int, default=3000)
    ap.add_argument("--calls", type=int, default=20_000)
    ap.add_argument("--out")
    args = ap.parse_args()
    as_users_run_it()
    with Lab(kinds=("btrfs",)) as lab, tempfile.TemporaryDirectory() as peer_dir:
        floor = str(build_floor(Path(peer_dir)))
        wrappers: dict[str, str | list[str] | None] = {
            **RULES, "floor": [floor], "floor_readlink": [floor, "--readlink"]}
        root = lab.scratch_dir("btrfs", "bench-syscall")
        src = root / "src"
        src.mkdir()
        for i in range(args.files):
            (src / f"f{i:05d}").write_bytes(os.urandom(4096 + i % 512))
        runs = {**{k: (_materialize, rule) for k, rule in wrappers.items()},
                **{f"cp_{k}": (_cp, rule) for k, rule in wrappers.items()}}
        times: dict[str, list[float]] = {k: [] for k in runs}
        for r in range(args.rounds):
            for who in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
                run, rule = runs[who]
                times[who].append(run(src, root / "wt", rule))
        med = {k: statistics.median(v) for k, v in times.items()}
        doc = {
            "benchmark": "syscall",
            "materialize": {
                "files": args.files,
                "rounds": args.rounds,
                "plain_median_s": med["plain"],
                "fakefs_median_s": med["fakefs"],
                "ratio": med["fakefs"] / med["plain"],
                "target": 1.5,
                "met": med["fakefs"] / med["plain"] <= 1.5,
                **_split(med, "", args.files),
            },
            "cp": {
                "plain_median_s": med["cp_plain"],
                "fakefs_median_s": med["cp_fakefs"],
                "ratio": med["cp_fakefs"] / med["cp_plain"],
                **_split(med, "cp_", args.files),
            },
            "per_call": per_call(root, args.calls, args.rounds),
        }
    text = json.dumps(doc, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
