"""Helpers shared by the fakefs tests (mounts and `fakefs run`)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from probe.lab import Lab
from probe.pytest_plugin import require


def errno_of(fn: Callable[[], object]) -> int | None:
    try:
        fn()
    except OSError as err:
        return err.errno
    return None


def child_errno(code: str, *args: str) -> int | None:
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


def fakefs_over(lab: Lab, kind: str) -> Iterator[tuple[Any, Path, Path]]:
    """For a fixture: (handle, mountpoint, backing) of a fakefs over a
    ``kind`` scratch directory, mounted on tmpfs; unmounted afterwards."""
    try:
        fakefs = importlib.import_module("fakefs")
    except ImportError as err:
        require(False, f"fakefs is not importable: {err}")
        raise
    backing = lab.scratch_dir(kind, "fakefs-data")
    mnt = lab.scratch_dir("tmpfs", "fakefs-mnt")
    try:
        cm = fakefs.mount(backing, mnt)
        fs = cm.__enter__()
    except Exception as err:
        require(False, f"cannot mount fakefs (needs /dev/fuse and pyfuse3): {err}")
        raise
    try:
        yield fs, mnt, backing
    finally:
        cm.__exit__(None, None, None)


def fakefs_run(root: Path, rules: list[str], *cmd: str,
               cwd: Path | None = None) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """``fakefs run --root ROOT --fault RULE... -- CMD`` as a whole process:
    its result and the counters it printed (its last JSON line on stderr)."""
    argv = [sys.executable, "-m", "fakefs.cli", "run", "--root", str(root)]
    for rule in rules:
        argv += ["--fault", rule]
    res = subprocess.run([*argv, "--", *cmd], capture_output=True, text=True, check=False,
                         cwd=cwd or root, timeout=240)
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("{")]
    counters = json.loads(lines[-1]) if lines else {}
    return res, counters


def rule_hits(counters: dict[str, Any]) -> list[int]:
    """Each syscall rule's delivered faults, in rule order."""
    return [int(r["hits"]) for r in counters.get("syscall_rules", [])]


def cowprobe_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "probe.cli", *args]
