"""fakefs through the real kernel: every fault observed with real syscalls
(and external programs) from processes other than the daemon."""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import fakefs
from fakefs._mounts import find_mount

MARK = errno.EHOSTDOWN  # an errno no passthrough operation here produces by itself
MARK_NAME = "EHOSTDOWN"


def _errno_of(fn: Callable[[], object]) -> int | None:
    try:
        fn()
    except OSError as err:
        return err.errno
    return None


def _child_errno(code: str, *args: str) -> int | None:
    """Run ``code`` in a fresh process; the errno it died with (None: ok)."""
    wrapped = (
        "import os, sys\n"
        "try:\n"
        + "".join(f"    {line}\n" for line in code.splitlines())
        + "except OSError as e:\n    print(e.errno)\nelse:\n    print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", wrapped, *args], capture_output=True,
                         text=True, check=True).stdout.strip()
    return None if out == "ok" else int(out)


def _populate(root: Path) -> None:
    (root / "dir").mkdir()
    (root / "dir" / "inner").write_text("inner\n")
    (root / "emptydir").mkdir()
    for name in ("target", "other"):
        (root / name).write_bytes(b"x" * 10000)
        os.setxattr(root / name, "user.k", b"v")
    os.symlink("target", root / "link")
    os.symlink("other", root / "otherlink")


# op -> (path the rule targets, the syscall as Python code over argv[1]
#        (the target) -- run once on the target and once on a twin that
#        no rule matches, argv[1] is then the twin)
CASES: dict[str, tuple[str, str, str]] = {
    "lookup": ("target", "other", "os.stat(sys.argv[1])"),
    "getattr": ("target", "other", "os.stat(sys.argv[1])"),
    "open": ("target", "other", "os.close(os.open(sys.argv[1], os.O_RDONLY))"),
    "read": ("target", "other", "fd = os.open(sys.argv[1], os.O_RDONLY)\nos.read(fd, 100)"),
    "write": ("target", "other", "fd = os.open(sys.argv[1], os.O_WRONLY)\nos.write(fd, b'y')"),
    "flush": ("target", "other", "fd = os.open(sys.argv[1], os.O_RDONLY)\nos.close(fd)"),
    "fsync": ("target", "other", "fd = os.open(sys.argv[1], os.O_RDONLY)\nos.fsync(fd)"),
    "setattr": ("target", "other", "os.chmod(sys.argv[1], 0o600)"),
    "readlink": ("link", "otherlink", "os.readlink(sys.argv[1])"),
    "unlink": ("target", "other", "os.unlink(sys.argv[1])"),
    "rename": ("target", "other", "os.rename(sys.argv[1], sys.argv[1] + '.moved')"),
    "link": ("target.hard", "other.hard",
             "os.link(sys.argv[1].replace('.hard', ''), sys.argv[1])"),
    "create": ("new.tmp", "new.other",
               "os.close(os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY, 0o644))"),
    "mknod": ("fifo", "otherfifo", "os.mkfifo(sys.argv[1])"),
    "mkdir": ("newdir", "otherdir", "os.mkdir(sys.argv[1])"),
    "symlink": ("sym", "othersym", "os.symlink('target', sys.argv[1])"),
    "rmdir": ("emptydir", "dir/sub", "os.rmdir(sys.argv[1])"),
    "opendir": ("dir", "emptydir", "os.listdir(sys.argv[1])"),
    "readdir": ("dir", "emptydir", "os.listdir(sys.argv[1])"),
    "fsyncdir": ("dir", "emptydir",
                 "fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)\nos.fsync(fd)"),
    "setxattr": ("target", "other", "os.setxattr(sys.argv[1], 'user.k', b'w')"),
    "getxattr": ("target", "other", "os.getxattr(sys.argv[1], 'user.k')"),
    "listxattr": ("target", "other", "os.listxattr(sys.argv[1])"),
    "removexattr": ("target", "other", "os.removexattr(sys.argv[1], 'user.k')"),
}


@pytest.mark.parametrize("op", sorted(CASES))
def test_errno_injected_on_its_operation_only(fakefs: fakefs.FakeFS, op: str) -> None:
    target, twin, code = CASES[op]
    _populate(fakefs.backing)
    if op == "rmdir":
        (fakefs.backing / "dir" / "sub").mkdir()
    mnt = fakefs.mountpoint
    rid = fakefs.add_fault(f"{op}:{target}:{MARK_NAME}")
    fakefs.clear_trace()

    assert _child_errno(code, str(mnt / target)) == MARK
    # The same syscall on a path the rule does not match is untouched.
    assert _child_errno(code, str(mnt / twin)) is None

    trace = fakefs.trace()
    failed = [r for r in trace if r["errno"] == MARK]
    assert failed, trace
    # Nowhere else: every MARK failure is this operation on this path and
    # was the rule's doing (other failures are the kernel's own ENOENT
    # lookups before a create).
    assert {(r["op"], r["path"], r["rule"]) for r in failed} == {(op, target, rid)}
    assert all(r["rule"] is None for r in trace if r["errno"] not in (None, MARK))
    [entry] = fakefs.faults()
    assert entry["hits"] == len(failed) >= 1


