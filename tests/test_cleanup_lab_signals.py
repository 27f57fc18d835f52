"""`cowprobe lab up` ends, and tears its lab down, on every signal that
means "stop": a lab whose owner outlives its terminal is never stale, so
no `lab clean` could ever reap it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from _kernel_view import loops_under, mounts_under

from probe.lab import cleanup_stale

COWPROBE = [sys.executable, "-m", "probe.cli"]


@pytest.fixture
def base() -> Iterator[Path]:
    # Private to this test: no other engineer's reaper races the checks.
    b = Path(tempfile.mkdtemp(prefix="cowprobe-test-cleanup-", dir="/tmp"))
    try:
        yield b
    finally:
        cleanup_stale(b)
        assert mounts_under(b) == []
        assert list(b.iterdir()) == [], "a lab root was left behind"
        b.rmdir()


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM, signal.SIGINT])
def test_up_tears_down_on_every_stop_signal(base: Path, sig: signal.Signals) -> None:
    proc = subprocess.Popen(
        [*COWPROBE, "lab", "--base-dir", str(base), "up", "--json", "--kinds", "ext4", "tmpfs"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    lines = []
    for line in proc.stdout:  # the event: the lab is up and printed
        lines.append(line)
        if line == "}\n":
            break
    root = Path(json.loads("".join(lines))["root"])
    # The stderr line comes after the JSON: once it is read, the process is
    # (about to be) in its wait for the signal, past the build.
    assert "lab is up" in proc.stderr.readline()
    proc.send_signal(sig)
    try:
        # The timeout only bounds a process that ignored the signal.
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.terminate()
        proc.communicate(timeout=60)
        pytest.fail(f"lab up ignored {sig.name}: the lab stayed up with a live owner")
    assert proc.returncode == 0, err
    assert "torn down" in err
    assert mounts_under(root) == [] and loops_under(root) == [] and not root.exists()
