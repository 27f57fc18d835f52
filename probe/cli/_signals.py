"""How a `cowprobe` process ends: signals and unwritable output.

SIGTERM and SIGHUP become ``Terminated``, a KeyboardInterrupt, so every
cleanup that already runs for Ctrl-C (temporaries, staging directories)
runs for them too; the process then exits 128+n with one line, never a
traceback. Standard output is wrapped so a closed pipe or a full disk
becomes ``OutputFailed`` -- not an OSError, so a subcommand's handler for
its operation's errors cannot mistake it for one (and claim DEST was left
untouched when it was written).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
from collections.abc import Callable

from probe._records import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, TextIO

__all__ = ["OutputFailed", "Terminated", "output_failed", "run_guarded"]

_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class OutputFailed(Exception):
    """Writing to standard output failed (EPIPE, ENOSPC, EIO, ...)."""

    def __init__(self, err: OSError) -> None:
        super().__init__(err.strerror or str(err))
        self.errno = err.errno


class _GuardedStream:
    """sys.stdout, with write errors turned into ``OutputFailed``."""

    def __init__(self, inner: TextIO) -> None:
        self._inner = inner

    def write(self, text: str) -> int:
        try:
            return self._inner.write(text)
        except OSError as err:
            raise OutputFailed(err) from None

    def flush(self) -> None:
        try:
            self._inner.flush()
        except OSError as err:
            raise OutputFailed(err) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _raise_terminated(signum: int, _frame: object) -> None:
    # Once: a second signal during the cleanup the first one started must
    # not abort that cleanup half way.
    for sig in (*_SIGNALS, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    raise Terminated(signum)


def _silence_stdout() -> None:
    # Python flushes stdout again at exit; pointed at /dev/null that flush
    # cannot fail and print "Exception ignored ... BrokenPipeError".
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.__stdout__.fileno() if sys.__stdout__ else 1)
        os.close(devnull)
    except OSError:
        pass


def _say(line: str) -> None:
    # stderr gone too: the exit code is all that is left.
    with contextlib.suppress(OSError):
        print(line, file=sys.stderr, flush=True)


def output_failed(err: OutputFailed, line: str) -> int:
    """Say ``line`` (what happened, and that the output could not be
    written) on stderr; the exit code for the failed output."""
    _silence_stdout()
    _say(f"{line}: {err}")
    return 128 + signal.SIGPIPE if err.errno == errno.EPIPE else 1


def run_guarded(func: Callable[[], int]) -> int:
    """Run a subcommand; its exit code, or 128+n after a signal, 141 after
    a closed pipe (as a SIGPIPE death would), 1 after another output error."""
    previous = {signal.SIGINT: signal.getsignal(signal.SIGINT)}
    previous.update({sig: signal.signal(sig, _raise_terminated) for sig in _SIGNALS})
    real = sys.stdout
    sys.stdout = _GuardedStream(real)
    try:
        code = func()
        sys.stdout.flush()
        return code
    except Terminated as term:
        _say(f"cowprobe: terminated ({signal.Signals(term.signum).name})")
        return 128 + term.signum
    except KeyboardInterrupt:
        _say("cowprobe: interrupted")
        return 128 + signal.SIGINT
    except OutputFailed as err:
        return output_failed(err, "cowprobe: cannot write output")
    finally:
        sys.stdout = real
        for signum, handler in previous.items():
            signal.signal(signum, handler)
