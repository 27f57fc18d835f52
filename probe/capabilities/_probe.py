"""Running the probes: a private directory under PATH, one subdirectory
per probe, and removal of all of it whatever happens.

The guarantees, and why:

* Writes happen only inside ``PATH/.cowprobe-probe-<random>.d`` (mode 0700,
  created exclusively), reached through directory descriptors with
  O_NOFOLLOW, so no symlink under PATH can lead a probe out of it.
* The directory is removed in a ``finally``: on success, on a probe that
  raises (which costs that one answer, "could not tell", not the report),
  and on KeyboardInterrupt, which is re-raised once the files are gone.
  Removal walks descriptors and never follows a symlink, so a link planted
  inside cannot make the cleanup delete anything outside.
* A read-only or unwritable PATH still gets its identity, and every
  capability answers "could not tell" with the reason.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from functools import partial
from typing import Any

from .._fd import DIR_FLAGS
from .._paths import PathArg, as_path
from . import _attrs, _clone, _links, _misc, _names, _overlay, _rename, _space
from ._context import ProbeContext, ProbeSpec, Trial, describe_errno
from ._identity import read_identity, superblock
from ._model import Capability, CapabilityReport, Identity, PairReport, ProbePathError, Status
from ._private import PRIVATE_PREFIX, READ_ONLY_REASON, PrivateDir, create_private

__all__ = [
    "CAPABILITY_NAMES",
    "PRIVATE_PREFIX",
    "Hook",
    "Watch",
    "capability_specs",
    "open_check",
    "pair_titles",
    "probe_directory",
    "probe_directory_pair",
    "resolve_names",
    "spec_titles",
    "unavailable_report",
]

#: Called just before each probe runs, inside the guarded region, with the
#: capability name and the probe's context: a test seam for "a probe
#: crashes" (raise from it) and for watching the private directory.
Hook = Callable[[str, ProbeContext], None]

_SPECS: tuple[ProbeSpec, ...] = (
    _clone.PROBES + _links.PROBES + _attrs.PROBES + _space.PROBES + _names.PROBES
    + _rename.PROBES + _misc.PROBES + _overlay.PROBES
)
CAPABILITY_NAMES: tuple[str, ...] = tuple(s.name for s in _SPECS)

_PAIR_FNS: dict[str, Callable[[ProbeContext, ProbeContext, Trial], Capability]] = {
    "reflink": _clone.reflink,
    "copy_file_range": _clone.copy_file_range,
    "copy_shares_blocks": _clone.copy_shares_blocks,
}
_PAIR_SPECS = tuple((name, title, _PAIR_FNS[name]) for name, title in _clone.PAIR_PROBES)



def capability_specs() -> tuple[ProbeSpec, ...]:
    return _SPECS


def spec_titles(wanted: set[str] | None) -> list[tuple[str, str, str]]:
    """(name, title, group) of each capability a directory probe runs."""
    return [(s.name, s.title, s.group) for s in _SPECS if wanted is None or s.name in wanted]


def pair_titles() -> list[tuple[str, str, str]]:
    """(name, title, group) of each capability a pair probe runs."""
    return [(n, title, "pair") for n, title, _fn in _PAIR_SPECS]


def resolve_names(names: Iterable[str]) -> tuple[str, ...]:
    """Capability names (or aliases, any case, '-' or '_') to canonical names.

    Raises ValueError naming every unknown one and listing the valid names.
    """
    table: dict[str, str] = {}
    for spec in _SPECS:
        for key in (spec.name, *spec.aliases):
            table[key.lower().replace("-", "_")] = spec.name
    out: list[str] = []
    unknown: list[str] = []
    for raw in names:
        key = raw.strip().lower().replace("-", "_")
        if not key:
            continue
        if key in table:
            if table[key] not in out:
                out.append(table[key])
        else:
            unknown.append(raw)
    if unknown:
        raise ValueError(f"unknown capability name(s): {', '.join(unknown)}; "
                         f"known: {', '.join(CAPABILITY_NAMES)}")
    return tuple(out)


def open_check(path: PathArg) -> str:
    """``validate_directory`` in this process."""
    p, fd, _real = _open_dir(path)
    os.close(fd)
    return p


def _open_dir(path: PathArg) -> tuple[str, int, str]:
    """(path, O_DIRECTORY fd, real path), or ProbePathError saying why not."""
    p = as_path(path, "path")
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise ProbePathError(f"{p}: no such directory") from None
    except NotADirectoryError:
        raise ProbePathError(f"{p}: a component of the path is not a directory") from None
    except OSError as err:
        raise ProbePathError(f"{p}: cannot stat: {describe_errno(err.errno)}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ProbePathError(f"{p}: not a directory")
    try:
        fd = os.open(p, DIR_FLAGS)
    except OSError as err:
        raise ProbePathError(f"{p}: cannot open: {describe_errno(err.errno)}") from None
    return p, fd, os.path.realpath(p)


def _identity(p: str, fd: int, real: str) -> Identity:
    """``read_identity``, with its one failure (the directory cannot be
    stat'ed by descriptor nor by name) as ProbePathError naming ``p``."""
    try:
        return read_identity(fd, real)
    except FileNotFoundError:
        raise ProbePathError(f"{p}: no such directory (removed while being probed)") from None
    except OSError as err:
        raise ProbePathError(f"{p}: cannot stat the opened directory: "
                             f"{describe_errno(err.errno)}") from None


def _finish(spec_name: str, title: str, group: str, cap: Capability, t0: float) -> Capability:
    return replace(cap, name=spec_name, title=title, group=group,
                   seconds=time.perf_counter() - t0)


def _guarded(run: Callable[[Trial], Capability]) -> Capability:
    trial = Trial()
    try:
        return run(trial)
    except OSError as err:
        where = f" on {err.filename}" if err.filename else ""
        return trial.could_not_tell(
            f"the probe's own file operations failed: {describe_errno(err.errno)}{where}",
            err.errno)
    except Exception as err:
        # A bug (or an injected fault) in one probe costs that one answer,
        # never the report, and never the cleanup.
        return trial.could_not_tell(f"the probe crashed: {type(err).__name__}: {err}")


def _run_one(spec: ProbeSpec, tmp: PrivateDir, hook: Hook | None) -> Capability:
    t0 = time.perf_counter()

    def run(trial: Trial) -> Capability:
        ctx = tmp.context(spec.name)
        try:
            if hook is not None:
                hook(spec.name, ctx)
            return spec.fn(ctx, trial)
        finally:
            tmp.release(ctx)

    return _finish(spec.name, spec.title, spec.group, _guarded(run), t0)


#: what a capability is called (name, title, group) and how to probe it
_Task = tuple[tuple[str, str, str], Callable[[], Capability]]


class Watch:
    """What a probe run reports as it goes, for an observer: an isolated
    probe's child process (``_isolate``) forwards each event to its parent,
    so a probe stopped inside a syscall still gives what it had found."""

    def opened(self, **fields: Any) -> None:
        """The directory (or pair) is open and identified."""

    def private(self, path: str) -> None:
        """A private probe directory now exists at ``path``."""

    def removed(self, path: str, leftover: str | None) -> None:
        """The removal of ``path`` ended; ``leftover`` says what remains."""

    def done(self, cap: Capability) -> None:
        """One capability is answered."""


_QUIET = Watch()


def _run_all(tasks: list[_Task], deadline: float | None, watch: Watch,
             ) -> tuple[Capability, ...]:
    """Each task in turn; once ``deadline`` (perf_counter) has passed, the
    rest are "could not tell", so a slow filesystem still gets a report."""
    caps: list[Capability] = []
    for i, (_info, run) in enumerate(tasks):
        if deadline is not None and time.perf_counter() >= deadline:
            caps += _blanket((info for info, _run in tasks[i:]),
                             f"not probed: the time limit ran out after {len(caps)} of "
                             f"{len(tasks)} capabilities", None)
            break
        caps.append(run())
        watch.done(caps[-1])
    return tuple(caps)


def _private(fd: int, path: str, watch: Watch,
             ) -> tuple[PrivateDir | None, tuple[str, int] | None]:
    tmp, limit = create_private(fd, path)
    if tmp is not None:
        watch.private(tmp.path)
    return tmp, limit


def _remove(tmp: PrivateDir, watch: Watch) -> str | None:
    leftover = tmp.remove()
    watch.removed(tmp.path, leftover)
    return leftover


def _blanket(specs: Iterable[tuple[str, str, str]], reason: str, code: int | None,
             ) -> tuple[Capability, ...]:
    return tuple(Capability(name=n, title=title, group=g, status=Status.COULD_NOT_TELL,
                            errno=code, reason=reason) for n, title, g in specs)


def _limitation(identity: Identity) -> tuple[str, int] | None:
    if identity.read_only:
        return READ_ONLY_REASON, errno.EROFS
    return None


def unavailable_report(path: str, reason: str, *, label: str | None = None,
                       only: Iterable[str] | None = None,
                       leftover: str | None = None) -> CapabilityReport:
    """A report column for something that could not be probed at all (a
    mount that could not be made, a path that did not answer): every
    capability "could not tell", with ``reason``; ``leftover`` as in any
    report. Never raises for the path."""
    wanted = set(resolve_names(only)) if only is not None else None
    return CapabilityReport(path, path, None, _blanket(spec_titles(wanted), reason, None),
                            limitation=reason, leftover=leftover, label=label)


def unavailable_pair(source: str, dest: str, reason: str, *, label: str | None = None,
                     leftover: str | None = None) -> PairReport:
    """``unavailable_report`` for a pair: every pair capability "could not
    tell", with ``reason``. Whether the two share a filesystem is not
    known, so it is reported as not (EXDEV is never promised unasked)."""
    return PairReport(source, dest, False, _blanket(pair_titles(), reason, None),
                      limitation=reason, leftover=leftover, label=label)


def probe_directory(path: PathArg, wanted: set[str] | None, *, hook: Hook | None = None,
                    label: str | None = None, timeout: float | None = None,
                    watch: Watch = _QUIET) -> CapabilityReport:
    """``probe_capabilities`` in this process, ``only`` resolved to names."""
    t0 = time.perf_counter()
    specs = [s for s in _SPECS if wanted is None or s.name in wanted]
    p, fd, real = _open_dir(path)
    try:
        identity = _identity(p, fd, real)
        watch.opened(path=p, real_path=real, identity=identity)
        limit = _limitation(identity)
        tmp: PrivateDir | None = None
        if limit is None:
            tmp, limit = _private(fd, p, watch)
        if tmp is None:
            assert limit is not None
            caps = _blanket(spec_titles(wanted), *limit)
            return CapabilityReport(p, real, identity, caps, limitation=limit[0],
                                    seconds=time.perf_counter() - t0, label=label)
        leftover: str | None = None
        try:
            caps = _run_all([((s.name, s.title, s.group), partial(_run_one, s, tmp, hook))
                             for s in specs], None if timeout is None else t0 + timeout, watch)
        finally:
            leftover = _remove(tmp, watch)
        return CapabilityReport(p, real, identity, caps, leftover=leftover,
                                seconds=time.perf_counter() - t0, label=label)
    finally:
        os.close(fd)


def probe_directory_pair(source_dir: PathArg, dest_dir: PathArg, *, hook: Hook | None = None,
                         label: str | None = None, timeout: float | None = None,
                         watch: Watch = _QUIET) -> PairReport:
    """``probe_pair`` in this process."""
    t0 = time.perf_counter()
    a, a_fd, a_real = _open_dir(source_dir)
    try:
        b, b_fd, b_real = _open_dir(dest_dir)
    except BaseException:
        os.close(a_fd)
        raise
    specs = pair_titles()
    try:
        # Through _identity, not a bare fstat: a failing stat must become
        # ProbePathError naming the directory, never an OSError naming none.
        a_id, b_id = _identity(a, a_fd, a_real), _identity(b, b_fd, b_real)
        same = a_id.device == b_id.device or _one_superblock(a_fd, a_real, b_fd, b_real)
        watch.opened(source=a, dest=b, same_filesystem=same)
        limit = _limitation(a_id) or _limitation(b_id)
        if limit is not None:
            return PairReport(a, b, same, _blanket(specs, *limit), limitation=limit[0],
                              seconds=time.perf_counter() - t0, label=label)
        src, limit = _private(a_fd, a, watch)
        if src is None:
            assert limit is not None
            return PairReport(a, b, same, _blanket(specs, *limit), limitation=limit[0],
                              seconds=time.perf_counter() - t0, label=label)
        leftovers: list[str] = []
        try:
            dst, limit = _private(b_fd, b, watch)
            if dst is None:
                assert limit is not None
                return PairReport(a, b, same, _blanket(specs, *limit), limitation=limit[0],
                                  seconds=time.perf_counter() - t0, label=label)
            try:
                caps = _run_all([((n, title, "pair"),
                                  partial(_run_pair_one, n, title, fn, src, dst, hook=hook))
                                 for n, title, fn in _PAIR_SPECS],
                                None if timeout is None else t0 + timeout, watch)
            finally:
                if (gone := _remove(dst, watch)) is not None:
                    leftovers.append(gone)
        finally:
            if (gone := _remove(src, watch)) is not None:
                leftovers.append(gone)
        return PairReport(a, b, same, caps, leftover="; ".join(leftovers) or None,
                          seconds=time.perf_counter() - t0, label=label)
    finally:
        os.close(a_fd)
        os.close(b_fd)


def _one_superblock(a_fd: int, a_real: str, b_fd: int, b_real: str) -> bool:
    """Do two directories with different st_devs share one filesystem (two
    subvolumes of a btrfs)? The mount table's device is the superblock's."""
    a_sb = superblock(a_fd, a_real)
    return a_sb is not None and a_sb == superblock(b_fd, b_real)


def _run_pair_one(name: str, title: str,
                  fn: Callable[[ProbeContext, ProbeContext, Trial], Capability],
                  src: PrivateDir, dst: PrivateDir, *, hook: Hook | None) -> Capability:
    t0 = time.perf_counter()

    def run(trial: Trial) -> Capability:
        s_ctx = src.context(name)
        try:
            d_ctx = dst.context(name)
            try:
                if hook is not None:
                    hook(name, s_ctx)
                return fn(s_ctx, d_ctx, trial)
            finally:
                dst.release(d_ctx)
        finally:
            src.release(s_ctx)

    return _finish(name, title, "pair", _guarded(run), t0)
