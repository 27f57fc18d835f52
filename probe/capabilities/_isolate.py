"""An isolated probe: the probe runs in a child interpreter, so a time limit
holds even inside a syscall that never returns.

The in-process ``timeout=`` is checked between capabilities. A dead NFS
server or a stalled FUSE daemon stops a probe *inside* a call -- a create,
a FICLONE -- and no check in the same thread ever runs again. Here the
parent only waits on a pipe; the probe, in ``python -m
probe.capabilities._isolate``, forwards every event as it happens (the
identity, each private directory, each answer, each removal: ``Watch``), so
when the limit has passed the parent still has everything found so far and
knows which private directories may be left. ``validate_directory(timeout=)``
runs its stat and open the same way: a mount that hangs a stat is an error
after the limit, not a hang.

Stopping, and why in this order:

* At ``timeout`` the child's own soft limit stops it starting capabilities;
  it normally reports a moment later, cleaned up.
* ``grace`` after that, SIGTERM: the child turns it into KeyboardInterrupt,
  which removes its private directory (the probe's ``finally``) -- once the
  call it is in returns. A FUSE request the daemon has already read is
  waited out by the kernel even for SIGKILL (``request_wait_answer``), so:
* ``grace`` after that, SIGKILL, and another ``grace`` at most to see it
  go. A child still there is left to die when its filesystem answers; the
  report names its pid and every private directory it may leave.

The child dies with its parent (PR_SET_PDEATHSIG, as SIGTERM: it still
cleans up), and a Ctrl-C reaches both (one process group). Standard
library only; nothing is written but the probe's own private directories.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import time
from typing import IO, Any

from .. import _libc
from ._model import Capability, CapabilityReport, Identity, PairReport, ProbePathError, Status
from ._probe import Watch, open_check, probe_directory, probe_directory_pair

__all__ = ["isolated_check", "isolated_directory", "isolated_pair"]

#: The longest wait at each step of stopping the child (see the docstring).
_GRACE = 1.0
#: Where the probe's own package is, for a child that must import this
#: very copy of it (a source checkout, a zipapp), not another installed one.
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def isolated_directory(specs: list[tuple[str, str, str]], timeout: float | None, *,
                       path: str, only: list[str] | None, label: str | None,
                       ) -> CapabilityReport:
    run = _Run(specs, timeout)
    run.go({"kind": "directory", "path": path, "only": only, "label": label})
    if isinstance(run.result, CapabilityReport):
        return run.result
    opened = run.opened
    identity = opened.get("identity")
    assert identity is None or isinstance(identity, Identity)
    why = run.why()
    return CapabilityReport(
        str(opened.get("path", path)), str(opened.get("real_path", path)), identity,
        run.capabilities(why), limitation=None if identity is not None else why,
        leftover=run.leftover(), seconds=run.seconds(), label=label)


def isolated_pair(specs: list[tuple[str, str, str]], timeout: float | None, *,
                  source_dir: str, dest_dir: str, label: str | None) -> PairReport:
    run = _Run(specs, timeout)
    run.go({"kind": "pair", "source_dir": source_dir, "dest_dir": dest_dir, "label": label})
    if isinstance(run.result, PairReport):
        return run.result
    opened = run.opened
    why = run.why()
    return PairReport(
        str(opened.get("source", source_dir)), str(opened.get("dest", dest_dir)),
        bool(opened.get("same_filesystem", False)), run.capabilities(why),
        limitation=None if opened else why, leftover=run.leftover(),
        seconds=run.seconds(), label=label)


def isolated_check(path: str, timeout: float) -> str:
    """``validate_directory`` in a child: the path, or ProbePathError --
    the child's own, or "did not answer" once ``timeout`` has passed."""
    run = _Run([], timeout)
    run.go({"kind": "check", "path": path})
    if isinstance(run.result, str):
        return run.result
    stuck = f"; {run.leftover()}" if run.stuck is not None else ""
    err = ProbePathError(f"{path}: {run.why()}{stuck}")
    err.timed_out, err.reason = run.late, run.why()
    err.leftover = run.leftover() if run.stuck is not None else None
    raise err


