"""Hostile names: a rule never fires on a file outside --root, however the
caller's lookup is rooted -- openat2's RESOLVE_IN_ROOT (the dirfd is "/"
for that lookup) and a chroot()ed caller (its "/" and its ".." stop at the
jail). The supervisor used to resolve those names in its own root: a file
in the jail at the path --root has outside got the fault, and the file in
--root reached through RESOLVE_IN_ROOT did not.

Oracle: strace (``fakefs run -- strace -f``), whose failed opens must be
exactly the hits counted.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from _fakefs_util import fakefs_run

from probe.pytest_plugin import require

pytestmark = pytest.mark.timeout(120)

def _traced(tmp_path: Path, prog: str, root: Path, rules: list[str], calls: str,
            *args: str, cwd: Path) -> tuple[dict[str, object], list[str], dict[str, int]]:
    """Run ``prog`` under ``fakefs run -- strace -f``: what it printed, the
    calls strace saw fail, and the hits per rule."""
    strace = shutil.which("strace")
    require(strace is not None, "strace (Debian package strace)")
    assert strace is not None
    (tmp_path / "prog.py").write_text(prog)
    log = tmp_path / "strace.log"
    res, counters = fakefs_run(
        root, rules, strace, "-f", "-qq", "-e", f"trace={calls}", "-e", "status=failed",
        "-o", str(log), "/usr/bin/python3", str(tmp_path / "prog.py"), *args, cwd=cwd,
    )
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout.splitlines()[-1])
    failed = log.read_text().splitlines()
    return got, failed, {r["rule"]: r["hits"] for r in counters["syscall_rules"]}


_PROG = r"""
import ctypes, json, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
root, jail = sys.argv[1], sys.argv[2]
RESOLVE_IN_ROOT = 0x10
out = {}

def read(fd):
    if fd < 0:
        return -fd
    data = os.read(fd, 64).decode().strip()
    os.close(fd)
    return data

def openat2(dfd, path):
    how = ctypes.create_string_buffer(struct.pack("=QQQ", os.O_RDONLY, 0, RESOLVE_IN_ROOT), 24)
    fd = libc.syscall(437, dfd, path.encode(), how, 24)
    return fd if fd >= 0 else -ctypes.get_errno()

def opened(path):
    try:
        return read(os.open(path, os.O_RDONLY))
    except OSError as err:
        return err.errno

jfd = os.open(jail, os.O_PATH | os.O_DIRECTORY)
rfd = os.open(root, os.O_PATH | os.O_DIRECTORY)
out["in_root_jail_abs"] = read(openat2(jfd, root + "/x"))     # jail's copy
out["in_root_root_abs"] = read(openat2(rfd, "/x"))            # --root's x
out["in_root_root_dotdot"] = read(openat2(rfd, "../../../x")) # clamped: --root's x
os.chdir(jail)
os.chroot(".")
out["chroot_abs"] = opened(root + "/x")                       # jail's copy
out["chroot_dotdot_abs"] = opened("/../.." + root + "/x")     # jail's copy
out["chroot_rel"] = opened("../root/x")                       # jail/root/x
print(json.dumps(out))
"""


def test_names_resolved_in_the_callers_root_not_ours(tmp_path: Path) -> None:
    require(os.geteuid() == 0, "needs root (chroot)")
    root = tmp_path / "root"
    jail = tmp_path / "jail"
    root.mkdir()
    (root / "x").write_text("root")
    copy = jail / str(root).lstrip("/")
    copy.mkdir(parents=True)
    (copy / "x").write_text("jail")
    (jail / "root").mkdir()
    (jail / "root" / "x").write_text("jail-root")
    got, failed, hits = _traced(tmp_path, _PROG, root, ["openat2:x:EACCES", "openat:x:EACCES"],
                                "openat,openat2", str(root), str(jail), cwd=tmp_path)
    assert got == {
        "in_root_jail_abs": "jail", "in_root_root_abs": 13, "in_root_root_dotdot": 13,
        "chroot_abs": "jail", "chroot_dotdot_abs": "jail", "chroot_rel": "jail-root",
    }
    refused = [ln for ln in failed if "EACCES" in ln]
    assert len(refused) == 2 and all("openat2(" in ln for ln in refused), refused
    assert hits == {"openat2:x:EACCES": 2, "openat:x:EACCES": 0}



_MAGIC = r"""
import json, os, sys
out = {}
os.chdir(sys.argv[1])  # outside --root; fakefs's own cwd is --root
for key, name in (("proc_cwd", "/proc/self/cwd/x"), ("thread_cwd", "/proc/thread-self/cwd/x")):
    try:
        with open(name) as f:
            out[key] = f.read()
    except OSError as err:
        out[key] = err.errno
try:
    os.rename("/proc/self/cwd/y", "/proc/self/cwd/z")
    out["rename"] = 0
except OSError as err:
    out["rename"] = err.errno
try:
    open(sys.argv[2] + "/x").close()  # the file in --root: the one fault
    out["inside"] = 0
except OSError as err:
    out["inside"] = err.errno
print(json.dumps(out))
"""


def test_a_magic_link_in_the_name_means_the_callers_not_ours(tmp_path: Path) -> None:
    # fakefs run's cwd is --root: "/proc/self/cwd/x" resolved by the
    # supervisor named --root's x, and the rules fired on the caller's x in
    # the directory it had moved to.
    root, away = tmp_path / "root", tmp_path / "away"
    for d in (root, away):
        d.mkdir()
        (d / "x").write_text(d.name)
        (d / "y").write_text(d.name)
    got, failed, hits = _traced(tmp_path, _MAGIC, root, ["openat:x:EACCES", "rename:z:EROFS"],
                                "openat,rename", str(away), str(root), cwd=root)
    assert got == {"proc_cwd": "away", "thread_cwd": "away", "rename": 0, "inside": 13}
    assert (away / "z").read_text() == "away" and (root / "y").exists()
    refused = [ln for ln in failed if "EACCES" in ln or "EROFS" in ln]
    assert len(refused) == 1 and str(root / "x") in refused[0], refused
    assert hits == {"openat:x:EACCES": 1, "sys.rename:z:EROFS": 0}
