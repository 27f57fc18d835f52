#!/opt/cowprobe/bin/python
"""Entrypoint of the cowprobe lab image (installed as ``cowprobe-entrypoint``).

Two modes:

* no command: the default checks -- ``cowprobe conformance`` and the lab
  support report -- each building its own lab, writing JUnit / Markdown into
  ``$OUT`` (default ``/out``) when that directory exists;
* a command: loopback filesystems for ``$FS`` (``btrfs``, ``xfs``, ``ext4``,
  a comma list, or ``all``; default ``all``) are made and mounted, the command
  runs with ``TMPDIR`` on the first of them and ``COWPROBE_LAB_<KIND>`` naming
  each mountpoint, and everything is torn down when it ends. ``$LAB_SIZE``
  sizes them (``64G``, ``btrfs=32G,ext4=8G``; default 16 GiB, sparse).

Whatever happens -- the command fails, ``docker stop`` sends SIGTERM, Ctrl-C
-- every mount is unmounted and every loop device this container attached is
detached before the container exits. Loop devices belong to the host kernel:
one leaked here stays attached on the host.

Exit status: the command's (128+N if a signal N ended it); 3 when the
container lacks what the lab needs (the message names the capability or
device and the ``docker run`` flag that grants it); 2 for a bad ``$FS`` or
``$LAB_SIZE``;
1 when the lab build or its teardown failed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from probe.lab import (
    CAP_SYS_ADMIN,
    LANES,
    OVERLAY_KINDS,
    Lab,
    LabError,
    LabUnavailable,
    cleanup_stale,
    ensure_loop_nodes,
    full_hints,
    has_capability,
    missing_prerequisites,
    parse_sizes,
)

_PROG = "cowprobe-entrypoint"
EXIT_MISSING = 3

#: FS values a user may give, mapped to lab kinds ("all" is the three the
#: image exists for; the default checks build the whole lab themselves).
#: An overlay lane (FS=overlay-xfs) runs a command on overlayfs over that
#: filesystem, as inside a container image's layers.
_ALL = ("btrfs", "xfs", "ext4")
_USER_KINDS = (*_ALL, *OVERLAY_KINDS)

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _say(msg: str) -> None:
    print(f"{_PROG}: {msg}", file=sys.stderr, flush=True)


class Missing(Exception):
    """The container lacks something the lab needs; the message says what."""


# ------------------------------------------------------------ preflight


def preflight(kinds: Sequence[str], *, need_fuse: bool) -> None:
    """Raise Missing naming everything the lab lacks here."""
    problems: list[str] = []
    if os.geteuid() != 0:
        problems.append(f"not root (uid {os.geteuid()}): do not pass --user")
    if not has_capability(CAP_SYS_ADMIN):
        problems.append(
            "missing capability CAP_SYS_ADMIN (mount(2) needs it): pass --cap-add SYS_ADMIN"
        )
    if problems:
        raise Missing("; ".join(problems))
    try:
        ensure_loop_nodes()
    except LabUnavailable as err:
        raise Missing(str(err)) from err
    missing = missing_prerequisites(kinds)
    if missing:
        raise Missing("; ".join(missing))
    if need_fuse and not _fuse_ok():
        # Not fatal: conformance reports the simulated column as not
        # applicable with this reason, and the real filesystems still run.
        _say(
            "no usable /dev/fuse: the simulated (fakefs) checks cannot run; pass --device /dev/fuse"
        )


def _fuse_ok() -> bool:
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC))
    except OSError:
        return False
    return True


# ------------------------------------------------------------- signals


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold the stop signals pending for the whole run.

    Nothing is killed half-way: a SIGTERM during the lab build or teardown
    waits until we are ready for it, and while a command runs we collect
    signals with sigwait and pass them on, then tear down in order. SIGCHLD
    is held too so the child's exit is just another event to wait for.
    """
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {*_STOP_SIGNALS, signal.SIGCHLD})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _pending_stop() -> signal.Signals | None:
    pending = signal.sigpending()
    for sig in _STOP_SIGNALS:
        if sig in pending:
            return sig
    return None


