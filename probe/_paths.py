"""Argument checking shared by every public entry point."""

from __future__ import annotations

import os
from collections.abc import Iterable

__all__ = ["PathArg", "as_count", "as_path", "as_paths"]

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


def as_count(value: int, role: str) -> int:
    """``value`` as a count of at least 1 (workers, processes).

    ``True`` and ``1.5`` are refused: both used to pass a ``< 1`` check and
    then fail deep in a range() after the plan was made, or be reported
    back as ``workers=True``.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{role} must be an int, not {type(value).__name__}: {value!r}")
    if value < 1:
        raise ValueError(f"{role} must be >= 1, not {value}")
    return value
