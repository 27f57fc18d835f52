"""fakefs benchmark: mount latency, small-file open/read/close, sequential read.

Runs fakefs (no rules; 100 rules armed on other paths) against the backing
directory itself and against pyfuse3's own example passthrough filesystem
(examples/passthroughfs.py from the pyfuse3 source distribution, fetched
into a temporary directory at run time and never kept), all in one run.
Prints one JSON object with timings and the ratios
fakefs / pyfuse3-example (higher is better for fakefs).

    .venv/bin/python tests/benchmarks/bench_fakefs.py [--files 2000] [--big-mib 512]

Targets (issue 3): mount+unmount <= 0.3 s; small files >= 2x the example;
sequential read >= 1x the example.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import select
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import fakefs
from fakefs._mounts import find_mount, unmount

SMALL = 4096
CHUNK = 1 << 20


def _fetch_example(workdir: Path) -> Path:
    import pyfuse3

    version = getattr(pyfuse3, "__version__", "")
    spec = f"pyfuse3=={version}" if version and version != "unknown" else "pyfuse3"
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
         "--quiet", spec, "-d", str(workdir)],
        check=True,
    )
    [sdist] = glob.glob(str(workdir / "pyfuse3-*.tar.gz"))
    with tarfile.open(sdist) as tar:
        member = next(m for m in tar.getmembers()
                      if m.name.endswith("examples/passthroughfs.py"))
        data = tar.extractfile(member)
        assert data is not None
        out = workdir / "passthroughfs.py"
        out.write_bytes(data.read())
    return out


def _wait_mounted(mnt: Path, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Block until ``mnt`` is a FUSE mount that answers (mount-table events)."""
    deadline = time.monotonic() + timeout
    with open("/proc/self/mountinfo", "rb") as f:
        poller = select.poll()
        poller.register(f, select.POLLPRI | select.POLLERR)
        while True:
            info = find_mount(mnt)
            if info is not None and info.fstype.startswith("fuse"):
                break
            if proc.poll() is not None:
                raise RuntimeError(f"peer exited with {proc.returncode} before mounting")
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError("peer did not mount")
            poller.poll(left * 1000)
            f.seek(0)
            f.read()
    os.stat(mnt)  # blocks until the daemon has answered INIT


@contextlib.contextmanager
def _example_mount(script: Path, backing: Path, mnt: Path) -> Iterator[float]:
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(script), str(backing), str(mnt)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_mounted(mnt, proc)
        yield time.perf_counter() - start
    finally:
        info = find_mount(mnt)
        if info is not None and info.fstype.startswith("fuse"):
            subprocess.run(["fusermount3", "-u", str(mnt)], check=False)
            if find_mount(mnt) is not None:
                subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=False)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _small_files(root: Path, n: int) -> list[str]:
    paths = [str(root / "small" / f"f{i:05d}") for i in range(n)]
    return paths


def _open_read_close(paths: list[str]) -> float:
    start = time.perf_counter()
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        os.read(fd, SMALL * 2)
        os.close(fd)
    return time.perf_counter() - start


def _seq_read(path: str) -> float:
    start = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        while os.read(fd, CHUNK):
            pass
    finally:
        os.close(fd)
    return time.perf_counter() - start


def _measure(root: Path, n: int, rounds: int) -> dict[str, float]:
    paths = _small_files(root, n)
    big = str(root / "big.bin")
    first_small = _open_read_close(paths)
    small = min(_open_read_close(paths) for _ in range(rounds))
    first_big = _seq_read(big)
    seq = min(_seq_read(big) for _ in range(rounds))
    return {"small_first_s": first_small, "small_s": small, "seq_first_s": first_big,
            "seq_s": seq}


def _best(fn: Callable[[], float], rounds: int) -> float:
    return min(fn() for _ in range(rounds))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--big-mib", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--mounts", type=int, default=10)
    ap.add_argument("--dir", default=None, help="where to put the data (default: a temp dir)")
    ap.add_argument("--example", default=None,
                    help="an already fetched passthroughfs.py (default: fetch the sdist)")
    opts = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-fakefs-", dir=opts.dir))
    try:
        script = Path(opts.example) if opts.example else _fetch_example(work / "sdist")
        backing = work / "backing"
        (backing / "small").mkdir(parents=True)
        for i in range(opts.files):
            (backing / "small" / f"f{i:05d}").write_bytes(os.urandom(SMALL))
        with open(backing / "big.bin", "wb") as f:
            block = os.urandom(CHUNK)
            for _ in range(opts.big_mib):
                f.write(block)
        mnt = work / "mnt"
        mnt.mkdir()
        size_mb = opts.big_mib * CHUNK / 1e6
        rounds = opts.rounds

        results: dict[str, dict[str, float]] = {}
        results["backing"] = _measure(backing, opts.files, rounds)

        def example_cycle() -> float:
            start = time.perf_counter()
            with _example_mount(script, backing, mnt):
                pass
            return time.perf_counter() - start

        def fakefs_cycle() -> float:
            start = time.perf_counter()
            with fakefs.mount(backing, mnt):
                pass
            return time.perf_counter() - start

        mount_example = sorted(example_cycle() for _ in range(opts.mounts))
        mount_fakefs = sorted(fakefs_cycle() for _ in range(opts.mounts))

        with _example_mount(script, backing, mnt):
            results["example"] = _measure(mnt, opts.files, rounds)
        with fakefs.mount(backing, mnt):
            results["fakefs"] = _measure(mnt, opts.files, rounds)
        rules = [f"open,read,lookup,getattr:elsewhere/f{i}:EIO" for i in range(100)]
        with fakefs.mount(backing, mnt, faults=rules):
            results["fakefs_100_rules"] = _measure(mnt, opts.files, rounds)

        def ratios(name: str) -> dict[str, float]:
            ours, peer = results[name], results["example"]
            return {
                "small_files_x_example": peer["small_s"] / ours["small_s"],
                "small_files_first_pass_x_example": peer["small_first_s"] / ours["small_first_s"],
                "seq_read_x_example": peer["seq_s"] / ours["seq_s"],
                "seq_read_first_pass_x_example": peer["seq_first_s"] / ours["seq_first_s"],
                "small_files_x_backing": results["backing"]["small_s"] / ours["small_s"],
                "seq_read_x_backing": results["backing"]["seq_s"] / ours["seq_s"],
            }

        report = {
            "files": opts.files,
            "big_mib": opts.big_mib,
            "mount_unmount_s": {
                "fakefs_median": mount_fakefs[len(mount_fakefs) // 2],
                "fakefs_max": mount_fakefs[-1],
                "example_median": mount_example[len(mount_example) // 2],
                "target_s": 0.3,
            },
            "small_files_ops_per_s": {k: opts.files / v["small_s"] for k, v in results.items()},
            "seq_read_MB_per_s": {k: size_mb / v["seq_s"] for k, v in results.items()},
            "seconds": results,
            "ratios": {"fakefs": ratios("fakefs"), "fakefs_100_rules": ratios("fakefs_100_rules"),
                       "mount_unmount_x_example": mount_example[len(mount_example) // 2]
                       / mount_fakefs[len(mount_fakefs) // 2]},
        }
        print(json.dumps(report, indent=2, sort_keys=True))
    finally:
        info = find_mount(work / "mnt")
        if info is not None and info.fstype.startswith("fuse"):
            unmount(work / "mnt")
            subprocess.run(["fusermount3", "-u", "-z", str(work / "mnt")], check=False,
                           capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