def _child_setup() -> None:
    # The mask survives exec: unblocked here or the command could never be
    # stopped. Default dispositions too, in case ours were changed.
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    for sig in (*_STOP_SIGNALS, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)


def _status_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def run_child(
    argv: Sequence[str], env: dict[str, str], *, tee: Path | None = None
) -> tuple[int, signal.Signals | None]:
    """Run ``argv``; pass stop signals on; reap everything. (exit code, stop signal).

    With ``tee``, the command's stdout is also written to that file (the
    Markdown report lands in /out and on the console alike).
    """
    stopped_by = _pending_stop()
    if stopped_by is not None:
        return 128 + stopped_by, stopped_by
    try:
        proc = subprocess.Popen(
            argv,
            env=env,
            # Only the signal mask and dispositions are touched, no locks are
            # taken, so the fork-with-threads hazard does not apply.
            preexec_fn=_child_setup,  # noqa: PLW1509
            stdout=subprocess.PIPE if tee is not None else None,
        )
    except OSError as err:
        _say(f"cannot run {argv[0]}: {err.strerror}")
        return (127 if err.errno == errno.ENOENT else 126), None
    pump: threading.Thread | None = None
    if tee is not None and proc.stdout is not None:
        pump = threading.Thread(target=_tee, args=(proc.stdout, tee), daemon=True)
        pump.start()
    wanted = {*_STOP_SIGNALS, signal.SIGCHLD}
    try:
        while True:
            info = signal.sigwaitinfo(wanted)
            sig = signal.Signals(info.si_signo)
            if sig == signal.SIGCHLD:
                code = _reap(proc.pid)
                if code is not None:
                    proc.returncode = code  # keep Popen from reaping again
                    return code, stopped_by
                continue
            stopped_by = stopped_by or sig
            # On a terminal, Ctrl-C already reached the command (same process
            # group); passing SIGINT on again would interrupt its own cleanup.
            if sig == signal.SIGINT and sys.stdin.isatty():
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)
    finally:
        if pump is not None:
            # The pipe hits EOF once the command and anything it left
            # holding stdout are gone; do not hang on a grandchild keeping it.
            pump.join(timeout=30)


def _tee(pipe: IO[bytes], path: Path) -> None:
    with pipe, path.open("wb") as fh:
        # os.read returns what is there: the console sees each line as it
        # comes instead of in 64 KiB blocks.
        for chunk in iter(lambda: os.read(pipe.fileno(), 65536), b""):
            fh.write(chunk)
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()


def _reap(pid: int) -> int | None:
    """Reap every exited child (as PID 1 we inherit orphans); ``pid``'s code."""
    code: int | None = None
    while True:
        try:
            done, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return code
        if done == 0:
            return code
        if done == pid:
            code = _status_code(status)


# ------------------------------------------------------------- modes


def parse_fs(value: str) -> tuple[str, ...]:
    words = [w.strip().lower() for w in value.replace(" ", ",").split(",") if w.strip()]
    if not words or words == ["all"]:
        return _ALL
    bad = [w for w in words if w not in _USER_KINDS]
    if bad:
        raise ValueError(
            f"FS={value!r}: unknown {bad}; use {', '.join(_USER_KINDS)} or all"
        )
    return tuple(dict.fromkeys(words))


@dataclass(frozen=True)
class Step:
    """One default check: a cowprobe subcommand.

    ``argv(out)`` is the command line; with an /out directory, ``tee`` names
    the file (in /out) that also receives the command's stdout.
    """

    title: str
    subcommand: str
    argv: Callable[[Path | None], list[str]]
    tee: str | None = None


def _conformance_argv(out: Path | None) -> list[str]:
    argv = ["cowprobe", "conformance", "--no-progress"]
    if out is not None:
        argv += ["--junit", str(out / "conformance.xml"), "--markdown"]
    return argv


def _report_argv(out: Path | None) -> list[str]:
    argv = ["cowprobe", "report", "--lab"]
    if out is not None:
        argv += ["--format", "markdown"]
    return argv


