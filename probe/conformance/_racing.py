"""Platforms that race the library: the host's clone primitive with a
source unlinked in the window the scenario names (before the clone syscall,
or after it failed with ENOENT)."""

from __future__ import annotations

import errno as _errno
import os
import threading

from .._platform import Platform

__all__ = ["with_deleter", "with_late_deleter"]


def with_deleter(base: Platform, victim: str) -> Platform:
    """The host platform with another thread unlinking ``victim`` in the window
    between the library's pre-check and its clone syscall.

    Holding the clone at the seam until the deleter has finished makes the
    race come out the same way every run, without a sleep.
    """

    def clone(source: str, dest: str, dir_fd: int | None) -> None:
        deleter = threading.Thread(target=os.unlink, args=(victim,), name="cowprobe-deleter")
        deleter.start()
        deleter.join()
        base.clone(source, dest, dir_fd)

    return base._replace(name=f"{base.name}+deleter", clone=clone)


def with_late_deleter(base: Platform, victim: str) -> Platform:
    """The host platform where a clone failing with ENOENT (a syscall-layer
    rule) finds its source unlinked by the time the library looks again --
    what a real unlink racing the call leaves behind."""

    def clone(source: str, dest: str, dir_fd: int | None) -> None:
        try:
            base.clone(source, dest, dir_fd)
        except OSError as err:
            if err.errno == _errno.ENOENT:
                os.unlink(victim)
            raise

    return base._replace(name=f"{base.name}+late-deleter", clone=clone)
