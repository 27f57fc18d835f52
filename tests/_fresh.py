"""Run a test body in a fresh thread.

A seccomp filter outlives its ``fakefs.syscall_faults()`` block, and the
kernel allows one listener per task: a filter left on pytest's main thread
would make every later ``fakefs run`` of the session fail with EBUSY. Tests
that open a block in this process therefore run it on a thread of its own.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["fresh_thread"]

_F = TypeVar("_F", bound=Callable[..., None])


def fresh_thread(fn: _F) -> _F:
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> None:
        errors: list[BaseException] = []

        def body() -> None:
            try:
                fn(*args, **kwargs)
            except BaseException as err:  # re-raised on pytest's thread
                errors.append(err)

        t = threading.Thread(target=body)
        t.start()
        t.join()
        if errors:
            raise errors[0]

    return run  # type: ignore[return-value]


