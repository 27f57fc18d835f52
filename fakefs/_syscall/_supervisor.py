"""The supervisor: one thread answering every trapped call from a rule table.

It serves any number of listeners (one per installed filter), each bound to
a :class:`RuleTable` and a root directory. Its own system calls (poll,
ioctl on the listener, readlink and pread in /proc, write to its wake-up
pipe) are never among the trapped ones, so it cannot deadlock on itself
even when it runs inside a filtered process (``fakefs run -- pytest``
using ``syscall_faults`` again).

Order per call: RECV; read the paths from /proc; ID_VALID (the pid we
read is still the task waiting on this notification, not a recycled one);
decide; SEND. Calls whose file is one descriptor argument and that no
rule's glob matches -- most of them -- take a shorter way: one readlink,
counted and traced, CONTINUE. A ``delay=`` answer is sent from a timer thread so a stalled
call never holds up the others.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import os
import select
import signal
import threading
from typing import NamedTuple

from ._filter import Arch
from ._notify import notif_id_valid, recv, send_continue, send_errno
from ._resolve import CallArgs, decode, fd_dest_lanes, fd_path, relative, tgid_of
from ._table import Armed, Call, RuleTable

__all__ = ["Supervisor"]


def _deaf() -> None:
    """Block every signal on the answering thread (and on the delay timers
    it starts, which inherit the mask).

    A process-directed signal goes to any thread that does not block it.
    Delivered here, CPython only flags it for the main thread, which is
    not woken: `fakefs run`'s main thread, blocked in waitpid() for the
    command, then never runs the handler that forwards SIGINT to that
    command, and both wait for ever (seen once at load as a 60 s timeout
    of test_signal_to_run_reaches_the_command_and_unmounts). Blocked here,
    the kernel must pick the main thread and interrupt its wait."""
    signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())


class _Listener(NamedTuple):
    fd: int
    table: RuleTable


class Supervisor:
    def __init__(self, arch: Arch) -> None:
        self.arch = arch
        self._ioctl_nr = arch.nr["ioctl"]
        self._lanes = fd_dest_lanes(arch)
        self._lock = threading.Lock()
        self._listeners: dict[int, _Listener] = {}
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._stop = False
        # The answering thread runs only while a listener exists: once every
        # filtered task has exited (the thread of a syscall_faults() block,
        # the command of `fakefs run`) it ends, and the process is back to
        # the threads it had -- so it can fork workers again (a process
        # with another thread must not: the materializer then stays
        # in-process). It is started again before the next filter exists:
        # a thread started *by* a filtered thread inherits the filter, and
        # then the last filtered task never goes. Decided under _lock.
        self._running = False
        #: filters about to be installed (reserve() done, add() not yet):
        #: the thread must not end while one is on its way
        self._pending = 0
        self._thread: threading.Thread | None = None
        self._dedicated = False

    def _start_locked(self) -> None:
        if not self._running:
            self._running = True
            self._thread = threading.Thread(target=self._loop, name="fakefs-seccomp",
                                            daemon=True)
            self._thread.start()

    def reserve(self) -> None:
        """Call before installing a filter on this thread, then add() (or
        release() if the install failed): the answering thread is started
        while this thread is still unfiltered, and stays for the add."""
        with self._lock:
            self._pending += 1
            self._start_locked()

    def release(self) -> None:
        with self._lock:
            self._pending -= 1

    def add(self, fd: int, table: RuleTable, *, reserved: bool = False) -> None:
        """Serve listener ``fd``. From a thread the filter is on, only after
        reserve() (``reserved=True``); unreserved, from an unfiltered one
        (``fakefs run``'s parent)."""
        with self._lock:
            self._listeners[fd] = _Listener(fd, table)
            if reserved:
                self._pending -= 1
            self._start_locked()
        self._wake()

    def dedicate(self, fd: int, table: RuleTable) -> None:
        """Serve listener ``fd`` alone, for the rest of this process
        (``fakefs run``: one listener, never another).

        The thread waits in RECV itself, not in poll: one syscall less per
        trapped call, and the trapping task wakes it directly (a 3,000-file
        materialize under a rule that matches nothing: 0.58 s against
        0.68 s with the poll loop, 0.41 s without fakefs; 15 interleaved
        rounds). Nothing wakes a RECV once every
        filtered task is gone -- the kernel tells only poll (POLLHUP) --
        so this thread is never joined and its listener never closed by
        hand: both end with the process (a descendant of the command still
        alive then gets ENOSYS, as after stop()). Closing the descriptor
        under a blocked RECV would let its number be reused, and the next
        answer go to whatever file got it."""
        self._dedicated = True
        entry = _Listener(fd, table)

        def loop() -> None:
            _deaf()
            while self._serve(entry):
                pass

        threading.Thread(target=loop, name="fakefs-seccomp", daemon=True).start()

    def stop(self) -> None:
        """Stop serving and close every listener. Only for processes whose
        filtered tasks are gone (``fakefs run``): a filtered task still
        alive then gets ENOSYS from every trapped call."""
        if self._dedicated:
            return  # see dedicate()
        self._stop = True
        self._wake()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            for fd in self._listeners:
                os.close(fd)
            self._listeners.clear()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    def _loop(self) -> None:
        # The poll set is rebuilt only when the listeners change (a wake-up):
        # per notification the loop is one poll, one RECV, one SEND.
        _deaf()
        while not self._stop:
            poller = select.poll()
            poller.register(self._wake_r, select.POLLIN)
            with self._lock:
                listeners = dict(self._listeners)
            for fd in listeners:
                poller.register(fd, select.POLLIN)
            changed = False
            while not changed and not self._stop:
                for fd, events in poller.poll():
                    if fd == self._wake_r:
                        with contextlib.suppress(BlockingIOError):
                            os.read(self._wake_r, 4096)
                        changed = True
                    elif events & select.POLLIN:
                        self._serve(listeners[fd])
                    elif events & (select.POLLHUP | select.POLLERR):
                        # Every filtered task has exited: nothing can call again.
                        with self._lock:
                            self._listeners.pop(fd, None)
                            os.close(fd)
                            if not self._listeners and not self._pending:
                                self._running = False
                                return
                        changed = True

    def _serve(self, entry: _Listener) -> bool:
        # Once per trapped call of every filtered task, while that task
        # waits: kept to the syscalls it needs (RECV, one readlink, SEND)
        # and as few Python frames as it can be.
        fd = entry.fd
        try:
            notif = recv(fd)
        except OSError:
            return False  # the listener itself failed: nothing more comes
        if notif is None:
            return True
        nid = notif[0]
        pid = notif[1]
        table = entry.table
        if not table.has_rules():
            # Outside a syscall_faults() block, or no rule: the fast path.
            send_continue(fd, nid)
            return True
        nr = notif[3]
        lane = self._lanes.get(notif[7] & 0xFFFFFFFF if nr == self._ioctl_nr else nr)
        if lane is not None:
            op, index = lane
            dest_fd = notif[6 + index]
            if dest_fd <= 0x7FFFFFFF:
                # One readlink decides most calls: no rule matches their
                # file. (In a 3,000-file materialize this call's Python was
                # most of what a trapped call cost the program -- two
                # thirds of it user time in the supervisor -- not the
                # kernel's round trip: every frame and object counts.)
                record = table.continue_unmatched(op, relative(fd_path(pid, dest_fd), table.root),
                                                  pid)
                if record is not None:
                    if not send_continue(fd, nid):
                        table.undeliver(record, None)
                    return True
        args = notif[6:]
        reader = CallArgs(pid, want_source=table.needs_source())
        try:
            op, dest, src = decode(self.arch, nr, args, reader)
            tgid = tgid_of(pid) if table.needs_tgid() else pid
        except OSError:
            send_continue(fd, nid)
            return True
        finally:
            reader.close()
        root = table.root
        call = Call(op, relative(dest, root), relative(src, root), pid, tgid)
        armed = table.decide(call)
        if armed is not None and armed.rule.errno is not None and not notif_id_valid(fd, nid):
            # The task stopped waiting while we read /proc: what we read may
            # belong to a recycled pid, so no fault rides on it (the kernel
            # drops the answer anyway). Only a fault needs this check: a
            # CONTINUE on a stale id is refused by the kernel and harmless.
            table.record(call, armed, False)
            return True
        if armed is not None and armed.rule.delay:
            # Traced now, as its hit was counted: a run that ends while the
            # timer waits (its caller killed) kept the hit and lost the record.
            record = table.record(call, armed, True)
            timer = threading.Timer(armed.rule.delay, self._answer,
                                    (entry, nid, call, armed, record))
            timer.daemon = True
            timer.start()
        else:
            self._answer(entry, nid, call, armed)
        return True

    def _answer(self, entry: _Listener, nid: int, call: Call, armed: Armed | None,
                record: list[object] | None = None) -> None:
        if record is None:
            record = entry.table.record(call, armed, True)
        try:
            if armed is not None and armed.rule.errno is not None:
                delivered = send_errno(entry.fd, nid, armed.rule.errno)
            else:
                delivered = send_continue(entry.fd, nid)
        except OSError as err:
            # EBADF: the listener was closed under a delayed answer.
            if err.errno not in (_errno.EBADF, _errno.ENOENT):
                raise
            delivered = False
        if not delivered:
            # A delay whose caller stopped waiting (killed) reached nobody's
            # answer either: absorbed, as an errno would be.
            entry.table.undeliver(record, armed)
