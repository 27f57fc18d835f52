"""``fakefs run`` syscall faults against foreign programs on real lab
filesystems: GNU cp, the reflink-copy wheel (Rust), cowprobe's own CLI.

Every fault here is checked twice: the program saw it (its message, its
report), and the counters say it was delivered -- and where a rule must
*not* match, the real clone ran (shared extents, asked of FIEMAP).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from _fakefs_util import cowprobe_cmd, fakefs_run, rule_hits

from probe import _linux
from probe.pytest_plugin import require

pytestmark = pytest.mark.timeout(300)

_DATA = os.urandom(256 * 1024)


def _shared(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        return _linux.shared_bytes(fd)
    finally:
        os.close(fd)


def _source(d: Path, name: str = "a") -> Path:
    p = d / name
    p.write_bytes(_DATA)
    with open(p, "rb+") as fh:
        os.fsync(fh.fileno())  # real extents for FIEMAP, not delalloc
    return p


@pytest.mark.needs_reflink
def test_cp_reflink_always_fails_for_the_matching_name_only(lab_dir: Path) -> None:
    _source(lab_dir)
    # One run, two cp children of one shell: the filter covers descendants.
    res, counters = fakefs_run(
        lab_dir, ["FICLONE:b*:EXDEV"], "sh", "-c",
        "cp --reflink=always a b; echo cp-b=$?; cp --reflink=always a c",
    )
    assert res.returncode == 0, res.stderr
    assert "Invalid cross-device link" in res.stderr
    assert "cp-b=1" in res.stdout
    assert (lab_dir / "c").read_bytes() == _DATA
    # The unmatched clone really ran: every byte of c shares a's extents.
    assert _shared(lab_dir / "c") >= len(_DATA)
    assert rule_hits(counters) == [1]


def test_exit_status_passes_through(tmp_path: Path) -> None:
    res, _ = fakefs_run(tmp_path, ["FICLONE:*:EXDEV"], "sh", "-c", "exit 7")
    assert res.returncode == 7


def test_fuse_only_rule_without_a_mount_is_bad_input(tmp_path: Path) -> None:
    res, _ = fakefs_run(tmp_path, ["read:*:EIO"], "true")
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "unknown syscall 'read'" in res.stderr


@pytest.mark.cowprobe_fs("btrfs")
def test_reflink_copy_wheel_sees_eopnotsupp(btrfs_dir: Path) -> None:
    try:
        import reflink_copy  # noqa: F401
    except ImportError:
        require(False, "the reflink-copy wheel is not installed (pip install 'cowprobe[test]')")
    _source(btrfs_dir)
    script = "import reflink_copy; reflink_copy.reflink('a', 'b')"
    res, counters = fakefs_run(btrfs_dir, ["FICLONE:*:EOPNOTSUPP"], sys.executable, "-c", script)
    assert res.returncode == 1
    assert "(os error 95)" in res.stderr  # EOPNOTSUPP, as Rust's io::Error prints it
    assert rule_hits(counters) == [1]
    # Without the rule the same call clones on this btrfs.
    (btrfs_dir / "b").unlink(missing_ok=True)
    subprocess.run([sys.executable, "-c", script], cwd=btrfs_dir, check=True)
    assert _shared(btrfs_dir / "b") >= len(_DATA)


@pytest.mark.cowprobe_fs("btrfs")
def test_cowprobe_clone_under_enosys_copies_and_names_it(btrfs_dir: Path) -> None:
    _source(btrfs_dir)
    res, counters = fakefs_run(btrfs_dir, ["FICLONE:*:ENOSYS"],
                               *cowprobe_cmd("clone", "--json", "a", "b"))
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert (doc["action"], doc["reflink"], doc["errno"]) == ("copied", "unsupported", "ENOSYS")
    assert (btrfs_dir / "b").read_bytes() == _DATA
    assert rule_hits(counters) == [1]


@pytest.mark.cowprobe_fs("ext4")
def test_cowprobe_clone_on_ext4_without_copy_file_range_still_copies(ext4_dir: Path) -> None:
    _source(ext4_dir)
    res, counters = fakefs_run(ext4_dir, ["copy_file_range:*:ENOSYS"],
                               *cowprobe_cmd("clone", "--json", "a", "b"))
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["action"] == "copied"
    assert (ext4_dir / "b").read_bytes() == _DATA
    # The library did call copy_file_range and got ENOSYS (then read/write).
    assert rule_hits(counters)[0] >= 1


@pytest.mark.cowprobe_fs("btrfs")
def test_materialize_retries_eagain_and_clones_every_file(btrfs_dir: Path) -> None:
    src = btrfs_dir / "src"
    src.mkdir()
    for i in range(200):
        (src / f"f{i:03d}").write_bytes(_DATA[: 8192 + i])
    os.sync()
    res, counters = fakefs_run(
        btrfs_dir, ["FICLONE:*:EAGAIN:times=3"],
        *cowprobe_cmd("materialize", "--json", "--no-progress", "src", "wt"),
    )
    assert res.returncode == 0, res.stderr
    totals = json.loads(res.stdout)["totals"]
    assert (totals["files"], totals["cloned"], totals["copied"]) == (200, 200, 0)
    assert rule_hits(counters) == [3]
    assert counters["syscalls"]["FICLONE"] == 203  # 3 refused + 200 real clones


def test_trace_file_keeps_every_trapped_call(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"x")
    trace = tmp_path / "trace.jsonl"
    argv = [sys.executable, "-m", "fakefs.cli", "run", "--root", str(tmp_path),
            "--fault", "fsync:x:EIO", "--trace", str(trace), "--", sys.executable, "-c",
            "import os; fd = os.open('x', os.O_RDWR)\ntry: os.fsync(fd)\nexcept OSError: pass\n"
            "os.rename('x', 'y')"]
    subprocess.run(argv, cwd=tmp_path, check=True, capture_output=True)
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    fsync = [r for r in records if r["op"] == "fsync"]
    assert fsync and fsync[0]["result"] == "EIO" and fsync[0]["delivered"] is True
    assert fsync[0]["path"] == "x" and fsync[0]["pid"] > 0


_AS_NOBODY = """
import contextlib, io, json, os, sys
# Everything `fakefs run` loads, loaded while still root: the interpreter
# and the checkout may not be readable by nobody.
import fakefs._runcmd, fakefs._syscall._spawn, fakefs._syscall._supervisor, fakefs._syscall._table
import fakefs._syscall._resolve, fakefs._syscall._profiles, shutil, subprocess, selectors
from fakefs.cli import _parser, main
_parser()  # argparse's lazy imports
os.setgroups([]); os.setgid(65534); os.setuid(65534)
d, name = sys.argv[1:3]
err = io.StringIO()
with contextlib.redirect_stderr(err):
    status = main(["run", "--root", d, "--fault", "FICLONE:b*:EXDEV", "--",
                   "cp", "--reflink=always", f"{d}/a", f"{d}/{name}"])
