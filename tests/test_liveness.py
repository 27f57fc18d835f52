"""The one owner-liveness rule (probe._liveness), asked of real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from probe._liveness import Owner, owner_alive, read_owner, start_ticks, write_owner


def test_me_is_alive_and_a_changed_field_is_not(tmp_path: Path) -> None:
    me = write_owner(tmp_path / "owner", note="x")
    assert read_owner(tmp_path / "owner") == me == Owner.me()
    assert owner_alive(tmp_path / "owner")
    assert me.start_ticks is not None
    # Same pid, another start time: a recycled pid. Another boot: dead too.
    assert not me._replace(start_ticks=me.start_ticks + 1).alive()
    assert not me._replace(boot_id="another-boot").alive()


def test_a_zombie_counts_as_dead() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        # Not reaped: until waitpid it is a zombie with its pid still taken.
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
        assert Path(f"/proc/{child.pid}").exists()
        assert start_ticks(child.pid) is None
    finally:
        child.wait()


def test_unreadable_record_falls_back_to_the_pid(tmp_path: Path) -> None:
    record = tmp_path / "owner"
    record.write_text("{torn")
    assert read_owner(record) is None
    assert owner_alive(record, os.getpid())
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert not owner_alive(record, dead.pid)
    assert owner_alive(record)  # nothing proves the owner dead: never reap