class _Run:
    """One child, the events it sent, and how it ended."""

    def __init__(self, specs: list[tuple[str, str, str]], timeout: float | None) -> None:
        self.specs = specs
        self.timeout = timeout
        self.grace = _GRACE if timeout is None else min(_GRACE, max(timeout / 2, 0.05))
        self.t0 = time.perf_counter()
        self.started = False
        self.opened: dict[str, Any] = {}
        self.done: list[Capability] = []
        #: private directories made and not yet removed, in order
        self.unremoved: dict[str, None] = {}
        #: what the child's own removals could not remove
        self.stayed: list[str] = []
        self.result: CapabilityReport | PairReport | str | None = None
        self.raised: BaseException | None = None
        self.ended: str | None = None  # how the child ended, if not by reporting
        self.late = False  # stopped at the time limit (not crashed, not done)
        self.stuck: int | None = None  # the pid of a child that would not go
        self.events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()

    def go(self, request: dict[str, Any]) -> None:
        # The child's soft limit is what is left of ours once it runs: its
        # interpreter takes tens of milliseconds to start.
        request["deadline"] = None if self.timeout is None else time.monotonic() + self.timeout
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, env.get("PYTHONPATH")) if p)
        # stderr to /dev/null: what went wrong comes back through the pipe,
        # and a child's traceback must never reach a CLI user's terminal.
        proc = subprocess.Popen(
            [sys.executable, "-m", "probe.capabilities._isolate", str(os.getpid())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        assert proc.stdin is not None and proc.stdout is not None
        reader = threading.Thread(target=_read, args=(proc.stdout, self.events),
                                  name="cowprobe-isolated-probe", daemon=True)
        reader.start()
        try:
            with contextlib.suppress(BrokenPipeError), proc.stdin:
                pickle.dump(request, proc.stdin)
            late = None if self.timeout is None else self.t0 + self.timeout + self.grace
            if not self._drain(late):
                self.ended, self.late = self._late(), True
                self._stop(proc)
            else:
                try:
                    proc.wait(timeout=self.grace)
                except subprocess.TimeoutExpired:
                    self._stop(proc)
        except BaseException:
            # Ctrl-C or SIGTERM here: the child gets it too (Ctrl-C) or not
            # (a signal to this process alone); either way it is asked to
            # clean up and stop before this process goes on unwinding.
            self._stop(proc)
            raise
        finally:
            if self.stuck is None:
                reader.join()
                proc.stdout.close()
        if self.raised is not None:
            raise self.raised
        if self.result is None and self.ended is None:
            self.ended = f"the probe process ended (status {proc.returncode}) before it reported"

    def _drain(self, until: float | None) -> bool:
        """Events until the child has ended (True) or ``until`` has passed."""
        while True:
            wait = None if until is None else until - time.perf_counter()
            if wait is not None and wait <= 0:
                return False
            try:
                kind, payload = self.events.get(timeout=wait)
            except queue.Empty:
                return False
            if kind == "eof":
                return True
            self._take(kind, payload)

    def _late(self) -> str:
        # Said by how far the child got: a slow start of the interpreter is
        # not the filesystem's fault, and must not be reported as if it were.
        limit = f"within {self.timeout:g} s"
        if not self.started:
            return f"the probe process did not start {limit}"
        if not self.opened:
            return f"the filesystem did not answer {limit} (opening the directory)"
        return f"the filesystem did not answer {limit}"

    def _take(self, kind: str, payload: Any) -> None:
        if kind == "started":
            self.started = True
        elif kind == "opened":
            self.opened = payload
        elif kind == "private":
            self.unremoved[payload] = None
        elif kind == "removed":
            path, leftover = payload
            self.unremoved.pop(path, None)
            if leftover:
                self.stayed.append(leftover)
        elif kind == "done":
            self.done.append(payload)
        elif kind == "report":
            self.result = payload
        elif kind == "raised":
            self.raised = payload

    def _stop(self, proc: subprocess.Popen[bytes]) -> None:
        for send in (proc.terminate, proc.kill):
            if proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                send()
            # Its events on the way out (a "removed" above all), then its exit.
            if self._drain(time.perf_counter() + self.grace):
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=self.grace)
        if proc.poll() is None:
            self.stuck = proc.pid
            _ABANDONED.append(proc)

    def why(self) -> str:
        return self.ended or "the probe process ended before it reported"

    def capabilities(self, why: str) -> tuple[Capability, ...]:
        got = {c.name for c in self.done}
        rest = [s for s in self.specs if s[0] not in got]
        out = list(self.done)
        for i, (name, title, group) in enumerate(rest):
            reason = (f"{why}: stopped while this was being probed" if i == 0 and self.opened
                      else f"not probed: {why}")
            out.append(Capability(name=name, title=title, group=group,
                                  status=Status.COULD_NOT_TELL, reason=reason))
        return tuple(out)

    def leftover(self) -> str | None:
        left = [f"{path} may be left behind: the probe was stopped before it removed it"
                for path in self.unremoved]
        left += self.stayed
        if self.stuck is not None:
            left.append(f"the probe process {self.stuck} is stuck in the kernel; it ends "
                        "when the filesystem answers")
        return "; ".join(left) or None

    def seconds(self) -> float:
        return time.perf_counter() - self.t0


#: Children that would not die (see the module docstring). Held so that
#: no Popen finaliser reaps them behind a caller's back.
_ABANDONED: list[subprocess.Popen[bytes]] = []


def _read(stream: IO[bytes], events: queue.SimpleQueue[tuple[str, Any]]) -> None:
    # EOF, a closed pipe or a torn last message all mean the child is gone.
    with contextlib.suppress(Exception):
        while True:
            # Our own child, over a pipe nobody else holds.
            events.put(pickle.load(stream))  # noqa: S301
    events.put(("eof", None))


class _Forward(Watch):
    """The child's ``Watch``: each event pickled to the parent at once."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out

    def send(self, kind: str, payload: Any) -> None:
        # Whole messages only: a SIGTERM handled mid-write would tear this
        # one, and the parent would read nothing after it -- the "removed"
        # of the clean-up that SIGTERM itself sets off above all.
        old = signal.pthread_sigmask(signal.SIG_BLOCK, _STOPS)
        try:
            pickle.dump((kind, payload), self.out)
            self.out.flush()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def opened(self, **fields: Any) -> None:
        self.send("opened", fields)

    def private(self, path: str) -> None:
        self.send("private", path)

    def removed(self, path: str, leftover: str | None) -> None:
        self.send("removed", (path, leftover))

    def done(self, cap: Capability) -> None:
        self.send("done", cap)


_STOPS = {signal.SIGINT, signal.SIGTERM}


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _child(parent: int) -> None:  # pragma: no cover - runs in the child
    signal.signal(signal.SIGTERM, _interrupt)
    if not _libc.die_with_parent(parent, signal.SIGTERM):
        return
    forward = _Forward(sys.stdout.buffer)
    try:
        forward.send("started", None)
        request = pickle.load(sys.stdin.buffer)  # noqa: S301 - from our own parent
        deadline = request["deadline"]
        timeout = None if deadline is None else max(deadline - time.monotonic(), 1e-6)
        if request["kind"] == "check":
            report: CapabilityReport | PairReport | str = open_check(request["path"])
        elif request["kind"] == "directory":
            only = request["only"]
            report = probe_directory(
                request["path"], None if only is None else set(only), label=request["label"],
                timeout=timeout, watch=forward)
        else:
            report = probe_directory_pair(
                request["source_dir"], request["dest_dir"], label=request["label"],
                timeout=timeout, watch=forward)
        forward.send("report", report)
    except KeyboardInterrupt:
        pass  # stopped: the private directories are gone (or reported) already
    except Exception as exc:  # the parent raises it: a bad path is ProbePathError there too
        with contextlib.suppress(Exception):
            forward.send("raised", exc)


if __name__ == "__main__":  # pragma: no cover - the child
    with contextlib.suppress(BrokenPipeError, KeyboardInterrupt):
        _child(int(sys.argv[1]))
    # No atexit and no flush of a pipe the parent may have closed.
    os._exit(0)