print(json.dumps({"name": name, "status": status, "stderr": err.getvalue()}))
"""


def test_run_as_an_unprivileged_user(tmp_path: Path) -> None:
    # Without CAP_SYS_ADMIN the filter needs no_new_privs first: nobody can
    # still inject, and unmatched calls still run for real.
    require(os.geteuid() == 0, "needs root to drop to nobody")
    d = Path(tempfile.mkdtemp(prefix="fakefs-nobody-", dir="/tmp"))  # nobody can reach it
    try:
        d.chmod(0o777)
        (d / "a").write_bytes(b"shared by nobody\n")
        (d / "a").chmod(0o644)
        # One process per run: `fakefs run`'s answering thread lasts as
        # long as its process (see Supervisor.dedicate).
        outs = [subprocess.run([sys.executable, "-c", _AS_NOBODY, str(d), name],
                               capture_output=True, text=True, check=False, timeout=120)
                for name in ("b", "c")]
        for out in outs:
            assert out.returncode == 0, out.stderr
        runs = {r["name"]: r for out in outs for r in map(json.loads, out.stdout.splitlines())}
        # b: our EXDEV reached GNU cp's FICLONE; c: the kernel's own answer
        # (cloned where /tmp can, EOPNOTSUPP where it cannot), never ours.
        # (cp's own messages go to the process's stderr, the counters to
        # the redirected one.)
        cp_says = [ln for out in outs for ln in out.stderr.splitlines()]
        assert runs["b"]["status"] == 1
        assert any(f"{d}/b'" in ln and "Invalid cross-device link" in ln for ln in cp_says)
        assert not any(f"{d}/c'" in ln and "Invalid cross-device link" in ln for ln in cp_says)
        assert rule_hits(json.loads(runs["b"]["stderr"].splitlines()[-1])) == [1]
        assert rule_hits(json.loads(runs["c"]["stderr"].splitlines()[-1])) == [0]
        assert not (d / "b").exists() or (d / "b").stat().st_uid == 65534
    finally:
        shutil.rmtree(d)
