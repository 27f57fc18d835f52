"""A fresh worktree interrupted mid-batch is never published (issue 14 §10).

A real process, a real signal: ``cowprobe materialize`` (SIGINT) and a
library caller that turns SIGTERM into an exception, as the CLI does. The
signal is sent once the staged worktree is seen filling -- the observation
is the synchronisation -- and afterwards neither the final name nor the
staging directory may exist.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _files import staged_files, tree

import probe

N_FILES = 20_000

_LIBRARY_CALLER = """
import signal, sys
import probe

def stop(signum, frame):
    raise SystemExit(128 + signum)

signal.signal(signal.SIGTERM, stop)
probe.mirror(sys.argv[1], [sys.argv[2]])
"""


def _make_tree(src: Path) -> None:
    tree(src, 20, N_FILES // 20)


@pytest.mark.parametrize(
    ("caller", "signum"),
    [("cli", signal.SIGINT), ("library", signal.SIGTERM)],
)
def test_interrupted_fresh_worktree_is_not_published(
    btrfs_dir: Path, caller: str, signum: int
) -> None:
    src, wt = btrfs_dir / "src", btrfs_dir / "wt"
    _make_tree(src)
    if caller == "cli":
        cmd = [sys.executable, "-m", "probe.cli", "materialize", "--no-progress", str(src),
               str(wt)]
    else:
        cmd = [sys.executable, "-c", _LIBRARY_CALLER, str(src), str(wt)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # A guard against a hang, not a timing assumption: the loop ends as
        # soon as the first files are seen in the staging directory.
        deadline = time.monotonic() + 120
        while staged_files(btrfs_dir, "wt") == 0:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no staging directory appeared"
            time.sleep(0.001)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signum, (out, err)
    assert b"Traceback" not in err
    # Never published partial, and the staging directory is gone too.
    assert not wt.exists(), f"{len(list(wt.rglob('f*')))} of {N_FILES} files published"
    assert [p.name for p in btrfs_dir.iterdir() if ".cowprobe-" in p.name] == []


_KILLED_MID_BATCH = """
import os, signal, sys
import probe
def first(result):
    os.kill(os.getpid(), signal.SIGKILL)  # no cleanup runs: the staging stays
probe.mirror(sys.argv[1], [sys.argv[2]], on_result=first, processes=1)
"""


def test_staging_of_a_sigkilled_batch_is_reaped_by_the_next(btrfs_dir: Path) -> None:
    from probe._tempname import forget_reaped, temp_name

    src = btrfs_dir / "src"
    (src / "d").mkdir(parents=True)
    for i in range(50):
        (src / "d" / f"f{i}").write_bytes(os.urandom(2000))
    base = btrfs_dir / "worktrees"
    base.mkdir()
    proc = subprocess.run([sys.executable, "-c", _KILLED_MID_BATCH, str(src), str(base / "wt1")],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    dead = [p.name for p in base.iterdir()]
    assert len(dead) == 1 and dead[0].startswith(".wt1.cowprobe-"), dead
    assert not (base / "wt1").exists()  # never published
    live = temp_name("other")  # a staged root whose owner (we) is alive
    (base / live).mkdir()
    forget_reaped()
    report = probe.mirror(src, [base / "wt2"])
    assert report.ok
    assert sorted(p.name for p in base.iterdir()) == sorted([live, "wt2"])
    assert len(list((base / "wt2" / "d").iterdir())) == 50
