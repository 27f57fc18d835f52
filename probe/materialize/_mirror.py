"""mirror(): a whole directory tree into worktrees, in one batch, one report.

Files go through the batch materializer; directories (empty ones too) and
symlinks are made in the same batch's directories, before its publish, so a
fresh worktree appears in one rename with all of it -- files, links, empty
directories -- or, interrupted, not at all. What each kind of entry becomes
is in ``_tree``. A directory the mirror makes gets its source's permission
bits as ``cp -r`` gives them (the umask applied, the sticky bit kept; see
``_publish``), once its files are in; one that was there keeps its own.

Every worktree is a boundary (``_dirs``): nothing below it is followed. A
symlink already in a worktree where the source has a directory
(``A/lib -> /elsewhere`` while mirroring ``B/lib/evil``) is *reported*, as a
failed directory entry and failed jobs below it, not replaced: a mirror adds
and replaces files, it never deletes, and that link may be the user's own
(``node_modules -> ../shared``) -- removing it to make room would destroy
something the mirror was never asked to touch.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Iterable

from .._outcome import errno_name
from .._paths import PathArg, as_path
from .._platform import check_replaceable
from .._records import TYPE_CHECKING, NamedTuple
from .._tempname import temp_name
from ._batch import run_batch
from ._dirs import DestDir, DirCache
from ._report import JobResult, MaterializeReport
from ._tree import MirrorPlan, plan_mirror

if TYPE_CHECKING:
    from typing import Any

__all__ = ["EntryResult", "MirrorReport", "mirror"]


class EntryResult(NamedTuple):
    """A tree entry that is not a regular file: a symlink made, or a
    directory, symlink or special file that could not be mirrored."""

    #: "directory" (one that could not be made, or a source directory that
    #: could not be listed), "symlink" or "special" (FIFO, socket, device)
    kind: str
    source: str | None
    dest: str | None
    ok: bool
    errno: int | None = None
    error: str | None = None

    @property
    def errno_name(self) -> str | None:
        return None if self.errno is None else errno_name(self.errno)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "source": self.source,
            "dest": self.dest,
            "status": "created" if self.ok else "failed",
            "errno": self.errno_name,
            "error": self.error,
        }


class MirrorReport(NamedTuple):
    """What ``mirror`` did: the file batch, and every other entry."""

    files: MaterializeReport
    entries: tuple[EntryResult, ...]

    @property
    def failed_entries(self) -> list[EntryResult]:
        return [e for e in self.entries if not e.ok]

    @property
    def symlinks(self) -> int:
        """Symlinks created."""
        return sum(1 for e in self.entries if e.kind == "symlink" and e.ok)

    @property
    def ok(self) -> bool:
        return self.files.ok and not self.failed_entries

    def to_dict(self, *, jobs: bool = False) -> dict[str, Any]:
        doc = self.files.to_dict(jobs=jobs)
        doc["ok"] = self.ok
        doc["entries"] = [e.to_dict() for e in self.entries]
        doc["totals"]["symlinks"] = self.symlinks
        doc["totals"]["failed_entries"] = len(self.failed_entries)
        return doc


def mirror(
    src_dir: PathArg,
    dest_dirs: Iterable[PathArg],
    *,
    workers: int | None = None,
    stop_on_error: bool = False,
    mode: int | None = None,
    measure_sharing: bool = False,
    fsync: bool = False,
    on_plan: Callable[[int], None] | None = None,
    on_result: Callable[[JobResult], None] | None = None,
    processes: int | None = 1,
) -> MirrorReport:
    """Mirror the tree ``src_dir`` into each of ``dest_dirs`` (created if
    missing): regular files cloned or copied (``materialize``), symlinks
    recreated with the same target text (never followed), directories
    mirrored, empty ones included; FIFOs, sockets and devices reported as
    failed entries without being opened. Nothing in a worktree is deleted,
    and nothing is written outside one: see the module docstring.

    ``workers``, ``stop_on_error``, ``mode``, ``measure_sharing``, ``fsync``
    ``on_result`` and ``processes`` are ``materialize``'s, except that
    ``processes=None`` picks the number of worker processes from the batch's
    size and the CPUs (``default_processes``; fork-based, so for
    single-threaded callers such as the ``cowprobe`` command). ``on_plan`` is
    called once with the number of file jobs, after the walk and before any
    is started.

    Raises ValueError for bad arguments (``src_dir`` not a directory, a
    worktree that is a file, inside ``src_dir`` or given twice), OSError
    if ``src_dir`` cannot be read and NotADirectoryError for a worktree
    below a file -- all before anything is written.
    Interrupted (any BaseException), no worktree this call was creating is
    left behind, whole or partial.
    """
    src = as_path(src_dir, "source directory")
    if isinstance(dest_dirs, (str, bytes, os.PathLike)):
        # One path, not a list of them: iterating it would mirror into
        # one worktree per character.
        raise TypeError("dest_dirs must be a list of directories, not one path")
    # "wt/" and "wt" are one worktree: one spelling, so its directories are
    # opened (or staged) once, not once per spelling.
    dests = [as_path(d, "worktree").rstrip("/") or "/" for d in dest_dirs]
    _check(src, dests)
    plan = plan_mirror(src, dests)
    entries: list[EntryResult] = [
        EntryResult("directory", path, None, False, err.errno,
                    f"not copied: cannot list the directory: {err.strerror}")
        for path, err in plan.unlisted
    ]
    entries += [
        EntryResult("special", path, None, False, errno.EINVAL,
                    f"not copied: {what}, not a regular file or symlink")
        for path, what in plan.specials
    ]
    if on_plan is not None:
        on_plan(plan.njobs)

    def before_publish(dirs: DirCache, stopped: bool) -> set[DestDir]:
        used: set[DestDir] = set()
        if not (stop_on_error and (stopped or entries)):
            used = _make_entries(plan, dirs, entries, stop_on_error=stop_on_error)
        # Also when stopped: what the workers made is published all the same.
        _mirror_modes(plan, dirs)
        return used

    files = run_batch((), planned=(plan.jobs, plan.njobs), workers=workers,
                      stop_on_error=stop_on_error, mode=mode, measure_sharing=measure_sharing,
                      on_result=on_result, fsync=fsync,
                      worktrees=dests, before_publish=before_publish, processes=processes)
    return MirrorReport(files, tuple(entries))


def _check(src: str, dests: list[str]) -> None:
    if not os.path.isdir(src):
        raise ValueError(f"SRC_DIR is not a directory: {src}")
    if not dests:
        raise ValueError("no DEST_DIR given")
    real_src = os.path.realpath(src)
    seen: dict[str, str] = {}
    for d in dests:
        if os.path.lexists(d):
            if not os.path.isdir(d):
                raise ValueError(f"DEST_DIR exists and is not a directory: {d}")
        else:
            _not_below_a_file(d)
        real = os.path.realpath(d)
        if real == real_src or _below(real_src, real) is not None:
            raise ValueError(f"DEST_DIR {d} is inside SRC_DIR {src}: the mirror would copy itself")
        # SRC_DIR inside DEST_DIR (wt/t into wt) is fine, a template kept in
        # its worktree, unless SRC_DIR holds its own path below DEST_DIR
        # (wt/t/t): that entry's mirror lands on SRC_DIR itself, writing
        # over files the batch is still reading.
        inner = _below(real, real_src)
        if inner is not None and os.path.lexists(os.path.join(src, inner)):
            raise ValueError(f"SRC_DIR {src} is {inner!r} in DEST_DIR {d} and holds an entry "
                             f"{inner!r} itself: the mirror would write over SRC_DIR itself")
        if real in seen:
            raise ValueError(f"DEST_DIR {d} is given twice")
        # One DEST_DIR inside another (wt and wt/sub) likewise, where SRC_DIR
        # holds that path: both mirrors would write wt/sub/x, one job of the
        # pair would fail EEXIST, and wt would hold the other tree's file.
        for other_real, other in seen.items():
            for outer, nested, path in ((other_real, real, d), (real, other_real, other)):
                rel = _below(outer, nested)
                if rel is not None and os.path.lexists(os.path.join(src, rel)):
                    top = other if outer == other_real else d
                    raise ValueError(f"DEST_DIR {path} is {rel!r} in DEST_DIR {top} and "
                                     f"SRC_DIR holds {rel!r} too: both mirrors would write there")
        seen[real] = d


def _not_below_a_file(dest: str) -> None:
    """Raise NotADirectoryError if the missing ``dest`` lies below a file
    (``file/sub``): its parents cannot be made, and were that found only
    when the batch makes them, the other worktrees would be written by then."""
    try:
        os.stat(dest)
    except NotADirectoryError:
        raise
    except OSError:
        pass  # missing (the batch makes it), or the batch's own error to report


def _below(outer: str, path: str) -> str | None:
    """``path`` relative to ``outer`` if it lies strictly inside it (both
    resolved), else None."""
    prefix = outer.rstrip(os.sep) + os.sep
    return path[len(prefix):] if path.startswith(prefix) and path != outer else None


def _make_entries(
    plan: MirrorPlan, dirs: DirCache, entries: list[EntryResult], *, stop_on_error: bool
) -> set[DestDir]:
    """Directories and symlinks, in the batch's directories (staged ones
    included); the staged roots that received something."""
    used: set[DestDir] = set()
    for d, _mode in plan.dirs:
        try:
            ddir = dirs.get(d)
        except OSError as err:
            entries.append(EntryResult("directory", None, d, False, err.errno, err.strerror))
            if stop_on_error:
                return used
            continue
        if ddir.root is not None:
            used.add(ddir.root)
    for src, target, dest in plan.symlinks:
        try:
            ddir = _make_symlink(dirs, target, dest)
        except OSError as err:
            entries.append(EntryResult("symlink", src, dest, False, err.errno, err.strerror))
            if stop_on_error:
                return used
            continue
        entries.append(EntryResult("symlink", src, dest, True))
        if ddir.root is not None:
            used.add(ddir.root)
    return used


def _mirror_modes(plan: MirrorPlan, dirs: DirCache) -> None:
    """Every directory this batch made for a source directory takes that
    one's mode when it is published (``_publish``)."""
    for d, mode in plan.dirs:
        ddir = dirs.lookup(d)
        if ddir is not None and ddir.root is not None:
            ddir.src_mode = mode


def _make_symlink(dirs: DirCache, target: str, dest: str) -> DestDir:
    """Make ``dest`` a symlink to ``target``, relative to its directory's
    descriptor. In a staged directory directly under its name (nobody can
    see it yet); elsewhere built under a temporary name and renamed into
    place, so an existing file or link there is replaced whole or not at
    all. A directory at ``dest`` is refused, not merged; a device, FIFO or
    socket is kept (``check_replaceable``)."""
    parent, _sep, name = dest.rpartition("/")
    ddir = dirs.get(parent or ".")
    if ddir.fresh:
        os.symlink(target, name, dir_fd=ddir.fd)
        return ddir
    check_replaceable(name, ddir.fd, dest)
    tmp = temp_name(name)
    os.symlink(target, tmp, dir_fd=ddir.fd)
    try:
        os.replace(tmp, name, src_dir_fd=ddir.fd, dst_dir_fd=ddir.fd)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=ddir.fd)
        if isinstance(exc, IsADirectoryError):
            raise IsADirectoryError(errno.EISDIR, "a directory is in the way of a symlink",
                                    dest) from None
        raise
    return ddir
