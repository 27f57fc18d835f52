"""What `cowprobe` prints: --help and --version into a closed pipe or a
full disk are one line and an exit code like every command's output, and a
table into a pipe is one row per line, every cell whole."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from probe.pytest_plugin import require

COWPROBE = [sys.executable, "-m", "probe.cli"]

_TOP_LEVEL = [["--version"], ["--help"], ["clone", "--help"], ["lab", "up", "--help"]]


@pytest.mark.parametrize("argv", _TOP_LEVEL)
def test_help_and_version_into_a_full_disk(argv: list[str]) -> None:
    # Opened for writing only: /dev/full is never replaced or created here.
    require(os.path.exists("/dev/full") and stat.S_ISCHR(os.stat("/dev/full").st_mode),
            "/dev/full")
    with open("/dev/full", "w") as full:
        out = subprocess.run([*COWPROBE, *argv], stdout=full, stderr=subprocess.PIPE,
                             text=True, check=False, timeout=60)
    assert "Traceback" not in out.stderr
    assert out.stderr == "cowprobe: cannot write output: No space left on device\n"
    assert out.returncode == 1


@pytest.mark.parametrize("argv", _TOP_LEVEL)
def test_help_and_version_into_a_closed_pipe(argv: list[str]) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        out = subprocess.run([*COWPROBE, *argv], stdout=write_end, stderr=subprocess.PIPE,
                             text=True, check=False, timeout=60)
    finally:
        os.close(write_end)
    assert "Traceback" not in out.stderr
    assert out.stderr == "cowprobe: cannot write output: Broken pipe\n"
    assert out.returncode == 141


def test_a_table_into_a_pipe_keeps_each_row_on_one_line(tmp_path: Path) -> None:
    # A long path with a newline, a tab and a backslash in it: the report's
    # column heading. Escaped, whole, on the heading's one line.
    d = tmp_path / ("a\nb\tc\\d-" + "x" * 80)
    d.mkdir()
    out = subprocess.run([*COWPROBE, "report", str(d), "--only", "reflink"],
                         capture_output=True, text=True, check=False, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    shown = str(d).replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")
    assert lines[0] == "cowprobe report"
    first, rest = lines[2].split("  ", 1)  # the rule under the heading
    assert lines[1] == " " * (len(first) + 2) + shown
    assert rest == "-" * len(shown)
    assert out.stdout.count("x" * 80) == 1
    assert list(d.iterdir()) == []
