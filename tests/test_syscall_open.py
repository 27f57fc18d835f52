"""Open faults at the system call, for any program on any filesystem
(``fakefs run --fault 'openat:GLOB:ERRNO' -- CMD``): the errno reaches the
program's own open(), every other open runs for real, and the counters say
what was delivered. In-process blocks refuse the open family (their
answering thread needs the GIL, which C code may hold while it opens).
"""

from __future__ import annotations

import ast
import errno
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest
from _fakefs_util import cowprobe_cmd, fakefs_run, rule_hits

import fakefs
from probe.pytest_plugin import require

pytestmark = pytest.mark.timeout(300)


def _files(d: Path, **content: str) -> None:
    for name, text in content.items():
        p = d / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def test_cat_gets_the_errno_for_the_matching_name_only(tmp_path: Path) -> None:
    _files(tmp_path, locked="hidden\n", other="shown\n")
    res, counters = fakefs_run(tmp_path, ["openat:locked:EACCES"], "cat", "locked")
    assert res.returncode == 1 and "cat: locked: Permission denied" in res.stderr
    assert rule_hits(counters) == [1]
    res, counters = fakefs_run(tmp_path, ["openat:locked:EACCES"], "cat", "other")
    assert (res.returncode, res.stdout) == (0, "shown\n")
    assert rule_hits(counters) == [0] and counters["syscalls"]["openat"] > 0


def test_dd_cannot_create_its_output(tmp_path: Path) -> None:
    _files(tmp_path, src="data\n")
    res, counters = fakefs_run(tmp_path, ["openat:out:EROFS"], "dd", "if=src", "of=out",
                               "status=none")
    assert res.returncode == 1 and "Read-only file system" in res.stderr
    assert not (tmp_path / "out").exists()  # the real open never ran
    assert rule_hits(counters) == [1]


def test_tar_extracts_everything_but_the_refused_member(tmp_path: Path) -> None:
    _files(tmp_path / "in", a="first\n", b="second\n")
    archive = tmp_path / "t.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(tmp_path / "in" / "a", "a")
        tar.add(tmp_path / "in" / "b", "b")
    out = tmp_path / "out"
    out.mkdir()
    res, counters = fakefs_run(tmp_path, ["openat:out/b:ENOSPC"], "tar", "-xf", str(archive),
                               cwd=out)
    assert res.returncode != 0 and "No space left on device" in res.stderr
    assert (out / "a").read_text() == "first\n" and not (out / "b").exists()
    assert rule_hits(counters) == [1]


def test_names_relative_to_a_directory_descriptor_and_to_the_cwd(tmp_path: Path) -> None:
    # openat(dirfd, "x") and a bare "x" in a child directory are both sub/x
    # to a rule rooted at tmp_path.
    _files(tmp_path, **{"sub/x": "x\n"})
    code = ("import os\nd = os.open('sub', os.O_RDONLY | os.O_DIRECTORY)\n"
            "try:\n    os.open('x', os.O_RDONLY, dir_fd=d)\nexcept OSError as e:\n"
            "    print(e.strerror)\n")
    res, counters = fakefs_run(tmp_path, ["openat:sub/x:ENOENT"], sys.executable, "-c", code)
    assert res.stdout.strip() == "No such file or directory", res.stderr
    assert rule_hits(counters) == [1]
    res, counters = fakefs_run(tmp_path, ["openat:sub/x:EIO"], "cat", "x", cwd=tmp_path / "sub")
    assert "cat: x: Input/output error" in res.stderr
    assert rule_hits(counters) == [1]


def test_a_file_outside_the_root_never_matches(tmp_path: Path) -> None:
    _files(tmp_path, outside="out\n", **{"root/inside": "in\n"})
    root = tmp_path / "root"
    res, counters = fakefs_run(root, ["openat:*:EACCES"], "cat", str(tmp_path / "outside"))
    # The loader's own opens (ld.so.cache, libc) lie outside the root too.
    assert (res.returncode, res.stdout) == (0, "out\n"), res.stderr
    assert rule_hits(counters) == [0]
    res, counters = fakefs_run(root, ["openat:*:EACCES"], "cat", "inside")
    assert "Permission denied" in res.stderr and rule_hits(counters) == [1]


