"""Running the cowprobe CLI as a whole process, as a user does."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

COWPROBE = [sys.executable, "-m", "probe.cli"]


def cowprobe(*argv: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """``cowprobe ARGV...``; no traceback may reach its stderr, whatever the outcome."""
    out = subprocess.run([*COWPROBE, *argv], capture_output=True, text=True, check=False,
                         timeout=300, **kwargs)
    assert "Traceback" not in out.stderr
    return out
