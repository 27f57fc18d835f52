"""The one handle on the C library, and typed functions taken from it.

Never ``ctypes.util.find_library("c")``: on Linux it runs ``ldconfig -p``
(and falls back to gcc/ld) in a subprocess -- slow, absent from minimal
containers, and a child process inside a library call that may run under
a seccomp filter or a pytest fixture. glibc's soname is fixed ("libc.so.6");
elsewhere (macOS, musl) ``CDLL(None)`` is the running process's own symbol
namespace, which already contains the C library.

Each function's ``argtypes`` are set once, when it is first asked for: a
ctypes function pointer is shared, so setting them on every call races
between threads for nothing.
"""

from __future__ import annotations

import ctypes
import os
from functools import cache

from ._records import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, NoReturn

__all__ = ["die_with_parent", "function", "libc", "raise_errno"]

_PR_SET_PDEATHSIG = 1


@cache
def libc() -> ctypes.CDLL:
    """The C library, loaded once, with ``use_errno`` (see ``raise_errno``)."""
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        # macOS, musl or an unusual layout: the process's own namespace has it.
        return ctypes.CDLL(None, use_errno=True)


@cache
def function(name: str, restype: Any, *argtypes: Any) -> Any:
    """``name`` from the C library with its types set, or None if it lacks it
    (statx before glibc 2.28, renameat2 before 2.28, clonefileat off macOS)."""
    # Item access makes a function object of our own: setting argtypes on
    # the attribute ``libc().name`` would change them for every other user.
    try:
        fn = libc()[name]
    except AttributeError:
        return None
    fn.argtypes = list(argtypes)
    fn.restype = restype
    return fn


def raise_errno(*filenames: str | os.PathLike[str] | None) -> NoReturn:
    """Raise the OSError of the last failed call (``ctypes.get_errno()``)."""
    err = ctypes.get_errno()
    names = [os.fspath(f) if f is not None else None for f in filenames]
    if len(names) >= 2:
        raise OSError(err, os.strerror(err), names[0], None, names[1])
    raise OSError(err, os.strerror(err), *names[:1])


def die_with_parent(parent: int, signum: int) -> bool:
    """PR_SET_PDEATHSIG: ``signum`` to this (child) process when ``parent``,
    the pid it was started by, dies. False if the parent is already gone:
    it died before the prctl took effect, so the signal will never come."""
    prctl = function("prctl", ctypes.c_int, ctypes.c_int, ctypes.c_ulong)
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, signum)
    return os.getppid() == parent
