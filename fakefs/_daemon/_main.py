"""The daemon's entry point: ``python -m fakefs._daemon BACKING MOUNTPOINT ...``.

pyfuse3 holds one mount per process, so every fakefs mount is one of these
processes. It reports readiness (or the one-line reason it cannot mount) as
a JSON line on ``--ready-fd`` (stdout without it), serves the control socket
whose path it puts into the mount's source field, and unmounts when the
mount is taken away, on SIGTERM/SIGINT/SIGHUP, on a ``shutdown`` command, or
when the ``--lifeline-fd`` pipe reaches EOF (the process that started it
died -- a killed test run must not leave a mount behind).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import sys
from dataclasses import dataclass
from typing import Any

__all__ = ["main"]


class _Reporter:
    def __init__(self, fd: int | None) -> None:
        self.fd = fd

    def send(self, msg: dict[str, Any]) -> None:
        data = (json.dumps(msg) + "\n").encode()
        if self.fd is None:
            sys.stdout.write(data.decode())
            sys.stdout.flush()
            return
        with contextlib.suppress(OSError):
            os.write(self.fd, data)
            os.close(self.fd)
        self.fd = -1

    def error(self, message: str) -> None:
        if self.fd is None or self.fd == -1:
            print(f"fakefs: error: {message}", file=sys.stderr)
        else:
            self.send({"error": message})


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fakefs._daemon")
    p.add_argument("backing")
    p.add_argument("mountpoint")
    p.add_argument("--fault", action="append", default=[])
    p.add_argument("--ready-fd", type=int)
    p.add_argument("--lifeline-fd", type=int)
    p.add_argument("--cache-timeout", type=float, default=60.0)
    p.add_argument("--trace-limit", type=int, default=10_000)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    report = _Reporter(args.ready_fd)
    from .._mounts import MountError, check_backing, check_mountpoint, make_control_dir
    from .._rules import RuleError, parse_rule

    try:
        rules = [parse_rule(r) for r in args.fault]
        backing = check_backing(args.backing)
        mountpoint = check_mountpoint(args.mountpoint)
    except (RuleError, MountError) as err:
        report.error(str(err))
        return 2
    try:
        import pyfuse3
        import trio
    except ImportError as err:
        report.error(f"the fakefs daemon needs pyfuse3 and trio: {err}")
        return 2

    from .._faults import FaultTable
    from .._trace import Trace
    from ._ops import FakeOps

    table = FaultTable()
    for rule in rules:
        table.add(rule)
    trace = Trace(args.trace_limit)
    ops = FakeOps(str(backing), table, trace, args.cache_timeout)
    # Node descriptors get three quarters of the limit; the rest is for open
    # files, directories, the control socket and /dev/fuse.
    ops.nodes.max_fds = _raise_fd_limit() * 3 // 4
    # The kernel has already applied the caller's umask to every mode it
    # sends; ours must not strip more bits.
    os.umask(0)

    ctl_dir, _ctl_lock = make_control_dir()  # the lock lives as long as we do
    sock_path = os.path.join(ctl_dir, "control.sock")
    options = set(pyfuse3.default_options)  # default_permissions
    options |= {f"fsname=fakefs:{sock_path}", "subtype=fakefs"}
    if os.geteuid() == 0:
        # Root may let every user in, which a conformance suite switching
        # uids needs; the kernel still checks permissions itself.
        options.add("allow_other")
    try:
        pyfuse3.init(ops, str(mountpoint), options)
    except Exception as err:  # libfuse says only "fuse_session_mount failed"
        shutil.rmtree(ctl_dir, ignore_errors=True)
        report.error(f"could not mount {str(mountpoint)!r}: {err}")
        return 1
    try:
        info = {"pid": os.getpid(), "backing": str(backing), "mountpoint": str(mountpoint),
                "control": sock_path}
        trio.run(_run, _Daemon(ops, table, trace, report, args, info))
    finally:
        try:
            pyfuse3.close(unmount=True)
        finally:
            shutil.rmtree(ctl_dir, ignore_errors=True)
    return 0


@dataclass
class _Daemon:
    ops: Any
    table: Any
    trace: Any
    report: _Reporter
    args: argparse.Namespace
    info: dict[str, Any]


async def _run(d: _Daemon) -> None:
    import pyfuse3
    import trio

    from ._control import ControlServer

    initialised = trio.Event()
    d.ops.on_init = initialised.set
    listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await listener.bind(d.info["control"])
    listener.listen(16)

    async with trio.open_nursery() as nursery:

        def shutdown() -> None:
            pyfuse3.terminate()

        async def fuse_main() -> None:
            try:
                await pyfuse3.main(min_tasks=1, max_tasks=64)
            finally:
                nursery.cancel_scope.cancel()

        async def signals() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as sigs:
                async for _ in sigs:
                    shutdown()
                    return

        async def lifeline(fd: int) -> None:
            os.set_blocking(fd, False)
            while True:
                await trio.lowlevel.wait_readable(fd)
                try:
                    if not os.read(fd, 64):
                        break
                except BlockingIOError:
                    continue
            shutdown()

        server = ControlServer(d.ops, d.table, d.trace, d.info, shutdown)
        nursery.start_soon(fuse_main)
        nursery.start_soon(server.serve, listener)
        nursery.start_soon(signals)
        if d.args.lifeline_fd is not None:
            nursery.start_soon(lifeline, d.args.lifeline_fd)
        # INIT is the kernel's first request; once it is answered the mount
        # serves, and only then may the starter touch it.
        await initialised.wait()
        mount_id = d.ops.gate.mount_id = _tune_mount(d.info["mountpoint"], d.info["control"])
        # The starter unmounts by this id (never another mount stacked at
        # the path since): given here, it need not read mountinfo again.
        d.report.send({"ready": True, **d.info, "mount_id": mount_id})


#: readahead window for the mount, KiB. FUSE starts at 128 KiB; a wider
#: window means fewer, larger READ requests (up to the 1 MiB max_pages
#: libfuse negotiates) and so fewer trips through the Python daemon.
READAHEAD_KB = 1024


def _tune_mount(mountpoint: str, control: str) -> int:
    """Widen the mount's readahead; its mount id (0: not found)."""
    from .._mounts import find_mount

    info = find_mount(mountpoint)
    if info is None or info.control != control or not info.devno:
        return 0
    # Best effort: without write access to sysfs the mount merely stays at
    # the kernel's default.
    with contextlib.suppress(OSError), open(
        f"/sys/class/bdi/{info.devno}/read_ahead_kb", "w"
    ) as f:
        f.write(str(READAHEAD_KB))
    return info.mount_id


def _raise_fd_limit() -> int:
    # Every node the kernel holds pins one O_PATH descriptor (an `ls -l` of
    # 100,000 entries: 100,000 of them until the kernel forgets the
    # entries), so a limit of 1024 or 20,000 would fail lookups with
    # EMFILE. Root may go up to the kernel's own ceiling (fs.nr_open).
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard
    with contextlib.suppress(OSError, ValueError), open("/proc/sys/fs/nr_open") as f:
        want = max(hard, int(f.read()))
    for limit in (want, hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
            return limit
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


