"""fakefs through the real kernel: every fault observed with real syscalls
(and external programs) from processes other than the daemon."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
from pathlib import Path

import pytest
from _fakefs_util import child_errno, errno_of

import fakefs
from fakefs._mounts import find_mount

MARK = errno.EHOSTDOWN  # an errno no passthrough operation here produces by itself
MARK_NAME = "EHOSTDOWN"

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

    assert child_errno(code, str(mnt / target)) == MARK
    # The same syscall on a path the rule does not match is untouched.
    assert child_errno(code, str(mnt / twin)) is None

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
    assert child_errno("os.statvfs(sys.argv[1])", str(fakefs.mountpoint)) == MARK
    assert child_errno("os.stat(sys.argv[1])", str(fakefs.mountpoint)) is None


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
    assert errno_of(lambda: open(path).close()) == errno.ENOENT
    assert not path.exists()
    assert not (fakefs.backing / "blobs" / "a").exists()
    [entry] = fakefs.faults()
    assert entry["id"] == rid and entry["hits"] == 1
    assert fakefs.counters()["vanished"] == 1
    fired = [r for r in fakefs.trace() if r["rule"] == rid]
    assert [(r["op"], r["result"]) for r in fired] == [("lookup", "ok")]


def test_sigkilled_daemon_leaves_no_stale_mount(tmp_path: Path) -> None:
    from probe.pytest_plugin import require_fakefs

    require_fakefs()
    backing, mnt = tmp_path / "b", tmp_path / "m"
    backing.mkdir()
    mnt.mkdir()
    (backing / "f").write_text("alive")
    with fakefs.mount(backing, mnt) as fs:
        os.kill(fs.pid, signal.SIGKILL)
        assert fs.wait_daemon(30) == -signal.SIGKILL
        assert errno_of(lambda: os.stat(mnt / "f")) == errno.ENOTCONN
    assert find_mount(mnt) is None
    assert not os.path.exists(os.path.dirname(fs.control))
    assert os.listdir(mnt) == []
    with fakefs.mount(backing, mnt) as fs2:
        assert (fs2.mountpoint / "f").read_text() == "alive"
    assert find_mount(mnt) is None


def test_unmount_while_busy_falls_back_to_lazy(tmp_path: Path) -> None:
    from probe.pytest_plugin import require_fakefs

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
        assert errno_of(lambda: os.read(fd, 4)) == errno.ENOTCONN
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
    assert errno_of(lambda: os.getxattr(f, "user.a")) == errno.ENODATA
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

    assert errno_of(lambda: renameat2(mnt / "a", mnt / "b", RENAME_NOREPLACE)) == errno.EEXIST
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


def test_dead_daemons_control_dir_is_reaped_and_live_ones_kept(tmp_path: Path) -> None:
    from fakefs._mounts import reap_control_dirs
    from probe.pytest_plugin import require_fakefs

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
