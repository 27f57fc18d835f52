"""The Python handle: start a daemon, drive it, always unmount.

Standard library only: tests and the CLI import this without pyfuse3.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ._errors import ControlError, DaemonError, MountError
from ._mounts import (
    CONTROL_DIR_PREFIX,
    check_backing,
    check_cache_timeout,
    check_mountpoint,
    check_not_nested,
    check_trace_limit,
    find_mount,
    unmount,
)
from ._rules import FaultRule, RuleError, parse_rule
from ._trace import to_jsonl

__all__ = ["ControlError", "FakeFS", "connect", "fuse_rule_text", "mount"]

#: how long a daemon may take to mount before we give up on it
START_TIMEOUT = 30.0
#: how long a daemon may take to exit once its mount is gone
STOP_TIMEOUT = 10.0


def fuse_rule_text(rule: str | FaultRule) -> str:
    """The canonical text of a rule for the daemon; a syscall rule is refused:
    the daemon only sees FUSE requests, never a process's syscalls."""
    parsed = rule if isinstance(rule, FaultRule) else parse_rule(rule)
    if parsed.syscall:
        raise RuleError(
            f"{parsed.text!r} is a syscall rule: it applies through 'fakefs run' or "
            "fakefs.syscall_faults(), not on a mount"
        )
    return parsed.text


class _Channel:
    """One connection to a daemon's control socket; one request at a time."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._sock: socket.socket | None = None
        self._buf = b""
        self._lock = threading.Lock()

    def call(self, cmd: str, **fields: Any) -> Any:
        with self._lock:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.connect(self.path)
                except OSError as err:
                    sock.close()
                    raise ControlError(
                        f"cannot reach fakefs daemon at {self.path}: {err}"
                    ) from None
                self._sock = sock
            sock = self._sock
            try:
                sock.sendall(json.dumps({"cmd": cmd, **fields}).encode() + b"\n")
                while b"\n" not in self._buf:
                    chunk = sock.recv(1 << 20)
                    if not chunk:
                        raise ControlError("fakefs daemon closed the control channel")
                    self._buf += chunk
            except OSError as err:
                self._close()
                raise ControlError(f"fakefs control channel broke: {err}") from None
            except ControlError:
                self._close()
                raise
            line, self._buf = self._buf.split(b"\n", 1)
        reply = json.loads(line)
        if not reply.get("ok"):
            raise ControlError(reply.get("error", "unknown error"))
        return reply.get("result")

    def _close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buf = b""

    def close(self) -> None:
        with self._lock:
            self._close()


class FakeFS:
    """A running fakefs mount. Every command returns once it is in force."""

    def __init__(self, backing: Path, mountpoint: Path, pid: int, control: str, *,
                 proc: subprocess.Popen[bytes] | None = None, lifeline: int | None = None,
                 mount_id: int | None = None, owns_mount: bool = True) -> None:
        self.backing = backing
        self.mountpoint = mountpoint
        self.pid = pid
        self.control = control
        self._proc = proc
        self._lifeline = lifeline
        self._mount_id = mount_id
        self._chan = _Channel(control)
        self._closed = False
        self._owns_mount = owns_mount

    def __repr__(self) -> str:
        return f"<FakeFS {str(self.mountpoint)!r} over {str(self.backing)!r} pid={self.pid}>"

    # -- rules -----------------------------------------------------------------
    def add_fault(self, rule: str | FaultRule) -> int:
        """Arm a rule; returns its id. Raises RuleError for a bad rule."""
        return int(self._chan.call("add", rule=fuse_rule_text(rule))["id"])

    def remove_fault(self, rule_id: int) -> None:
        self._chan.call("remove", id=rule_id)

    def clear_faults(self) -> None:
        self._chan.call("clear")

    def faults(self) -> list[dict[str, Any]]:
        return list(self._chan.call("list"))

    # -- observation -------------------------------------------------------------
    def trace(self) -> list[dict[str, Any]]:
        return list(self._chan.call("trace"))

    def trace_jsonl(self) -> str:
        return to_jsonl(self.trace())

    def clear_trace(self) -> None:
        self._chan.call("clear_trace")

    def counters(self) -> dict[str, Any]:
        return dict(self._chan.call("counters"))

    def ping(self) -> dict[str, Any]:
        return dict(self._chan.call("ping"))

    # -- lifetime ----------------------------------------------------------------
    def wait_daemon(self, timeout: float | None = None) -> int | None:
        """Block until the daemon exits; its exit status (None: not ours to
        wait for, e.g. a handle from :func:`connect`)."""
        if self._proc is None:
            return None
        return self._proc.wait(timeout)

    def close(self) -> None:
        """Unmount and stop the daemon; safe to call twice, and after the
        daemon was killed (the stale mount is removed all the same)."""
        if self._closed:
            return
        self._closed = True
        self._chan.close()
        if not self._owns_mount:
            return
        try:
            unmount(self.mountpoint, self._mount_id)
        finally:
            if self._lifeline is not None:
                # The daemon reads EOF and exits even if the unmount was lazy
                # and something inside still holds the connection open.
                os.close(self._lifeline)
                self._lifeline = None
            if self._proc is not None:
                try:
                    self._proc.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
                # A daemon that died mid-unmount leaves a dead mount behind,
                # and a killed one its control directory.
                unmount(self.mountpoint, self._mount_id)
                ctl_dir = os.path.dirname(self.control)
                if os.path.basename(ctl_dir).startswith(CONTROL_DIR_PREFIX):
                    shutil.rmtree(ctl_dir, ignore_errors=True)

    def __enter__(self) -> FakeFS:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_ready(fd: int, proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    """The daemon's one JSON line: ready, or why it could not mount."""
    deadline = time.monotonic() + timeout
    buf = b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise DaemonError(
                f"fakefs daemon (pid {proc.pid}) did not become ready in {timeout}s"
            )
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            code = proc.wait()
            raise DaemonError(f"fakefs daemon exited with status {code} before it was ready")
        buf += chunk
    msg: dict[str, Any] = json.loads(buf.split(b"\n", 1)[0])
    return msg


