"""Triggers (times=, nth=, p=, pid=), actions (short=, delay=) and rules
armed at run time, each observed through the real kernel."""

from __future__ import annotations

import errno
import os
import subprocess

from _fakefs_util import child_errno, errno_of

import fakefs


def test_times_limits_the_hits(fakefs: fakefs.FakeFS) -> None:
    (fakefs.backing / "a.tmp").write_text("x")
    fakefs.add_fault("open,create:*.tmp:EIO:times=2")
    path = fakefs.mountpoint / "a.tmp"
    got = [errno_of(lambda: open(path).close()) for _ in range(3)]
    assert got == [errno.EIO, errno.EIO, None]
    new = fakefs.mountpoint / "b.tmp"
    assert errno_of(lambda: open(new, "w").close()) is None


def _schedule(fs: fakefs.FakeFS, rule: str) -> list[bool]:
    rid = fs.add_fault(rule)
    fd = os.open(fs.mountpoint / "f", os.O_RDONLY)
    try:
        out = [errno_of(lambda: os.pread(fd, 16, 0)) == errno.EIO for _ in range(40)]
    finally:
        os.close(fd)
    fs.remove_fault(rid)
    return out


def test_seeded_probability_gives_the_same_schedule_twice(fakefs: fakefs.FakeFS) -> None:
    (fakefs.backing / "f").write_text("data" * 10)
    first = _schedule(fakefs, "read:f:EIO:p=0.5:seed=7")
    second = _schedule(fakefs, "read:f:EIO:p=0.5:seed=7")
    other = _schedule(fakefs, "read:f:EIO:p=0.5:seed=8")
    assert first == second
    assert any(first) and not all(first)
    assert other != first


def test_unseeded_probability_reports_its_seed(fakefs: fakefs.FakeFS) -> None:
    (fakefs.backing / "f").write_text("data")
    rid = fakefs.add_fault("read:f:EIO:p=0.5")
    [entry] = fakefs.faults()
    assert entry["id"] == rid and isinstance(entry["seed"], int)


def test_rule_added_at_runtime_beats_the_kernel_caches(fakefs: fakefs.FakeFS) -> None:
    for name in ("r", "g", "l"):
        (fakefs.backing / name).write_text(name * 100)
    mnt = fakefs.mountpoint
    for name in ("r", "g", "l"):
        assert (mnt / name).read_text() == name * 100
        os.stat(mnt / name)
    # Prove the caches are live: a repeat stat and read ask the daemon nothing.
    fakefs.clear_trace()
    os.stat(mnt / "g")
    os.stat(mnt / "l")
    fd = os.open(mnt / "r", os.O_RDONLY)
    assert os.read(fd, 1000) == b"r" * 100
    os.close(fd)
    ops = {(r["op"], r["path"]) for r in fakefs.trace()}
    assert not ops & {("lookup", "g"), ("getattr", "g"), ("lookup", "l"), ("read", "r")}

    fakefs.add_fault("read:r:EIO")
    fakefs.add_fault("getattr:g:EIO")
    fakefs.add_fault("lookup:l:EIO")
    assert errno_of((mnt / "r").read_text) == errno.EIO
    assert errno_of(lambda: os.stat(mnt / "g")) == errno.EIO
    assert errno_of(lambda: os.stat(mnt / "l")) == errno.EIO
    cat = subprocess.run(["cat", str(mnt / "r")], capture_output=True, check=False)
    assert cat.returncode == 1
    fakefs.clear_faults()
    assert (mnt / "r").read_text() == "r" * 100
    assert os.stat(mnt / "g").st_size == 100


def test_rule_on_an_already_open_file_takes_effect(fakefs: fakefs.FakeFS) -> None:
    (fakefs.backing / "f").write_bytes(b"z" * 8192)
    fd = os.open(fakefs.mountpoint / "f", os.O_RDONLY)
    try:
        assert os.pread(fd, 8192, 0) == b"z" * 8192  # now in the page cache
        fakefs.add_fault("read:f:EIO")
        assert errno_of(lambda: os.pread(fd, 8192, 0)) == errno.EIO
    finally:
        os.close(fd)


def test_short_read_reaches_the_caller(fakefs: fakefs.FakeFS) -> None:
    (fakefs.backing / "f").write_bytes(b"abcdef")
    fakefs.add_fault("read:f:short=2")
    fd = os.open(fakefs.mountpoint / "f", os.O_RDONLY)
    try:
        assert os.read(fd, 6) == b"ab"
        assert os.read(fd, 6) == b"cd"
    finally:
        os.close(fd)
    assert fakefs.counters()["shortened"] == 2


def test_short_write_reaches_the_caller(fakefs: fakefs.FakeFS) -> None:
    (fakefs.backing / "f").write_bytes(b"")
    fakefs.add_fault("write:f:short=3")
    fd = os.open(fakefs.mountpoint / "f", os.O_WRONLY)
    try:
        assert os.write(fd, b"abcdef") == 3
    finally:
        os.close(fd)
    assert (fakefs.backing / "f").read_bytes() == b"abc"


def test_delay_counts_and_still_succeeds(fakefs: fakefs.FakeFS) -> None:
    (fakefs.backing / "f").write_text("slow")
    rid = fakefs.add_fault("open:f:delay=1ms")
    assert (fakefs.mountpoint / "f").read_text() == "slow"
    assert fakefs.counters()["delayed"] == 1
    assert [r["result"] for r in fakefs.trace() if r["rule"] == rid] == ["ok"]


def test_pid_trigger_hits_only_that_caller(fakefs: fakefs.FakeFS) -> None:
    (fakefs.backing / "f").write_text("x")
    fakefs.add_fault(f"open:f:EIO:pid={os.getpid()}")
    path = fakefs.mountpoint / "f"
    assert errno_of(lambda: open(path).close()) == errno.EIO
    assert child_errno("open(sys.argv[1]).close()", str(path)) is None


def test_rule_follows_a_file_whose_directory_was_renamed(fakefs: fakefs.FakeFS) -> None:
    (fakefs.backing / "old").mkdir()
    (fakefs.backing / "old" / "f").write_text("data")
    fakefs.add_fault("open:new/f:EIO")
    mnt = fakefs.mountpoint
    assert (mnt / "old" / "f").read_text() == "data"  # known, untargeted, cached
    os.rename(mnt / "old", mnt / "new")
    assert errno_of((mnt / "new" / "f").read_text) == errno.EIO
    assert [r["path"] for r in fakefs.trace() if r["errno"] == errno.EIO] == ["new/f"]
