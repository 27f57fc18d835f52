"""Truthful faults, with strace as the oracle: a rule's ``hits`` are the
faults a program's syscall saw, and what the kernel swallowed is counted as
absorbed. Foreign programs (dd, cat through the shell, a Python process)
run under ``strace -f`` against a mount, and the counts must agree.

Covered here: short=N rules (a hit only where the transfer was cut), FLUSH
(its error reaches close(2) only, never an exit or a dup2 over the
descriptor) and GETXATTR (the kernel's own security.capability check before
a truncation drops its error)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import fakefs
from probe.pytest_plugin import require

#: an errno no program here meets by itself
ERR = "EREMOTEIO"
#: "PID read(FD</path>, ..., ASKED) = GOT" as printed by strace -y
_IO = re.compile(r"^\d+\s+(read|write)\((\d+)<([^>]*)>, .*, (\d+)\)\s+= (-?\d+)")


def _strace() -> str:
    strace = shutil.which("strace")
    require(strace is not None, "strace (Debian package strace)")
    assert strace is not None
    return strace


def _traced(fs: fakefs.FakeFS, tmp_path: Path, script: str,
            trace: str = "trace=all") -> tuple[list[str], subprocess.CompletedProcess[str]]:
    """``sh -c SCRIPT`` in the mount under strace: its syscall lines."""
    log = tmp_path / "strace.log"
    res = subprocess.run([_strace(), "-f", "-qq", "-y", "-e", trace, "-o", str(log),
                          "sh", "-c", script], cwd=fs.mountpoint, capture_output=True,
                         text=True, check=False, timeout=120)
    return log.read_text().splitlines(), res


def _failed(lines: list[str], call: str | None = None) -> int:
    """Syscalls (of ``call``, or any) that returned ERR."""
    pat = re.compile(rf"^\d+\s+(?:<\.\.\. )?(\w+)(?:\(| resumed>).*= -1 {ERR} ")
    return sum(1 for ln in lines if (m := pat.match(ln)) and call in {None, m.group(1)})


def _rule(fs: fakefs.FakeFS, rid: int) -> dict[str, Any]:
    return next(r for r in fs.faults() if r["id"] == rid)


@pytest.mark.parametrize("short", [4096, 1000])
def test_a_short_read_rule_hits_only_the_reads_it_cut(fakefs: fakefs.FakeFS, tmp_path: Path,
                                                      short: int) -> None:
    size = 32 << 10
    (fakefs.backing / "f").write_bytes(os.urandom(size))
    rid = fakefs.add_fault(f"read:f:short={short}")
    lines, res = _traced(fakefs, tmp_path, "dd if=f of=/dev/null bs=4k", "trace=read")
    assert res.returncode == 0, res.stderr
    # A read returning fewer bytes than asked, short of the file's end: the
    # rule's doing (the last ones, at the end, are the file's).
    pos = cut = 0
    for ln in lines:
        m = _IO.match(ln)
        if m and m.group(3).endswith("/mnt/f"):
            asked, got = int(m.group(4)), int(m.group(5))
            pos += max(got, 0)
            cut += got < asked and pos < size
    rule = _rule(fakefs, rid)
    # dd asks 4 KiB: short=4096 cuts nothing; short=1000 cuts 32 reads
    assert cut == (0 if short == 4096 else size // 1000)
    assert rule["hits"] == cut, (rule, fakefs.counters())
    assert fakefs.counters()["shortened"] == cut


@pytest.mark.parametrize("short", [4096, 1000])
def test_a_short_write_rule_hits_only_the_writes_it_cut(fakefs: fakefs.FakeFS,
                                                        tmp_path: Path, short: int) -> None:
    rid = fakefs.add_fault(f"write:out:short={short}")
    lines, res = _traced(fakefs, tmp_path, "dd if=/dev/zero of=out bs=4k count=8",
                         "trace=write")
    assert res.returncode == 0, res.stderr
    cut = 0
    for ln in lines:
        m = _IO.match(ln)
        if m and m.group(3).endswith("/mnt/out"):
            cut += int(m.group(5)) < int(m.group(4))
    assert (fakefs.backing / "out").stat().st_size == 8 * 4096  # dd wrote the rest
    assert cut == (0 if short == 4096 else 8 * 4)
    assert _rule(fakefs, rid)["hits"] == cut


FLUSHERS = {
    # the file is closed by exit_group: nobody sees FLUSH's error
    "exit": (f"{sys.executable} -c 'import os; os.open(\"f\", os.O_RDONLY); os._exit(0)'",
             0, 1),
    # dup2 over the descriptor drops it, close() of the other returns it
    "dup2 then close": (f"{sys.executable} -c 'import os\nfd = os.open(\"f\", os.O_RDONLY)\n"
                        "g = os.dup(fd)\nos.dup2(0, fd)\nos.close(g)'", 1, 1),
    # the shell closes its descriptor, cat its stdin: two close() errors
    "cat < f": ("cat < f > /dev/null", 2, None),
}


@pytest.mark.parametrize("how", sorted(FLUSHERS))
def test_a_flush_fault_hits_only_when_close_returned_it(fakefs: fakefs.FakeFS,
                                                        tmp_path: Path, how: str) -> None:
    (fakefs.backing / "f").write_bytes(b"x" * 100)
    script, hits, absorbed = FLUSHERS[how]
    rid = fakefs.add_fault(f"flush:f:{ERR}")
    lines, _ = _traced(fakefs, tmp_path, script)
    rule = _rule(fakefs, rid)
    flushes = [r for r in fakefs.trace() if r["op"] == "flush" and r["rule"] == rid]
    seen = _failed(lines)
    assert seen == _failed(lines, "close") == hits, lines
    assert rule["hits"] == seen, (rule, flushes)
    assert rule["unconfirmed"] == 0, flushes
    assert rule["hits"] + rule["absorbed"] == len(flushes)
    if absorbed is not None:
        assert rule["absorbed"] == absorbed, flushes


def test_the_kernels_capability_check_absorbs_a_getxattr_fault(fakefs: fakefs.FakeFS,
                                                               tmp_path: Path) -> None:
    (fakefs.backing / "f").write_bytes(b"old")
    rid = fakefs.add_fault(f"getxattr:f:{ERR}:times=1")
    # dd's O_TRUNC open asks for security.capability first (set-ID and
    # capability kill check) and goes on whatever the answer; the getxattr
    # system call after it is the first to see the fault.
    lines, res = _traced(fakefs, tmp_path, "dd if=/dev/zero of=f bs=1k count=1 && "
                         f"{sys.executable} -c 'import os; os.getxattr(\"f\", \"user.x\")'")
    assert res.returncode != 0, res.stderr
    assert (fakefs.backing / "f").stat().st_size == 1024
    rule = _rule(fakefs, rid)
    assert _failed(lines) == _failed(lines, "getxattr") == 1, lines
    assert rule["hits"] == 1, rule
    assert rule["absorbed"] == 1, rule
    assert rule["unconfirmed"] == 0, rule
