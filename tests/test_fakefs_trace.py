"""The trace and the counters say what happened, and only that."""

from __future__ import annotations

import errno
import functools
import os
from pathlib import Path

from _fakefs_util import errno_of

import fakefs


def test_counters_and_trace_match_what_happened(fakefs: fakefs.FakeFS) -> None:
    (fakefs.backing / "big.bin").write_bytes(os.urandom(64 * 1024))
    rid = fakefs.add_fault("read:big.bin:EIO:nth=3")
    fakefs.clear_trace()
    before = fakefs.counters()
    fd = os.open(fakefs.mountpoint / "big.bin", os.O_RDONLY)
    try:
        results = [errno_of(functools.partial(os.pread, fd, 4096, off)) for off in
                   (0, 4096, 8192, 12288)]
    finally:
        os.close(fd)
    assert results == [None, None, errno.EIO, None]
    reads = [r for r in fakefs.trace() if r["op"] == "read"]
    assert [(r["result"], r["errno"], r["rule"]) for r in reads] == [
        ("ok", None, None), ("ok", None, None), ("EIO", errno.EIO, rid), ("ok", None, None)
    ]
    assert {r["pid"] for r in reads} == {os.getpid()}
    assert [r["seq"] for r in reads] == sorted(r["seq"] for r in reads)
    after = fakefs.counters()
    assert after["ops"]["read"] - before["ops"].get("read", 0) == 4
    assert after["errors"]["read"] - before["errors"].get("read", 0) == 1
    assert after["injected"] - before["injected"] == 1
    assert after["rules"] == {str(rid): 1}
    [entry] = fakefs.faults()
    assert (entry["hits"], entry["matches"]) == (1, 4)
    lines = fakefs.trace_jsonl().splitlines()
    assert len(lines) == len(fakefs.trace())


def test_trace_is_bounded_but_counters_are_not(tmp_path: Path) -> None:
    from probe.pytest_plugin import require_fakefs

    require_fakefs()
    backing, mnt = tmp_path / "b", tmp_path / "m"
    backing.mkdir()
    mnt.mkdir()
    (backing / "f").write_text("x")
    with fakefs.mount(backing, mnt, trace_limit=5) as fs:
        for _ in range(10):
            fd = os.open(mnt / "f", os.O_RDONLY)
            os.close(fd)
        trace = fs.trace()
        counters = fs.counters()
        assert len(trace) == 5
        assert counters["ops"]["open"] == 10
        assert counters["total"] > 5
        # RELEASE arrives asynchronously after close(); compare only what
        # the kernel forwards synchronously.
        assert trace[-1]["seq"] > 5


def test_trace_names_errnos_as_rules_do(fakefs: fakefs.FakeFS) -> None:
    # Python's errno table names 95 ENOTSUP; a trace must say EOPNOTSUPP,
    # the name the rule was written with and the kernel uses.
    (fakefs.backing / "x").write_text("x\n")
    rid = fakefs.add_fault("getxattr:x:EOPNOTSUPP")
    assert errno_of(lambda: os.getxattr(fakefs.mountpoint / "x", "user.k")) == errno.EOPNOTSUPP
    fired = [r["result"] for r in fakefs.trace() if r["rule"] == rid]
    assert fired == ["EOPNOTSUPP"]


def test_trace_records_say_when_where_who_and_whether_it_arrived(
        fakefs: fakefs.FakeFS) -> None:
    import time

    (fakefs.backing / "f").write_bytes(b"x" * 8192)
    rid = fakefs.add_fault("read:f:EIO:nth=2")
    fakefs.clear_trace()
    start = time.time()
    fd = os.open(fakefs.mountpoint / "f", os.O_RDONLY)
    try:
        assert os.pread(fd, 100, 0) == b"x" * 100
        assert errno_of(functools.partial(os.pread, fd, 50, 4096)) == errno.EIO
    finally:
        os.close(fd)
    os.rename(fakefs.mountpoint / "f", fakefs.mountpoint / "g")
    trace = fakefs.trace()
    reads = [r for r in trace if r["op"] == "read"]
    assert [(r["offset"], r["length"], r["result"]) for r in reads] == [
        (0, 100, "ok"), (4096, 50, "EIO")]
    assert reads[1]["rule"] == rid and reads[1]["delivered"] is True
    assert reads[0]["delivered"] is None
    [rename] = [r for r in trace if r["op"] == "rename"]
    assert (rename["path"], rename["target"]) == ("f", "g")
    with open(f"/proc/{os.getpid()}/comm") as f:
        me = f.read().strip()
    assert {(r["pid"], r["process"]) for r in [*reads, rename]} == {(os.getpid(), me)}
    assert all(start - 1 <= r["time"] <= time.time() + 1 for r in trace)
    assert [r["time"] for r in trace] == sorted(r["time"] for r in trace)
    assert fakefs.counters()["injected"] == 1


def test_a_busy_pid_keeps_its_name_when_the_name_cache_overflows() -> None:
    from fakefs._trace import _COMM_CACHE, Trace

    with open("/proc/self/comm", encoding="utf-8") as f:
        me = f.read().rstrip("\n")
    # Above any pid_max (at most 2**22): no /proc entry, so no name to read.
    gone = iter(range(2**30, 2**31))
    trace = Trace(limit=2)
    trace.record("getattr", "f", os.getpid(), None, None)
    for _ in range(_COMM_CACHE - 1):
        trace.record("getattr", "f", next(gone), None, None)
    trace.record("getattr", "f", os.getpid(), None, None)
    # The cache is full: this pid's name takes a place, and ours must stay.
    trace.record("getattr", "f", next(gone), None, None)
    assert [r["process"] for r in trace.records()] == [me, ""]