def start(
    backing: str | os.PathLike[str],
    mountpoint: str | os.PathLike[str],
    faults: Iterable[str | FaultRule] = (),
    *,
    cache_timeout: float = 60.0,
    trace_limit: int = 10_000,
    background: bool = False,
) -> FakeFS:
    """Start a daemon and return once its mount serves.

    With ``background`` the daemon outlives this process (the CLI's
    ``mount --background``); otherwise it exits when this process does.
    """
    rules = [fuse_rule_text(r) for r in faults]
    cache_timeout = check_cache_timeout(cache_timeout)
    trace_limit = check_trace_limit(trace_limit)
    back = check_backing(backing)
    # Nesting first: the more telling reason (a mountpoint holding its own
    # backing directory is also "not empty").
    check_not_nested(back, Path(os.path.abspath(mountpoint)))
    mnt = check_mountpoint(mountpoint)
    cmd = [sys.executable, "-m", "fakefs._daemon", str(back), str(mnt),
           "--cache-timeout", str(cache_timeout), "--trace-limit", str(trace_limit)]
    for rule in rules:
        cmd += ["--fault", rule]
    ready_r, ready_w = os.pipe()
    pass_fds = [ready_w]
    life_r = life_w = None
    if not background:
        life_r, life_w = os.pipe()
        pass_fds.append(life_r)
        cmd += ["--lifeline-fd", str(life_r)]
    cmd += ["--ready-fd", str(ready_w)]
    env = dict(os.environ)
    # The daemon must import this very package, wherever it was loaded from.
    pkg_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [pkg_root, env.get("PYTHONPATH")]))
    try:
        proc = subprocess.Popen(
            cmd, pass_fds=pass_fds, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            # A background daemon must not hold the caller's stderr: whoever
            # reads it to EOF (a shell pipe, subprocess.run) would wait for
            # the daemon to exit.
            stderr=subprocess.DEVNULL if background else None,
            env=env, start_new_session=background,
        )
    finally:
        os.close(ready_w)
        if life_r is not None:
            os.close(life_r)
    try:
        msg = _read_ready(ready_r, proc, START_TIMEOUT)
    except BaseException:
        _abort(proc, mnt, life_w)
        raise
    finally:
        os.close(ready_r)
    if "error" in msg:
        # The client checked every input already: what the daemon still
        # refuses is a start-up failure (FUSE, permissions), not bad input.
        _abort(proc, mnt, life_w)
        raise DaemonError(msg["error"])
    # 0: the daemon saw no mount of its control socket at mnt; unmount()
    # then goes by the path alone.
    return FakeFS(back, mnt, int(msg["pid"]), str(msg["control"]),
                  proc=None if background else proc, lifeline=life_w,
                  mount_id=int(msg["mount_id"]) or None)


def _abort(proc: subprocess.Popen[bytes], mnt: Path, lifeline: int | None) -> None:
    if lifeline is not None:
        os.close(lifeline)
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    info = find_mount(mnt)
    if info is not None and info.control is not None:
        unmount(mnt, info.mount_id)


@contextlib.contextmanager
def mount(
    backing: str | os.PathLike[str],
    mountpoint: str | os.PathLike[str],
    faults: Iterable[str | FaultRule] = (),
    *,
    cache_timeout: float = 60.0,
    trace_limit: int = 10_000,
) -> Iterator[FakeFS]:
    """Mount fakefs over ``backing`` at ``mountpoint`` for the ``with`` block.

    Returns once the mount serves; always unmounts -- when the block raises,
    and when the daemon was killed (no "Transport endpoint is not
    connected" left behind). Bad input raises ``MountError`` or
    ``RuleError`` (both ValueError) before anything is mounted; a daemon
    that cannot start raises ``DaemonError``.
    """
    fs = start(backing, mountpoint, faults, cache_timeout=cache_timeout, trace_limit=trace_limit)
    try:
        yield fs
    finally:
        fs.close()


def connect(mountpoint: str | os.PathLike[str]) -> FakeFS:
    """A handle on a fakefs mount some other process started (CLI control).

    Closing it does not unmount; ``fakefs unmount`` does.
    """
    info = find_mount(mountpoint)
    if info is None or info.control is None:
        raise MountError(f"{os.path.abspath(mountpoint)!r} is not a fakefs mount")
    chan = _Channel(info.control)
    try:
        meta = chan.call("ping")
    finally:
        chan.close()
    # close() of this handle must not unmount a mount it did not make
    return FakeFS(Path(meta["backing"]), Path(meta["mountpoint"]), int(meta["pid"]),
                  info.control, mount_id=info.mount_id, owns_mount=False)