def test_the_directory_part_is_resolved_as_the_kernel_walks_it(tmp_path: Path) -> None:
    # root/out is a symlink leading out of the root: "root/out/../x" is the
    # file outside (the kernel walks the link, then ".."), which folding the
    # text to "root/x" mistook for the root's x. And a root reached through a
    # symlinked spelling is still the root.
    _files(tmp_path, **{"elsewhere/x": "outside\n", "elsewhere/deep/f": "", "root/x": "in\n"})
    root = tmp_path / "root"
    (root / "out").symlink_to(tmp_path / "elsewhere" / "deep")
    (tmp_path / "alias").symlink_to("root")
    res, counters = fakefs_run(root, ["openat:x:EACCES"], "cat", "root/out/../x", cwd=tmp_path)
    assert (res.returncode, res.stdout) == (0, "outside\n"), res.stderr
    assert rule_hits(counters) == [0]
    for spelled in ("alias/x", str(tmp_path / "alias" / "x"), "root/./x", "alias/out/../../root/x"):
        res, counters = fakefs_run(root, ["openat:x:EACCES"], "cat", spelled, cwd=tmp_path)
        assert "Permission denied" in res.stderr and rule_hits(counters) == [1], spelled
    # rename's names are resolved the same way: mv's rename of the file
    # outside is not failed, so it really moves.
    res, counters = fakefs_run(root, ["rename:y:EXDEV"], "mv", "root/out/../x", "root/out/../y",
                               cwd=tmp_path)
    assert res.returncode == 0 and rule_hits(counters) == [0], res.stderr
    assert (tmp_path / "elsewhere" / "y").read_text() == "outside\n"
    assert (root / "x").read_text() == "in\n"


def test_a_live_name_ending_in_deleted_is_not_taken_for_a_deleted_file(tmp_path: Path) -> None:
    # /proc/PID/fd/N of an unlinked file reads "PATH (deleted)"; a file
    # really named "y (deleted)" is not y.
    _files(tmp_path, **{"y (deleted)": ""})
    code = "import os\nos.fsync(os.open(os.sys.argv[1], os.O_WRONLY | os.O_CREAT))\n"
    res, counters = fakefs_run(tmp_path, ["fsync:y:EIO"], sys.executable, "-c", code,
                               "y (deleted)")
    assert res.returncode == 0 and rule_hits(counters) == [0], res.stderr
    unlinked = ("import os\nfd = os.open('y', os.O_WRONLY | os.O_CREAT)\nos.unlink('y')\n"
                "try:\n    os.fsync(fd)\nexcept OSError as e:\n    print(e.strerror)\n")
    res, counters = fakefs_run(tmp_path, ["fsync:y:EIO"], sys.executable, "-c", unlinked)
    assert res.stdout.strip() == "Input/output error" and rule_hits(counters) == [1], res.stderr


def test_the_glob_matches_the_name_as_opened_not_where_a_symlink_leads(tmp_path: Path) -> None:
    # The supervisor never follows a name (it reads the string the program
    # passed): a rule on the link fails opens through the link only.
    _files(tmp_path, target="t\n")
    (tmp_path / "link").symlink_to("target")
    res, _ = fakefs_run(tmp_path, ["openat:link:EACCES"], "cat", "link")
    assert "Permission denied" in res.stderr
    res, counters = fakefs_run(tmp_path, ["openat:link:EACCES"], "cat", "target")
    assert (res.returncode, res.stdout) == (0, "t\n") and rule_hits(counters) == [0]


def test_open_is_the_fuse_operation_unless_marked_or_without_a_mount() -> None:
    assert not fakefs.parse_rule("open:x:EIO").syscall  # existing FUSE rules keep their meaning
    assert fakefs.parse_rule("sys.open:x:EIO").syscall
    assert fakefs.parse_rule("openat:x:EIO").syscall  # no FUSE op of that name
    assert fakefs.parse_rule("open:x:EIO", layer="syscall").syscall


@pytest.mark.parametrize("rule", ["openat:x:EIO", "sys.open:x:EIO", "creat:x:EIO",
                                  "openat2:x:EIO", "FICLONE,openat:x:EIO"])
def test_in_process_blocks_refuse_the_open_family(tmp_path: Path, rule: str) -> None:
    with pytest.raises(fakefs.SyscallLayerError, match="only in another process"), \
            fakefs.syscall_faults([rule], root=tmp_path):
        pass  # pragma: no cover - refused before the block runs
    # Refused before anything was installed: this thread opens as before.
    fd = os.open(tmp_path, os.O_RDONLY)
    os.close(fd)


def test_a_python_program_sees_file_not_found(tmp_path: Path) -> None:
    # shutil.copy's open of the source gets ENOENT while the file is there:
    # a vanished source, as the program sees it.
    _files(tmp_path, src="x\n")
    code = "import shutil; shutil.copy('src', 'dst')"
    res, counters = fakefs_run(tmp_path, ["openat:src:ENOENT"], sys.executable, "-c", code)
    assert res.returncode == 1 and "FileNotFoundError" in res.stderr
    assert not (tmp_path / "dst").exists() and (tmp_path / "src").exists()
    assert rule_hits(counters) == [1]
    assert subprocess.run(["cat", "src"], cwd=tmp_path, capture_output=True, text=True,
                          check=True).stdout == "x\n"


