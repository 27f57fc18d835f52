"""A fakefs passthrough behaves like the backing filesystem: what the
pjdfstest suite checks, plus the corners it does not (dots in readdir,
paths longer than PATH_MAX, attributes after link/unlink)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import fakefs
from probe.pytest_plugin import require, require_fakefs

TOOL = Path(__file__).resolve().parents[2] / "shared" / "tools" / "pjdfstest-fakefs"
if not TOOL.exists():
    TOOL = Path("/work/shared/tools/pjdfstest-fakefs")
#: two suites where a path-resolving daemon failed (ENAMETOOLONG near
#: PATH_MAX, ctime/nlink after link); all 17 suites take ~10 minutes here
SUITES = "link mkdir"


def test_readdir_lists_dot_and_dotdot(fakefs: fakefs.FakeFS) -> None:
    (fakefs.backing / "d").mkdir()
    (fakefs.backing / "d" / "f").write_text("x")
    listing = subprocess.run(["ls", "-a1", str(fakefs.mountpoint / "d")], capture_output=True,
                             text=True, check=True).stdout.split()
    assert listing == [".", "..", "f"]
    # The same directory listed by a program that reads d_ino.
    st = os.stat(fakefs.mountpoint / "d")
    entries = subprocess.run(["ls", "-ai1", str(fakefs.mountpoint / "d")],
                             capture_output=True, text=True, check=True).stdout.split("\n")
    dot = next(line for line in entries if line.endswith(" ."))
    assert int(dot.split()[0]) == st.st_ino


def test_paths_longer_than_path_max_work(fakefs: fakefs.FakeFS) -> None:
    # Walked relative to directory descriptors through the mount, the
    # caller never passes a long path; a daemon that builds absolute backing
    # paths would get ENAMETOOLONG past 4096 bytes.
    name = "d" * 200
    fd = os.open(fakefs.mountpoint, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(25):  # 25 * 201 bytes > PATH_MAX
            os.mkdir(name, dir_fd=fd)
            nxt = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        leaf = os.open("leaf", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd)
        os.write(leaf, b"deep")
        os.close(leaf)
        os.rename("leaf", "leaf2", src_dir_fd=fd, dst_dir_fd=fd)
        os.link("leaf2", "leaf3", src_dir_fd=fd, dst_dir_fd=fd)
        assert os.stat("leaf3", dir_fd=fd).st_nlink == 2
        os.unlink("leaf2", dir_fd=fd)
        assert os.stat("leaf3", dir_fd=fd).st_nlink == 1
    finally:
        os.close(fd)
    # fwalk: by descriptors, as the backing tree is deeper than PATH_MAX.
    walked = [(files, dirfd) for _, _, files, dirfd in os.fwalk(fakefs.backing)]
    assert len(walked) == 26
    assert walked[-1][0] == ["leaf3"]


def test_nlink_and_ctime_follow_link_and_unlink(fakefs: fakefs.FakeFS) -> None:
    mnt = fakefs.mountpoint
    (mnt / "a").write_text("x")
    before = os.stat(mnt / "a")
    os.link(mnt / "a", mnt / "b")
    linked = os.stat(mnt / "a")
    assert linked.st_nlink == 2
    assert linked.st_ctime_ns >= before.st_ctime_ns
    # "b" is the name the inode was seen under last; after it goes, "a"
    # still answers (a daemon that stats by remembered name loses it).
    os.unlink(mnt / "b")
    after = os.stat(mnt / "a")
    assert after.st_nlink == 1
    assert after.st_ctime_ns >= linked.st_ctime_ns
    os.unlink(mnt / "a")
    assert not list(fakefs.backing.iterdir())


def test_pjdfstest_fails_through_fakefs_exactly_what_the_backing_fails(tmp_path: Path) -> None:
    require_fakefs()
    missing = [t for t in ("prove", "autoreconf", "make", "gcc", "bc") if shutil.which(t) is None]
    require(TOOL.exists() and not missing,
            f"pjdfstest-fakefs needs {TOOL} and {missing or 'nothing else'}")
    # pytest's tmp_path is on the machine's own local filesystem (ext4 or
    # XFS here); the lab ext4/XFS runs are in the report of issue 12.
    res = subprocess.run(["bash", str(TOOL), "--suites", SUITES, str(tmp_path)],
                         capture_output=True, text=True, check=False, timeout=1200,
                         cwd=Path(__file__).resolve().parents[1])
    m = re.search(r"failed subtests: (\d+) through fakefs vs (\d+) natively", res.stdout)
    assert m, res.stdout + res.stderr
    assert int(m.group(1)) == int(m.group(2)), res.stdout
    rows = [line.split() for line in res.stdout.splitlines()[1:-2]]
    assert {r[0] for r in rows} == set(SUITES.split())
    assert all(r[1] == r[2] for r in rows), res.stdout


CHILD = """
import os, resource, subprocess, sys
import fakefs
resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
back, mnt = sys.argv[1:3]
with fakefs.mount(back, mnt) as fs:
    out = subprocess.run(["ls", "-l", mnt + "/wide"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == 2001, out.stdout[-200:]
    # every node is still reachable, the early ones reopened by name
    assert all(os.stat(f"{mnt}/wide/w{i:04d}").st_size == i % 7 for i in range(2000))
    assert open(f"{mnt}/wide/w0003").read() == "xxx"
    # a reopened name that leads to another inode now is refused (ESTALE),
    # never taken for the old node: the VFS then looks the name up afresh
    # and gets the new file as a new node
    fs.clear_trace()
    os.rename(f"{back}/wide/w0001", f"{back}/wide/moved")
    with open(f"{back}/wide/w0001", "w") as f:
        f.write("impostor")
    # (w0001's descriptor was given up long ago: 2,000 nodes since, 192 held.)
    got = open(f"{mnt}/wide/w0001").read()
    ops = [(r["op"], r["result"]) for r in fs.trace() if r["path"] == "wide/w0001"]
    assert got == "impostor", (got, ops)
    assert ops[:2] == [("open", "ESTALE"), ("lookup", "ok")], ops
    # ... and so is a new file that got the deleted one's inode number, as
    # ext4 hands it out again: same device, number and type, another inode
    gone = os.stat(f"{back}/wide/w0002").st_ino
    os.unlink(f"{back}/wide/w0002")
    for i in range(64):
        with open(f"{back}/wide/n{i}", "w") as f:
            f.write("reborn")
        if os.stat(f"{back}/wide/n{i}").st_ino == gone:
            os.rename(f"{back}/wide/n{i}", f"{back}/wide/w0002")
            break
    else:
        raise AssertionError(f"the backing filesystem never reused inode {gone}")
    fs.clear_trace()
    got = open(f"{mnt}/wide/w0002").read()
    ops = [(r["op"], r["result"]) for r in fs.trace() if r["path"] == "wide/w0002"]
    assert got == "reborn", (got, ops)
    assert ops[:2] == [("open", "ESTALE"), ("lookup", "ok")], ops
    print("ok", got)
"""


def test_more_nodes_than_descriptors(tmp_path: Path) -> None:
    # 2,000 entries under a 256-descriptor limit: nodes give their O_PATH
    # descriptors up and reopen them by name, verified, when needed.
    require_fakefs()
    back, mnt = tmp_path / "backing", tmp_path / "mnt"
    (back / "wide").mkdir(parents=True)
    mnt.mkdir()
    for i in range(2000):
        (back / "wide" / f"w{i:04d}").write_text("x" * (i % 7))
    # The daemon raises its descriptor limit as far as it may; root without
    # CAP_SYS_RESOURCE may not go past the child's 256, so the descriptors
    # are given up as root too (with the capability, the reopen-by-name
    # check below would never run).
    drop = ["setpriv", "--bounding-set=-sys_resource"] if os.geteuid() == 0 else []
    res = subprocess.run([*drop, sys.executable, "-c", CHILD, str(back), str(mnt)],
                         capture_output=True, text=True, check=False, timeout=300)
    assert res.stdout.startswith("ok"), res.stderr


#: Every kind of new inode, in a plain world-writable directory and in a
#: set-group-ID one owned by a group the caller is not in; then what each
#: became. Run natively and through the mount, by nobody and by root.
OWNERSHIP = r"""
umask 022
MAKE_SETID='import os, sys; os.close(os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY, 0o6755))'
for d in w sg; do
    mkdir "$d/d"; mkdir -m 2755 "$d/dg"; : > "$d/f"; mkfifo "$d/p"; ln -s target "$d/l"
    /usr/bin/python3 -c "$MAKE_SETID" "$d/s"
    mknod "$d/c" c 1 3 2>/dev/null && echo "$d/c made" || echo "$d/c refused"
done
stat -c '%n %F %u %g %a' w/* sg/*
"""


def _ownership(where: Path, argv: list[str]) -> str:
    res = subprocess.run([*argv, "sh", "-c", OWNERSHIP], cwd=where, capture_output=True,
                         text=True, check=False, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_new_inodes_get_the_owner_group_and_mode_the_backing_gives(tmp_path: Path) -> None:
    # The daemon makes them under the caller's fsuid/fsgid: owner, group,
    # the group and bit a set-group-ID directory hands down, the set-group-ID
    # bit stripped from a file whose group the caller is not in, and who may
    # make a device -- all the backing filesystem's own answers.
    require_fakefs()
    require(os.geteuid() == 0 and Path("/usr/bin/python3").exists()
            and shutil.which("setpriv") is not None,
            "the ownership check needs root (to mount), setpriv and /usr/bin/python3")
    base = Path(tempfile.mkdtemp(prefix="fakefs-own-", dir="/tmp"))  # nobody traverses it
    try:
        base.chmod(0o755)
        native, backing, mnt = base / "native", base / "backing", base / "mnt"
        for d in (native, backing, mnt):
            d.mkdir(mode=0o755)
        with fakefs.mount(backing, mnt):
            nobody = ["setpriv", "--reuid=65534", "--regid=65534"]
            # "member": nobody in group 100, which alone lets it write in w
            # (the kernel's check; the daemon's own groups must not refuse it)
            for who, argv in (("nobody", [*nobody, "--clear-groups"]),
                              ("member", [*nobody, "--groups=100"]), ("root", [])):
                for top in (native, backing):
                    (top / who).mkdir(mode=0o755)
                    (top / who / "w").mkdir()
                    (top / who / "sg").mkdir()
                    os.chown(top / who / "sg", 0, 100)
                    # writable by others on purpose
                    if who == "member":
                        os.chown(top / who / "w", 0, 100)
                        os.chmod(top / who / "w", 0o770)  # noqa: S103
                    else:
                        os.chmod(top / who / "w", 0o777)  # noqa: S103
                    os.chmod(top / who / "sg", 0o2777)  # noqa: S103
                want = _ownership(native / who, argv)
                got = _ownership(mnt / who, argv)
                assert got == want, who
                uid = "0" if who == "root" else "65534"
                lines = set(want.splitlines())
                assert f"w/d directory {uid} {uid} 755" in lines
                assert f"sg/d directory {uid} 100 2755" in lines
                assert f"sg/l symbolic link {uid} 100 777" in lines
                # nobody is not in group 100: the set-group-ID bit goes
                setid = "4755" if who == "nobody" else "6755"
                assert f"sg/s regular empty file {uid} 100 {setid}" in lines, lines
                assert ("w/c made" in lines) == (who == "root")
    finally:
        shutil.rmtree(base, ignore_errors=True)