#: The default checks, in order.
DEFAULT_STEPS: tuple[Step, ...] = (
    Step(
        "conformance: every outcome path on real and simulated filesystems",
        "conformance",
        _conformance_argv,
        tee="conformance.md",
    ),
    Step("lab support report", "report", _report_argv, tee="report.md"),
)


def default_mode(out: Path | None) -> int:
    try:
        preflight(LANES, need_fuse=True)
    except Missing as err:
        _say(f"cannot run the lab: {err}")
        return EXIT_MISSING
    worst = 0
    for step in DEFAULT_STEPS:
        argv = step.argv(out)
        _say(f"== {step.title}: {' '.join(argv)}")
        tee = out / step.tee if out is not None and step.tee else None
        code, stopped = run_child(argv, dict(os.environ), tee=tee)
        # Each step owns its lab; if it was killed before tearing it down,
        # its owner is dead now and the reaper removes what it left.
        _reap_stale()
        _say(f"== {step.subcommand}: exit {code}")
        worst = worst or code
        if stopped is not None:
            _say(f"stopped by {stopped.name}")
            return code
    return worst


def _reap_stale() -> None:
    try:
        reaped = cleanup_stale()
    except OSError as err:
        _say(f"stale-lab cleanup failed: {err}")
        return
    for root in reaped:
        _say(f"removed a lab left by a killed step: {root}")


def command_mode(
    argv: Sequence[str], kinds: Sequence[str], sizes: dict[str, int] | None = None
) -> int:
    try:
        preflight(kinds, need_fuse=False)
    except Missing as err:
        _say(f"cannot make {', '.join(kinds)}: {err}")
        return EXIT_MISSING
    stop = _pending_stop()
    if stop is not None:
        _say(f"stopped by {stop.name} before the lab was built")
        return 128 + stop
    try:
        lab = Lab(kinds, sizes_mb=sizes)
        lab.start()
    except LabUnavailable as err:
        _say(f"cannot make {', '.join(kinds)}: {err}")
        return EXIT_MISSING
    except LabError as err:
        _say(f"lab build failed: {err}")
        return 1
    code = 1
    try:
        env = dict(os.environ)
        for fs in lab:
            # The lab sets autoclear on each loop once mounted, so even a
            # `docker kill` (no teardown runs) frees them on the host.
            env[f"COWPROBE_LAB_{fs.kind.upper().replace('-', '_')}"] = str(fs.mountpoint)
            _say(
                f"{fs.kind} on {fs.device} mounted at {fs.mountpoint}, {fs.size_mb} MiB "
                f"({fs.options})"
            )
        tmp = lab.scratch_dir(kinds[0], "tmp")
        env["TMPDIR"] = str(tmp)
        _say(f"TMPDIR={tmp} ({kinds[0]}); running: {' '.join(argv)}")
        code, stopped = run_child(argv, env)
        if stopped is not None:
            _say(f"stopped by {stopped.name}; tearing down")
        for hint in full_hints(lab, "LAB_SIZE (docker/run --lab-size)") if code else ():
            _say(hint)
    finally:
        try:
            lab.close()
        except LabError as err:
            _say(f"teardown incomplete: {err}")
            code = code or 1
        else:
            _say(f"lab torn down: {', '.join(kinds)} unmounted, loop devices detached")
    return code


def main(argv: Sequence[str]) -> int:
    size = os.environ.get("LAB_SIZE", "")
    try:
        kinds = parse_fs(os.environ.get("FS", "all"))
    except ValueError as err:
        _say(str(err))
        return 2
    try:
        sizes = parse_sizes(size) if size else None
    except ValueError as err:
        _say(f"LAB_SIZE={size!r}: {err}")
        return 2
    out_env = os.environ.get("OUT", "/out")
    out = Path(out_env) if out_env and Path(out_env).is_dir() else None
    with signals_held():
        if not argv:
            return default_mode(out)
        return command_mode(argv, kinds, sizes)


if __name__ == "__main__":
    if shutil.which("losetup") is None:
        _say("losetup is missing from the image (util-linux)")
        sys.exit(EXIT_MISSING)
    sys.exit(main(sys.argv[1:]))