def test_statfs_errno(fakefs: fakefs.FakeFS) -> None:
    fakefs.add_fault(f"statfs:.:{MARK_NAME}")
    assert _child_errno("os.statvfs(sys.argv[1])", str(fakefs.mountpoint)) == MARK
    assert _child_errno("os.stat(sys.argv[1])", str(fakefs.mountpoint)) is None


def test_cat_and_cp_see_the_injected_errno(fakefs: fakefs.FakeFS) -> None:
    (fakefs.backing / "blobs").mkdir()
    (fakefs.backing / "blobs" / "a").write_text("a\n")
    (fakefs.backing / "plain").write_text("plain\n")
    fakefs.add_fault("open:blobs/*:EXDEV")
    mnt = fakefs.mountpoint
    cat = subprocess.run(["cat", str(mnt / "blobs" / "a")], capture_output=True, text=True,
                         check=False)
    assert cat.returncode == 1
    assert "Invalid cross-device link" in cat.stderr
    ok = subprocess.run(["cat", str(mnt / "plain")], capture_output=True, text=True, check=True)
    assert ok.stdout == "plain\n"
    dest = fakefs.backing / "copy"
    cp = subprocess.run(["cp", str(mnt / "blobs" / "a"), str(dest)], capture_output=True,
                        text=True, check=False)
    assert cp.returncode == 1
    assert not dest.exists()


def test_vanish_after_lookup(fakefs: fakefs.FakeFS) -> None:
    (fakefs.backing / "blobs").mkdir()
    (fakefs.backing / "blobs" / "a").write_text("a\n")
    rid = fakefs.add_fault("lookup:blobs/a:vanish")
    path = fakefs.mountpoint / "blobs" / "a"
    assert path.exists()
    assert _errno_of(lambda: open(path).close()) == errno.ENOENT
    assert not path.exists()
    assert not (fakefs.backing / "blobs" / "a").exists()
    [entry] = fakefs.faults()
    assert entry["id"] == rid and entry["hits"] == 1
    assert fakefs.counters()["vanished"] == 1
    fired = [r for r in fakefs.trace() if r["rule"] == rid]
    assert [(r["op"], r["result"]) for r in fired] == [("lookup", "ok")]


def test_counters_and_trace_match_what_happened(fakefs: fakefs.FakeFS) -> None:
    (fakefs.backing / "big.bin").write_bytes(os.urandom(64 * 1024))
    rid = fakefs.add_fault("read:big.bin:EIO:nth=3")
    fakefs.clear_trace()
    before = fakefs.counters()
    fd = os.open(fakefs.mountpoint / "big.bin", os.O_RDONLY)
    try:
        results = [_errno_of(functools.partial(os.pread, fd, 4096, off)) for off in
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


def test_times_limits_the_hits(fakefs: fakefs.FakeFS) -> None:
    (fakefs.backing / "a.tmp").write_text("x")
    fakefs.add_fault("open,create:*.tmp:EIO:times=2")
    path = fakefs.mountpoint / "a.tmp"
    got = [_errno_of(lambda: open(path).close()) for _ in range(3)]
    assert got == [errno.EIO, errno.EIO, None]
    new = fakefs.mountpoint / "b.tmp"
    assert _errno_of(lambda: open(new, "w").close()) is None


def _schedule(fs: fakefs.FakeFS, rule: str) -> list[bool]:
    rid = fs.add_fault(rule)
    fd = os.open(fs.mountpoint / "f", os.O_RDONLY)
    try:
        out = [_errno_of(lambda: os.pread(fd, 16, 0)) == errno.EIO for _ in range(40)]
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
    assert _errno_of((mnt / "r").read_text) == errno.EIO
    assert _errno_of(lambda: os.stat(mnt / "g")) == errno.EIO
    assert _errno_of(lambda: os.stat(mnt / "l")) == errno.EIO
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
        assert _errno_of(lambda: os.pread(fd, 8192, 0)) == errno.EIO
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
    assert _errno_of(lambda: open(path).close()) == errno.EIO
    assert _child_errno("open(sys.argv[1]).close()", str(path)) is None


def test_sigkilled_daemon_leaves_no_stale_mount(tmp_path: Path) -> None:
    from fakefs._pytest import require_fakefs

    require_fakefs()
    backing, mnt = tmp_path / "b", tmp_path / "m"
    backing.mkdir()
    mnt.mkdir()
    (backing / "f").write_text("alive")
    with fakefs.mount(backing, mnt) as fs:
        os.kill(fs.pid, signal.SIGKILL)
        assert fs.wait_daemon(30) == -signal.SIGKILL
        assert _errno_of(lambda: os.stat(mnt / "f")) == errno.ENOTCONN
    assert find_mount(mnt) is None
    assert not os.path.exists(os.path.dirname(fs.control))
    assert os.listdir(mnt) == []
    with fakefs.mount(backing, mnt) as fs2:
        assert (fs2.mountpoint / "f").read_text() == "alive"
    assert find_mount(mnt) is None


def test_unmount_while_busy_falls_back_to_lazy(tmp_path: Path) -> None:
    from fakefs._pytest import require_fakefs

    require_fakefs()
    backing, mnt = tmp_path / "b", tmp_path / "m"
    backing.mkdir()
    mnt.mkdir()
    (backing / "f").write_text("busy")
    with fakefs.mount(backing, mnt):
        fd = os.open(mnt / "f", os.O_RDONLY)
    try:
        assert find_mount(mnt) is None
        # Detached, daemon gone: the open file is dead, not hanging.
        assert _errno_of(lambda: os.read(fd, 4)) == errno.ENOTCONN
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)


