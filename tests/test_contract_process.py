"""Issue 14 §8, §11: signals clean up, temporaries of dead runs are reaped,
unwritable output is one line -- whole `cowprobe` processes."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from probe import clone_or_copy
from probe._outcome import LEFTOVERS, classify, eagain_window, transient_delays
from probe._tempname import forget_reaped, is_ours, temp_name
from probe.cli._render import collapse_failures

COWPROBE = [sys.executable, "-m", "probe.cli"]

# Runs `cowprobe clone` with a signal delivered from inside the copy loop:
# deterministic, and the kernel delivers it for real.
_SELF_SIGNAL = """
import os, sys
import probe._datacopy as dc
from probe.cli import main
real = dc._copy_range
def hit(*a, **k):
    os.kill(os.getpid(), int(sys.argv[1]))
    return real(*a, **k)
dc._copy_range = hit
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_signal_mid_copy_cleans_up_and_exits_128_plus_n(tmpfs_dir: Path, sig: int) -> None:
    src = tmpfs_dir / "src"
    src.write_bytes(os.urandom(1 << 20))
    (tmpfs_dir / "dst").write_bytes(b"old")
    proc = subprocess.run(
        [sys.executable, "-c", _SELF_SIGNAL, str(int(sig)), "clone", str(src),
         str(tmpfs_dir / "dst")],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 128 + sig, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert sorted(os.listdir(tmpfs_dir)) == ["dst", "src"], "temporary left behind"
    assert (tmpfs_dir / "dst").read_bytes() == b"old"


_KILLED = """
import os, signal, sys
from probe._tempname import temp_name
d = os.open(sys.argv[1], os.O_RDONLY)
name = temp_name("dst")
os.close(os.open(name, os.O_CREAT | os.O_WRONLY, 0o600, dir_fd=d))
print(name, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_temporaries_of_a_killed_run_are_reaped_and_live_ones_kept(tmpfs_dir: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED, str(tmpfs_dir)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == -signal.SIGKILL
    dead = proc.stdout.strip()
    assert is_ours(dead) and (tmpfs_dir / dead).exists()
    live = temp_name("other")  # this process is alive: must be kept
    (tmpfs_dir / live).write_bytes(b"in progress")
    src = tmpfs_dir / "src"
    src.write_bytes(b"data")
    forget_reaped()
    clone_or_copy(src, tmpfs_dir / "dst")
    assert sorted(os.listdir(tmpfs_dir)) == sorted(["dst", "src", live])


def test_temporaries_of_the_previous_tag_format_are_judged_by_their_owner(
        tmpfs_dir: Path) -> None:
    # cowprobe 0.1 tagged the boot with a hash of the boot id. Such a
    # temporary from this boot whose owner is alive is someone's running
    # work (an older cowprobe next to this one): never reaped. One from
    # another boot is.
    import hashlib

    from probe._liveness import boot_id, start_ticks

    me = os.getpid()
    legacy = hashlib.sha256(boot_id().encode()).hexdigest()[:8]
    live = f".a.cowprobe-{me}-{start_ticks(me)}-{legacy}-0001.tmp"
    other_boot = "f" * 8 if legacy != "f" * 8 else "e" * 8
    gone = f".b.cowprobe-{me}-{start_ticks(me)}-{other_boot}-0002.tmp"
    for name in (live, gone):
        (tmpfs_dir / name).write_bytes(b"x")
    assert is_ours(live) and is_ours(gone)
    src = tmpfs_dir / "src"
    src.write_bytes(b"data")
    forget_reaped()
    clone_or_copy(src, tmpfs_dir / "dst")
    assert sorted(os.listdir(tmpfs_dir)) == sorted(["dst", "src", live])


def test_json_to_a_full_stdout_says_dest_was_written(tmpfs_dir: Path) -> None:
    src = tmpfs_dir / "src"
    src.write_bytes(b"data")
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [*COWPROBE, "clone", "--json", str(src), str(tmpfs_dir / "dst")],
            stdout=full, stderr=subprocess.PIPE, text=True, timeout=60, check=False,
        )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "copied" in lines[0] and "created" in lines[0] and "untouched" not in lines[0]
    assert "No space left" in lines[0]
    assert (tmpfs_dir / "dst").read_bytes() == b"data"


def test_closed_pipe_is_one_line_and_exit_141(tmpfs_dir: Path) -> None:
    src = tmpfs_dir / "src"
    src.write_bytes(b"data")
    r, w = os.pipe()
    os.close(r)
    try:
        proc = subprocess.run(
            [*COWPROBE, "clone", str(src), str(tmpfs_dir / "dst")],
            stdout=w, stderr=subprocess.PIPE, text=True, timeout=60, check=False,
        )
    finally:
        os.close(w)
    assert proc.returncode == 141, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_json_says_what_happened_to_dest(tmpfs_dir: Path) -> None:
    src = tmpfs_dir / "src"
    src.write_bytes(b"data")

    def run(*extra: str) -> dict[str, object]:
        proc = subprocess.run(
            [*COWPROBE, "clone", "--json", *extra, str(src), str(tmpfs_dir / "dst")],
            capture_output=True, text=True, timeout=60, check=False,
        )
        doc: dict[str, object] = json.loads(proc.stdout)
        return doc

    assert run()["dest_state"] == "created"
    assert run("--fsync")["dest_state"] == "replaced"
    assert run("--reflink", "always")["dest_state"] == "untouched"


def test_repeated_failures_collapse_with_a_count() -> None:
    rows = [("failed", f"wt/lib/f{i}", "EACCES", "Permission denied") for i in range(20101)]
    rows.append(("failed", "wt/other", "EIO", "Input/output error"))
    lines = collapse_failures(rows)
    assert len(lines) == 2
    assert "20101 entries" in lines[0] and "wt/lib/f0" in lines[0]
    assert lines[1] == "failed: wt/other: EIO Input/output error"


@pytest.mark.parametrize("name", ["ENOTTY", "EPERM", "EACCES", "EBADF", "ETXTBSY"])
def test_clone_call_refusals_are_unsupported_only_from_the_call(name: str) -> None:
    err = getattr(errno, name)
    never = pytest.fail
    assert classify(err, never).value == "unsupported"  # type: ignore[union-attr]
    assert classify(err, never, from_call=False) is None


def test_eagain_window_is_spent_in_growing_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    steps = list(transient_delays(5.0))
    assert abs(sum(steps) - 5.0) < 1e-9
    assert steps[0] == 0.001 and max(steps) == 0.5
    assert steps[:4] == sorted(steps[:4])
    monkeypatch.setenv("COWPROBE_EAGAIN_WINDOW", "0.25")
    assert eagain_window() == 0.25
    monkeypatch.setenv("COWPROBE_EAGAIN_WINDOW", "soon")
    with pytest.raises(ValueError, match="COWPROBE_EAGAIN_WINDOW"):
        eagain_window()
    assert list(transient_delays(0)) == []


def test_a_temporary_that_cannot_be_removed_is_named(fakefs: Any) -> None:
    src = fakefs.backing / "src"
    src.write_bytes(os.urandom(70_001))
    dst = fakefs.mountpoint / "dst"
    fakefs.add_fault("write:.dst.cowprobe-*.tmp:EIO")
    fakefs.add_fault("unlink:.dst.cowprobe-*.tmp:EACCES")
    try:
        with pytest.raises(OSError) as exc:
            clone_or_copy(fakefs.mountpoint / "src", dst)
    finally:
        fakefs.clear_faults()
    assert exc.value.errno == errno.EIO
    left = sorted(getattr(exc.value, LEFTOVERS))
    # Every temporary really left is named (the clone attempt's and the
    # copy's: neither unlink was allowed), in the notes too.
    there = sorted(str(fakefs.mountpoint / n) for n in os.listdir(fakefs.mountpoint) if n != "src")
    assert left == there and left
    for path in left:
        assert os.path.basename(path).startswith(".dst.cowprobe-")
        assert any(path in note for note in exc.value.__notes__)
        os.unlink(path)
