"""``probe_capabilities``, ``probe_pair`` and ``validate_directory``: the
arguments checked, then the work done in this process (``_probe``) or in a
child process that a time limit can stop even inside a syscall
(``_isolate``)."""

from __future__ import annotations

from collections.abc import Iterable

from .._paths import PathArg, as_path
from ._model import CapabilityReport, PairReport
from ._probe import (
    Hook,
    open_check,
    pair_titles,
    probe_directory,
    probe_directory_pair,
    resolve_names,
    spec_titles,
)

__all__ = ["probe_capabilities", "probe_pair", "validate_directory"]


def validate_directory(path: PathArg, *, timeout: float | None = None) -> str:
    """``path`` as a str if it is an openable directory; else ProbePathError
    saying why (missing, not a directory, no permission). Lets a caller
    check every argument before anything is written anywhere. With
    ``timeout`` the check runs in a child process (as an isolated probe
    does), so a mount that hangs a stat is a ProbePathError after that long
    ("did not answer", with ``timed_out`` set: not bad input), not a hang."""
    _check(timeout, None, False)
    if timeout is None:
        return open_check(path)
    from ._isolate import isolated_check

    return isolated_check(as_path(path, "path"), timeout)


def probe_capabilities(path: PathArg, *, only: Iterable[str] | None = None,
                       hook: Hook | None = None, label: str | None = None,
                       timeout: float | None = None, isolate: bool = False,
                       ) -> CapabilityReport:
    """Measure what the filesystem under directory ``path`` really does.

    ``only`` limits the run to some capabilities (names or aliases).
    ``timeout`` (seconds) bounds a slow filesystem: once it has passed, the
    capabilities not yet probed are "could not tell" with that as their
    reason, and the probe directory is removed as always. In this process
    it is checked between capabilities, so a call the kernel never returns
    from still holds the probe up. With ``isolate`` the probe runs in a
    child interpreter instead, which is stopped if it has not reported
    shortly after ``timeout`` (a stalled NFS or FUSE server); the report
    then says where it stopped and names what it may have left. Raises
    ``ProbePathError`` if ``path`` is missing or not a directory, and
    ``ValueError`` for an unknown capability name, a timeout that is not
    positive or a ``hook`` with ``isolate``; everything else is an answer
    in the report.
    """
    _check(timeout, hook, isolate)
    wanted = set(resolve_names(only)) if only is not None else None
    if not isolate:
        return probe_directory(path, wanted, hook=hook, label=label, timeout=timeout)
    # Loaded only here: the child's machinery (subprocess, pickle, a reader
    # thread) is no cost of an ordinary probe or of `cowprobe report`.
    from ._isolate import isolated_directory

    return isolated_directory(spec_titles(wanted), timeout, path=as_path(path, "path"),
                              only=None if wanted is None else sorted(wanted), label=label)


def probe_pair(source_dir: PathArg, dest_dir: PathArg, *, hook: Hook | None = None,
               label: str | None = None, timeout: float | None = None,
               isolate: bool = False) -> PairReport:
    """Reflink and copy_file_range from a file in ``source_dir`` to a new
    file in ``dest_dir``: EXDEV (and sharing) is a property of the pair.
    ``timeout`` and ``isolate`` as for ``probe_capabilities``."""
    _check(timeout, hook, isolate)
    if not isolate:
        return probe_directory_pair(source_dir, dest_dir, hook=hook, label=label,
                                    timeout=timeout)
    from ._isolate import isolated_pair

    return isolated_pair(pair_titles(), timeout, source_dir=as_path(source_dir, "path"),
                         dest_dir=as_path(dest_dir, "path"), label=label)


def _check(timeout: float | None, hook: Hook | None, isolate: bool) -> None:
    if timeout is not None and not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
    if isolate and hook is not None:
        raise ValueError("a hook cannot run in an isolated probe's child process")
