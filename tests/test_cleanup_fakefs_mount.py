"""`fakefs mount --background` signalled while its daemon starts: the CLI
exits 128+n and leaves no daemon behind to mount later, unannounced.

The daemon is held at its very start (a sitecustomize on its PYTHONPATH that
blocks on a FIFO), so the signal is certain to reach the CLI while it waits
for the daemon's ready line -- no timing involved."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from _kernel_view import mounts_under

from probe._liveness import pid_alive

_GATE = """\
import os, sys
gate = os.environ.get("FAKEFS_TEST_GATE")
if gate and "fakefs._daemon" in sys.orig_argv:
    with open(os.path.join(gate, "here"), "w") as f:  # the event: started
        f.write(str(os.getpid()))
    with open(os.path.join(gate, "go")) as f:  # held until a writer comes
        f.read()
"""

# SIGINT is ignored in a background job of a non-interactive shell, and that
# is inherited: the CLI gets the default a terminal would give it.
_DEFAULT_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.executable, [sys.executable, '-m', 'fakefs.cli', *sys.argv[1:]])"
)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_signal_while_mounting_stops_the_daemon(tmp_path: Path, sig: signal.Signals) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    (gate / "sitecustomize.py").write_text(_GATE)
    os.mkfifo(gate / "here")
    os.mkfifo(gate / "go")
    backing, mnt = tmp_path / "backing", tmp_path / "mnt"
    backing.mkdir()
    mnt.mkdir()
    env = {**os.environ, "FAKEFS_TEST_GATE": str(gate),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(gate), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(
        [sys.executable, "-c", _DEFAULT_SIGINT, "mount", "--background", str(backing), str(mnt)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    with open(gate / "here") as f:  # blocks until the daemon has started
        daemon = int(f.read())
    try:
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)  # a bound, not the sync
        # The CLI waited for its daemon before exiting: gone now, or left
        # to mount as soon as it got going, with nobody told of it.
        assert not pid_alive(daemon), f"daemon {daemon} outlived the CLI's {sig.name}"
        assert proc.returncode == 128 + sig, err
        assert out == ""
    finally:
        if pid_alive(daemon):
            os.kill(daemon, signal.SIGKILL)  # still held: it mounted nothing
    assert mounts_under(mnt) == []
