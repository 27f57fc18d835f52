"""Whole processes as users run them, for every benchmark here.

A user's install has bytecode caches and console scripts. A
PYTHONDONTWRITEBYTECODE in the benchmarking shell would make every timed
cowprobe or fakefs process recompile the package from source (~60 ms, more
than a whole `cowprobe materialize` of 200 files should take), and
``python -m`` adds runpy; neither is what is being measured.
"""

from __future__ import annotations

import compileall
import os
import sys
from pathlib import Path

_PROJECT = Path(__file__).resolve().parents[2]


def as_users_run_it() -> None:
    """Bytecode caches written and kept, for this process and its children."""
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    sys.dont_write_bytecode = False
    for package in ("probe", "fakefs"):
        compileall.compile_dir(_PROJECT / package, quiet=1)


def console_script(name: str, module: str) -> list[str]:
    """The installed console script ``name``; ``python -m module`` where
    there is none."""
    script = Path(sys.executable).with_name(name)
    return [str(script)] if script.exists() else [sys.executable, "-m", module]
