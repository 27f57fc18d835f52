"""Argument checking shared by every public entry point."""

from __future__ import annotations

import os

__all__ = ["PathArg", "as_path"]

PathArg = str | os.PathLike[str]


def as_path(value: PathArg, role: str) -> str:
    """``value`` as a str path, refusing what the kernel would misread.

    A NUL byte would be caught by ``os`` deep inside a syscall wrapper with a
    bare "embedded null byte"; saying which argument was wrong is kinder.
    """
    path = os.fspath(value)
    if not isinstance(path, str):
        raise TypeError(f"{role} must be a str or os.PathLike[str], not {type(path).__name__}")
    if not path:
        raise ValueError(f"{role} path is empty")
    if "\0" in path:
        raise ValueError(f"{role} path contains a NUL byte: {path!r}")
    return path