def test_passthrough_with_cp_mv_rm_tar_git(fakefs: fakefs.FakeFS, tmp_path: Path) -> None:
    mnt = fakefs.mountpoint
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("alpha\n")
    (src / "sub").mkdir()
    (src / "sub" / "b.bin").write_bytes(os.urandom(300_000))
    os.symlink("a.txt", src / "ln")
    os.chmod(src / "a.txt", 0o700)

    def sh(*cmd: str, cwd: Path = mnt) -> str:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=True).stdout

    sh("cp", "-a", str(src), str(mnt / "copy"))
    sh("diff", "-r", "--no-dereference", str(src), str(mnt / "copy"))
    assert os.stat(mnt / "copy" / "a.txt").st_mode & 0o777 == 0o700
    assert os.readlink(mnt / "copy" / "ln") == "a.txt"
    sh("mv", str(mnt / "copy"), str(mnt / "moved"))
    assert (fakefs.backing / "moved" / "sub" / "b.bin").read_bytes() == (
        src / "sub" / "b.bin").read_bytes()
    os.link(mnt / "moved" / "a.txt", mnt / "moved" / "hard")
    assert os.stat(mnt / "moved" / "hard").st_ino == os.stat(mnt / "moved" / "a.txt").st_ino
    assert os.stat(mnt / "moved" / "a.txt").st_nlink == 2

    sh("tar", "-cf", str(tmp_path / "t.tar"), "-C", str(mnt), "moved")
    out = tmp_path / "untar"
    out.mkdir()
    sh("tar", "-xf", str(tmp_path / "t.tar"), "-C", str(out))
    sh("diff", "-r", "--no-dereference", str(mnt / "moved"), str(out / "moved"))
    (mnt / "x").mkdir()
    sh("tar", "-xf", str(tmp_path / "t.tar"), "-C", str(mnt / "x"))
    sh("diff", "-r", "--no-dereference", str(out / "moved"), str(mnt / "x" / "moved"))

    sh("rm", "-r", str(mnt / "moved"), str(mnt / "x"))
    assert os.listdir(fakefs.backing) == []

    repo = mnt / "repo"
    repo.mkdir()
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid",
           "HOME": str(tmp_path), "PATH": os.environ["PATH"]}

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True,
                              text=True, check=True).stdout

    git("init", "-q")
    (repo / "file").write_text("one\n")
    git("add", "file")
    git("commit", "-qm", "first")
    (repo / "file").write_text("two\n")
    git("commit", "-qam", "second")
    assert git("status", "--porcelain") == ""
    assert git("log", "--format=%s").split() == ["second", "first"]
    git("checkout", "-q", "HEAD~1")
    assert (repo / "file").read_text() == "one\n"
    git("fsck", "--no-progress")


