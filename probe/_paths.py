"""Argument checking shared by every public entry point."""

from __future__ import annotations

import os
from collections.abc import Iterable

__all__ = ["PathArg", "as_path", "as_paths"]

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


def as_paths(values: Iterable[PathArg], role: str) -> list[str]:
    """Each of ``values`` by ``as_path``. One path where a list of them is
    wanted is a TypeError: iterated, ``"/srv/wt"`` is ``"/"``, ``"s"``, ...
    -- a worktree ``"/"`` that lets a batch write anywhere."""
    if isinstance(values, (str, bytes, os.PathLike)):
        raise TypeError(f"{role}s must be a list of paths, not one path: {values!r}")
    return [as_path(v, role) for v in values]