@pytest.mark.cowprobe_fs("btrfs")
def test_materialize_fails_the_blob_whose_open_lied_and_clones_the_rest(btrfs_dir: Path) -> None:
    # DESIGN's "ENOENT but source still there", in a batch, through a real
    # system call: the source's open says ENOENT (no times=, so the
    # materializer's second look gets it too) while the file is there. The
    # job is a failure naming ENOENT -- not "vanished", which would be a lie
    # the materializer's own check of the source catches -- and every other
    # file is a real clone on btrfs.
    src = btrfs_dir / "src"
    src.mkdir()
    for i in range(8):
        (src / f"blob-{i}").write_bytes(os.urandom(65536))
    os.sync()
    cmd = cowprobe_cmd("materialize", "--json", "--no-progress", "src", "wt")
    res, counters = fakefs_run(btrfs_dir, ["openat:src/blob-0:ENOENT"], *cmd)
    assert res.returncode == 1, res.stderr  # one entry failed
    doc = json.loads(res.stdout)
    totals = doc["totals"]
    got = (totals["cloned"], totals["failed"], totals["vanished"], totals["copied"])
    assert got == (7, 1, 0, 0)
    assert [(f["dest"], f["errno_name"]) for f in doc["failures"]] == [("wt/blob-0", "ENOENT")]
    assert not (btrfs_dir / "wt" / "blob-0").exists()
    for i in range(1, 8):
        assert (btrfs_dir / "wt" / f"blob-{i}").read_bytes() == (src / f"blob-{i}").read_bytes()
    assert rule_hits(counters) == [2]  # the open and the second look both got it


_HOSTILE = r"""
import ctypes, os, threading
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
NR = {"x86_64": 257, "aarch64": 56}[os.uname().machine]

def raw_openat(addr):
    r = libc.syscall(ctypes.c_long(NR), ctypes.c_long(-100), addr, ctypes.c_long(0),
                     ctypes.c_long(0))
    return ctypes.get_errno() if r < 0 else 0

out = {"badptr": raw_openat(ctypes.c_void_p(1)),
       "unterminated": raw_openat(ctypes.create_string_buffer(b"a" * 8192, 8192))}
# "target" flips between a file of ours and a symlink to a root-only file.
open("mine", "w").write("x")
stop = []
def flip():
    while not stop:
        for op in (lambda: os.symlink("locked", "t.l"), lambda: os.replace("t.l", "target"),
                   lambda: os.link("mine", "t.f"), lambda: os.replace("t.f", "target")):
            try:
                op()
            except OSError:
                pass
t = threading.Thread(target=flip)
t.start()
seen = {}
for _ in range(200):
    try:
        os.close(os.open("target", os.O_RDONLY))
        e = 0
    except OSError as err:
        e = err.errno
    seen[e] = seen.get(e, 0) + 1
stop.append(1)
t.join()
out["seen"] = seen
print(repr(out))
"""

_DROP_AND_RUN = """
import contextlib, io, json, os, sys
import fakefs._runcmd, fakefs._syscall._spawn, fakefs._syscall._supervisor, fakefs._syscall._table
import fakefs._syscall._resolve, fakefs._syscall._profiles, shutil, subprocess, selectors
from fakefs.cli import _parser, main
_parser()
os.setgroups([]); os.setgid(65534); os.setuid(65534)
d, code = sys.argv[1:3]
os.chdir(d)
err = io.StringIO()
with contextlib.redirect_stderr(err):
    status = main(["run", "--root", d, "--fault", "openat:target:EIO:times=5", "--",
                   "/usr/bin/python3", "-c", code])
print(json.dumps({"status": status, "counters": err.getvalue().splitlines()[-1]}))
"""


def test_hostile_names_and_pointers_as_nobody(tmp_path: Path) -> None:
    # As uid 65534: a bad pointer and an unterminated name get the kernel's
    # own EFAULT / ENAMETOOLONG (the supervisor reads them and matches
    # nothing); a name swapped between a file and a symlink to a root-only
    # file is only ever read as a string, never opened by the (root)
    # supervisor: the program sees exactly the 5 EIOs counted, and the
    # kernel's EACCES for the root-only file, never its bytes.
    require(os.geteuid() == 0, "needs root to drop to nobody")
    d = Path(tempfile.mkdtemp(prefix="fakefs-open-nobody-", dir="/tmp"))
    try:
        d.chmod(0o777)
        (d / "locked").write_text("root only\n")
        (d / "locked").chmod(0o600)
        out = subprocess.run([sys.executable, "-c", _DROP_AND_RUN, str(d), _HOSTILE],
                             capture_output=True, text=True, check=False, timeout=120)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        run = json.loads(lines[-1])
        got = ast.literal_eval(lines[-2])
        assert run["status"] == 0
        assert got["badptr"] == errno.EFAULT and got["unterminated"] == errno.ENAMETOOLONG
        assert got["seen"].get(errno.EIO) == 5 == rule_hits(json.loads(run["counters"]))[0]
        assert set(got["seen"]) <= {0, errno.EIO, errno.EACCES, errno.ENOENT}
    finally:
        shutil.rmtree(d)
