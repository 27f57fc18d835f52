"""Truthful faults under signals: a call fakefs has received and is still
answering (here: a ``delay=`` rule's wait) must not be ended by a caught
signal. The kernel's own fsync never returns EINTR, and a restarted call
is one call of the program, not two for the rules and counters.

The oracle is strace, run by ``fakefs run`` (``fakefs run -- strace -f``:
the supervisor itself stays untraced, and strace sees each result the
program got, ERESTARTSYS included).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from _fakefs_util import fakefs_run

from probe.pytest_plugin import require

pytestmark = pytest.mark.timeout(120)

# The program: SIGUSR1 caught (with or without SA_RESTART); a helper thread
# signals the main thread once fakefs holds its fsync -- known by the delay
# timer thread fakefs starts right after receiving the call (fakefs is the
# ancestor running fakefs.cli) -- and the raw libc result is printed.
_PROG = r"""
import ctypes, json, os, signal, sys, threading
libc = ctypes.CDLL(None, use_errno=True)
signal.signal(signal.SIGUSR1, lambda *a: None)
if sys.argv[2] == "restart":
    signal.siginterrupt(signal.SIGUSR1, False)

def fakefs_pid():
    pid = os.getppid()
    while pid > 1:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"fakefs.cli" in f.read():
                return pid
        with open(f"/proc/{pid}/stat") as f:
            pid = int(f.read().rsplit(")", 1)[1].split()[1])
    raise SystemExit("no fakefs ancestor")

tasks = f"/proc/{fakefs_pid()}/task"
before = len(os.listdir(tasks))
done = threading.Event()
kicked = []

def kick():
    while not done.is_set():
        if len(os.listdir(tasks)) > before:
            signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)
            kicked.append(1)
            return
        os.sched_yield()

fd = os.open(sys.argv[1], os.O_RDWR)
t = threading.Thread(target=kick)
t.start()
ret = libc.fsync(fd)
err = ctypes.get_errno() if ret else 0
done.set()
t.join()
print(json.dumps({"ret": ret, "errno": err, "kicked": len(kicked)}))
"""


@pytest.mark.parametrize("mode", ["eintr", "restart"])
def test_a_signal_while_fakefs_holds_the_call_neither_fails_nor_repeats_it(
        tmp_path: Path, mode: str) -> None:
    strace = shutil.which("strace")
    require(strace is not None, "strace (Debian package strace)")
    assert strace is not None
    (tmp_path / "a").write_bytes(b"x")
    (tmp_path / "prog.py").write_text(_PROG)
    log = tmp_path / "strace.log"
    res, counters = fakefs_run(
        tmp_path, ["fsync:a:delay=2s"], str(strace), "-f", "-qq", "-e", "trace=fsync",
        "-o", str(log), "/usr/bin/python3", str(tmp_path / "prog.py"), "a", mode,
    )
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout.splitlines()[-1])
    assert got["kicked"] == 1  # the signal did arrive while fakefs held the call
    # What the program saw, as the kernel would have given it: fsync is 0.
    assert (got["ret"], got["errno"]) == (0, 0)
    calls = [ln for ln in log.read_text().splitlines() if " fsync(" in ln]
    assert len(calls) == 1 and calls[0].rstrip().endswith("= 0"), calls
    # One call of the program: one match, one delay delivered, none absorbed.
    [rule] = counters["syscall_rules"]
    assert (rule["matches"], rule["hits"], rule["absorbed"]) == (1, 1, 0)
    assert counters["syscalls"] == {"fsync": 1}


# A child sits in a delayed fsync; the parent SIGKILLs it, then waits for
# fakefs's delay timer thread to end (its answer found nobody) before exiting.
_KILLED = r"""
import ctypes, os, signal, sys
libc = ctypes.CDLL(None, use_errno=True)
tasks = f"/proc/{os.getppid()}/task"  # fakefs run
before = len(os.listdir(tasks))
pid = os.fork()
if pid == 0:
    libc.fsync(os.open(sys.argv[1], os.O_RDWR))
    os._exit(0)
while len(os.listdir(tasks)) == before:  # fakefs received the call: its timer runs
    if os.waitpid(pid, os.WNOHANG)[0]:
        raise SystemExit("the delay ended before the child was seen in it")
    os.sched_yield()
os.kill(pid, signal.SIGKILL)
print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
while len(os.listdir(tasks)) > before:  # the timer answered (nobody) and ended
    os.sched_yield()
"""


def test_a_delay_whose_caller_was_killed_is_absorbed_not_a_hit(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x")
    (tmp_path / "prog.py").write_text(_KILLED)
    res, counters = fakefs_run(
        tmp_path, ["fsync:a:delay=3s"], "/usr/bin/python3", str(tmp_path / "prog.py"), "a",
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [str(-9)]
    [rule] = counters["syscall_rules"]
    assert (rule["matches"], rule["hits"], rule["absorbed"]) == (1, 0, 1)
