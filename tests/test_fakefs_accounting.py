"""The FUSE side's counters tell the truth: a fault counted as injected (and
in its rule's ``hits``) reached the caller's syscall; every other failed
request is absorbed, per rule too -- and ``times=N`` means N errors that
programs saw. Callers are foreign programs (stat, ls, cat) where natural."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import fakefs


def _stat(path: Path) -> str:
    """What ``stat`` said: "ok" or its error message's tail."""
    res = subprocess.run(["stat", "-c", "%s", str(path)], capture_output=True, text=True,
                         check=False)
    return "ok" if res.returncode == 0 else res.stderr.rsplit(": ", 1)[-1].strip()


def _rule(fs: fakefs.FakeFS, rid: int) -> dict[str, Any]:
    [entry] = [f for f in fs.faults() if f["id"] == rid]
    return entry


def _failures(fs: fakefs.FakeFS, rid: int, op: str) -> list[Any]:
    return [r["delivered"] for r in fs.trace()
            if r["rule"] == rid and r["op"] == op and r["errno"] is not None]


def _delta(fs: fakefs.FakeFS, before: dict[str, Any]) -> tuple[int, int, int]:
    after = fs.counters()
    injected, absorbed, unconfirmed = (after[k] - before[k]
                                       for k in ("injected", "absorbed", "unconfirmed"))
    return injected, absorbed, unconfirmed


def test_a_failed_revalidation_carries_the_lookup_fault_to_the_caller(
        fakefs: fakefs.FakeFS) -> None:
    (fakefs.backing / "f").write_text("x")
    rid = fakefs.add_fault("lookup:f:EIO:nth=2")
    fakefs.clear_trace()
    before = fakefs.counters()
    # The first stat's lookup leaves a dentry (entry timeout 0): the second
    # stat's LOOKUP revalidates it. Its failure only drops the dentry; the
    # kernel's fresh LOOKUP right after must fail for stat to see EIO.
    got = [_stat(fakefs.mountpoint / "f") for _ in range(3)]
    assert got == ["ok", "Input/output error", "ok"]
    assert _failures(fakefs, rid, "lookup") == [False, True]
    assert _delta(fakefs, before) == (1, 1, 0)
    entry = _rule(fakefs, rid)
    assert (entry["hits"], entry["absorbed"], entry["unconfirmed"]) == (1, 1, 0)


def test_times_counts_lookup_errors_programs_saw(fakefs: fakefs.FakeFS) -> None:
    (fakefs.backing / "f").write_text("x")
    path = fakefs.mountpoint / "f"
    fd = os.open(path, os.O_RDONLY)  # the kernel keeps the inode: its lookup count stays
    try:
        rid = fakefs.add_fault("lookup:f:EIO:times=3")
        before = fakefs.counters()
        # Adding the rule dropped f's dentry although its node lives on: this
        # LOOKUP is a fresh one, and its error reaches stat.
        assert _stat(path) == "Input/output error"
        # ls's READDIRPLUS hands the kernel a dentry for f again, so the next
        # stat revalidates; the one after looks up afresh.
        subprocess.run(["ls", str(fakefs.mountpoint)], check=True, capture_output=True)
        got = [_stat(path) for _ in range(3)]
    finally:
        os.close(fd)
    assert got == ["Input/output error", "Input/output error", "ok"]
    assert _delta(fakefs, before) == (3, 1, 0)
    entry = _rule(fakefs, rid)
    assert (entry["hits"], entry["absorbed"]) == (3, 1)


def _seed() -> int:
    """A seed for p=0.5 whose first draw passes, second fires, and which
    fires again within the next eight draws."""
    for seed in range(1000):
        rng = random.Random(seed)  # noqa: S311 -- the schedule fakefs replays
        draws = [rng.random() < 0.5 for _ in range(10)]
        if draws[:2] == [False, True] and any(draws[2:]):
            return seed
    raise AssertionError("no seed")


def test_an_absorbed_read_fault_is_no_hit_and_fires_again(fakefs: fakefs.FakeFS) -> None:
    (fakefs.backing / "f").write_bytes(os.urandom(4 << 20))
    path = fakefs.mountpoint / "f"
    rid = fakefs.add_fault(f"read:f:EIO:p=0.5:seed={_seed()}:times=1")
    before = fakefs.counters()
    # One 1 MiB pread is several READ requests: the first passes, the second
    # fails after a partial transfer -- a short count, no error -- and the
    # caller closes without retrying.
    res = subprocess.run(
        [sys.executable, "-c", "import os, sys\nfd = os.open(sys.argv[1], os.O_RDONLY)\n"
         "print(len(os.pread(fd, 1 << 20, 0)))", str(path)],
        capture_output=True, text=True, check=True)
    assert 0 < int(res.stdout) < 1 << 20
    entry = _rule(fakefs, rid)
    assert (entry["hits"], entry["absorbed"]) == (0, 1)
    assert _delta(fakefs, before) == (0, 1, 0)
    # The fault reached nobody and healed with the close: times=1 still owes
    # one error a program sees.
    cat = subprocess.run(["sh", "-c", 'cat "$1" > /dev/null', "sh", str(path)],
                         capture_output=True, text=True, check=False)
    assert cat.returncode != 0 and "Input/output error" in cat.stderr
    entry = _rule(fakefs, rid)
    assert (entry["hits"], entry["absorbed"]) == (1, 1)
    assert _delta(fakefs, before) == (1, 1, 0)


def test_the_kernels_retry_is_traced_as_one_and_a_new_read_is_not(
        fakefs: fakefs.FakeFS) -> None:
    (fakefs.backing / "f").write_bytes(os.urandom(1 << 20))
    # Opened before the rule: page-cache reads, so the kernel reads a
    # readahead window, and after its failure re-reads the one page the
    # caller waits for, inside the same syscall.
    fd = os.open(fakefs.mountpoint / "f", os.O_RDONLY)
    try:
        rid = fakefs.add_fault("read:f:EIO:nth=1")
        fakefs.clear_trace()
        before = fakefs.counters()
        got = []
        # Then two new syscalls at the same offset, each asking less than the
        # window: the same thread, call and offset, but errors of their own.
        for size in (65536, 4096, 4096):
            try:
                os.pread(fd, size, 0)
                got.append("ok")
            except OSError as err:
                got.append(os.strerror(err.errno or 0))
    finally:
        os.close(fd)
    assert got == ["Input/output error"] * 3
    assert _failures(fakefs, rid, "read") == [True, "retry", True, True]
    assert _delta(fakefs, before) == (3, 0, 0)
    assert _rule(fakefs, rid)["hits"] == 1  # one fault, its bad range failing thrice
