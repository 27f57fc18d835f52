"""`fakefs run BACKING MNT -- CMD` whose daemon dies while CMD runs, and
`fakefs run -- CMD` itself killed (CMD must not outlive it).

The daemon is SIGKILLed at a known point: CMD has read through the mount,
said "ready" on its stdout (a pipe this test reads) and blocks reading its
stdin (a pipe this test writes). Only once the daemon is dead -- its mount
a dead one, "Transport endpoint is not connected" -- is CMD let go, and
then it exits with the status under test. fakefs must say, in one line,
that the daemon died and how CMD ended (the counters are lost, so CMD's
status is the one thing left to tell), exit 1 -- a run whose fault
injection died is not a pass, even when CMD's status was 0 -- and leave
no mount, dead or alive, and no control directory behind. No sleeps: every
wait is on an event (a line, a pidfd, an exit).
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from _kernel_view import mounts_under

from fakefs._mounts import find_mount

# Reads through the mount (so it serves), says so, then blocks until the
# test writes a line; exits with $1, or is killed by the signal -$1.
_CMD = ('cat "$FAKEFS_MOUNTPOINT/f" >/dev/null || exit 99; echo ready; read -r _; '
        'case $1 in -*) kill "$1" $$;; esac; exit "$1"')

_DIED = ("fakefs: error: the fakefs daemon died during the run, so its counters are lost; "
         "the command {}\n")


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        # "pid (comm) state ppid ...": comm may hold spaces and parens.
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _end(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _kill_and_wait(pidfd: int) -> None:
    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    # A pidfd turns readable when its process has exited, reaped or not.
    assert select.select([pidfd], [], [], 60)[0], "the killed daemon did not exit"


@pytest.mark.parametrize(("last", "ended"), [
    ("0", "exited with status 0"),
    ("3", "exited with status 3"),
    ("-TERM", "was killed by SIGTERM"),
])
def test_daemon_killed_mid_run(mount_dirs: tuple[Path, Path], last: str, ended: str) -> None:
    import fakefs

    backing, mnt = mount_dirs
    proc = subprocess.Popen(
        [sys.executable, "-m", "fakefs.cli", "run", str(backing), str(mnt),
         "--fault", "open:nothing:EIO", "--", "sh", "-c", _CMD, "sh", last],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    with contextlib.ExitStack() as cleanup:
        # However the test ends: CMD's read sees EOF, nothing keeps running.
        cleanup.callback(_end, proc)
        cleanup.callback(proc.stdin.close)

        ready = proc.stdout.readline()
        assert ready == "ready\n", proc.stderr.read() if proc.stderr else ""
        handle = fakefs.connect(mnt)  # the mount names its daemon
        daemon, control = handle.pid, handle.control
        handle.close()  # a connect() handle never unmounts
        assert _parent(daemon) == proc.pid, "that is not this run's daemon"
        pidfd = os.pidfd_open(daemon)
        cleanup.callback(os.close, pidfd)

        _kill_and_wait(pidfd)
        # The state fakefs must clean up: a mount without its daemon.
        # (os.stat could still answer from the kernel's attribute cache.)
        with pytest.raises(OSError) as dead:
            os.listdir(mnt)
        assert dead.value.errno == errno.ENOTCONN

        proc.stdin.write("go\n")
        proc.stdin.flush()
        rest, err = proc.communicate(timeout=120)
        # The daemon was reaped (by fakefs, before it exited), not left a
        # zombie: ESRCH, through the pidfd (no pid reuse can fool it).
        with pytest.raises(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, 0)

    assert err == _DIED.format(ended)
    assert "Traceback" not in err
    assert rest == ""  # nothing after "ready": no counters line on stdout either
    assert proc.returncode == 1
    # No mount left at MOUNTPOINT, by the kernel's own account (findmnt),
    # and the directory is a plain, empty directory again.
    assert mounts_under(mnt) == []
    assert find_mount(mnt) is None
    assert os.listdir(mnt) == []
    assert not os.path.exists(os.path.dirname(control)), "the control directory was left"
    assert (backing / "f").read_text() == "file\n"


def test_fakefs_run_killed_takes_its_command_with_it() -> None:
    # Syscall rules only: a supervisor SIGKILLed closes the seccomp
    # listener, and every call the filter traps would then fail ENOSYS in a
    # command still running as if under the rules -- errors nobody injected
    # or counted. CMD must end with fakefs instead (PR_SET_PDEATHSIG).
    proc = subprocess.Popen(
        [sys.executable, "-m", "fakefs.cli", "run", "--fault", "fsync:nothing:EIO", "--",
         "sh", "-c", "echo $$; exec cat"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(_end, proc)
        cleanup.callback(proc.stdin.close)  # cat's stdin: EOF ends it if all else fails
        cmd = int(proc.stdout.readline())
        assert _parent(cmd) == proc.pid, "that is not this run's command"
        cmd_fd = os.pidfd_open(cmd)
        cleanup.callback(os.close, cmd_fd)
        cleanup.callback(lambda: signal.pidfd_send_signal(cmd_fd, signal.SIGKILL)
                         if not select.select([cmd_fd], [], [], 0)[0] else None)

        proc.kill()
        proc.wait()
        # cat blocks on a stdin this test still holds open: only the death
        # signal can end it.
        assert select.select([cmd_fd], [], [], 60)[0], "the command outlived fakefs"