def test_metadata_passthrough(fakefs: fakefs.FakeFS) -> None:
    mnt = fakefs.mountpoint
    f = mnt / "f"
    f.write_bytes(b"123456")
    os.truncate(f, 3)
    assert f.read_bytes() == b"123"
    os.utime(f, ns=(1_000_000_000, 2_000_000_000))
    st = os.stat(f)
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_000_000_000, 2_000_000_000)
    os.chown(f, 1234, 5678)
    assert (os.stat(f).st_uid, os.stat(f).st_gid) == (1234, 5678)
    os.setxattr(f, "user.a", b"1")
    assert os.getxattr(f, "user.a") == b"1"
    assert "user.a" in os.listxattr(f)
    os.removexattr(f, "user.a")
    assert _errno_of(lambda: os.getxattr(f, "user.a")) == errno.ENODATA
    old = os.umask(0o022)
    try:
        fd = os.open(mnt / "g", os.O_CREAT | os.O_WRONLY, 0o666)
        os.close(fd)
    finally:
        os.umask(old)
    assert os.stat(mnt / "g").st_mode & 0o777 == 0o644
    (mnt / "a").write_text("a")
    (mnt / "b").write_text("b")
    from probe._linux import RENAME_EXCHANGE, RENAME_NOREPLACE, renameat2

    assert _errno_of(lambda: renameat2(mnt / "a", mnt / "b", RENAME_NOREPLACE)) == errno.EEXIST
    renameat2(mnt / "a", mnt / "b", RENAME_EXCHANGE)
    assert (mnt / "a").read_text() == "b" and (mnt / "b").read_text() == "a"
    # An unlinked file that is still open keeps working.
    fd = os.open(mnt / "a", os.O_RDWR)
    try:
        os.unlink(mnt / "a")
        os.write(fd, b"still")
        assert os.fstat(fd).st_nlink == 0
        assert os.pread(fd, 5, 0) == b"still"
    finally:
        os.close(fd)
    sv = os.statvfs(mnt)
    assert sv.f_blocks == os.statvfs(fakefs.backing).f_blocks


@pytest.mark.trio
async def test_fixture_works_from_a_trio_test(fakefs: fakefs.FakeFS) -> None:
    import trio

    await trio.Path(fakefs.mountpoint / "t").write_text("trio")
    fakefs.add_fault("open:t:EACCES")
    with pytest.raises(PermissionError):
        await trio.Path(fakefs.mountpoint / "t").read_text()
    assert (fakefs.backing / "t").read_text() == "trio"


def test_trace_is_bounded_but_counters_are_not(tmp_path: Path) -> None:
    from fakefs._pytest import require_fakefs

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


def test_dead_daemons_control_dir_is_reaped_and_live_ones_kept(tmp_path: Path) -> None:
    from fakefs._mounts import reap_control_dirs
    from fakefs._pytest import require_fakefs

    require_fakefs()
    dirs = [tmp_path / n for n in ("b1", "m1", "b2", "m2")]
    for d in dirs:
        d.mkdir()
    with fakefs.mount(dirs[0], dirs[1]) as dead:
        dead_ctl = os.path.dirname(dead.control)
        # SIGKILL runs no cleanup of the daemon's own: only its lock, which
        # the kernel drops, says it is gone.
        os.kill(dead.pid, signal.SIGKILL)
        assert dead.wait_daemon(30) == -signal.SIGKILL
        assert os.path.isdir(dead_ctl)
        with fakefs.mount(dirs[2], dirs[3]) as live:
            assert not os.path.exists(dead_ctl), "a new daemon reaps dead control dirs"
            live_ctl = os.path.dirname(live.control)
            assert live_ctl not in reap_control_dirs()
            assert os.path.isdir(live_ctl)
            assert live.faults() == []  # and its channel still answers


def test_trace_names_errnos_as_rules_do(fakefs: fakefs.FakeFS) -> None:
    # Python's errno table names 95 ENOTSUP; a trace must say EOPNOTSUPP,
    # the name the rule was written with and the kernel uses.
    (fakefs.backing / "x").write_text("x\n")
    rid = fakefs.add_fault("getxattr:x:EOPNOTSUPP")
    assert _errno_of(lambda: os.getxattr(fakefs.mountpoint / "x", "user.k")) == errno.EOPNOTSUPP
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
        assert _errno_of(functools.partial(os.pread, fd, 50, 4096)) == errno.EIO
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


def test_rule_follows_a_file_whose_directory_was_renamed(fakefs: fakefs.FakeFS) -> None:
    (fakefs.backing / "old").mkdir()
    (fakefs.backing / "old" / "f").write_text("data")
    fakefs.add_fault("open:new/f:EIO")
    mnt = fakefs.mountpoint
    assert (mnt / "old" / "f").read_text() == "data"  # known, untargeted, cached
    os.rename(mnt / "old", mnt / "new")
    assert _errno_of((mnt / "new" / "f").read_text) == errno.EIO
    assert [r["path"] for r in fakefs.trace() if r["errno"] == errno.EIO] == ["new/f"]
