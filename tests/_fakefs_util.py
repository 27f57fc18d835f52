"""Helpers shared by the fakefs mount tests."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable


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
