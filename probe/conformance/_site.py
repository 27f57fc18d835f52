"""Where the scenarios run: the built-in lab, or two directories a user names.

A ``Site`` turns a variant's symbolic places into fresh empty directories,
says which capabilities it lacks (each with a reason naming the missing
thing), owns the fakefs mount the simulated column needs, and tears down
everything it made -- in reverse order, also when a scenario blew up.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import importlib.util
import os
import platform
import secrets
import shutil
import subprocess
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .. import _linux
from .._outcome import errno_name
from ._model import Variant
from ._mounts import mount_of
from ._scenarios import LAB_PLACES, USER_PLACES

if TYPE_CHECKING:
    from ..lab import Lab

__all__ = ["DirSite", "FaultMount", "LabSite", "Site", "Workdir", "fuse_missing"]

_FAKEFS = "fakefs"


class FaultMount(Protocol):
    """The part of a ``fakefs.mount(...)`` handle the runner drives."""

    def add_fault(self, rule: str) -> int: ...
    def clear_faults(self) -> None: ...
    def faults(self) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class Workdir:
    """A fresh empty directory for one case.

    ``path`` is where the library is pointed; ``backing`` (fakefs only) is
    the same directory seen beneath the FUSE mount, where the runner writes
    its fixtures so the kernel holds no cached entry a fault rule would have
    to fight; ``writable`` is a read-write view of a read-only place.
    """

    path: Path
    backing: Path | None = None
    writable: Path | None = None

    @property
    def setup_path(self) -> Path:
        return self.backing or self.writable or self.path


def fuse_missing() -> str | None:
    """Why a fakefs mount cannot be made here, or None (fakefs's own check)."""
    import fakefs

    why = fakefs.missing_prerequisites()
    return "; ".join(why) if why else None


def _rmtree(path: Path) -> None:
    """Remove a case directory even where a scenario made it immutable or 0555."""
    if not path.exists():
        return
    for root, dirs, _files in os.walk(path):
        for d in [root, *(os.path.join(root, x) for x in dirs)]:
            with contextlib.suppress(OSError):
                _linux.change_dir_flags(d, remove=_linux.FS_IMMUTABLE_FL)
            with contextlib.suppress(OSError):
                os.chmod(d, 0o755)  # noqa: S103 - undo a scenario's 0555 so rmtree works
    shutil.rmtree(path, ignore_errors=True)


def _run(*cmd: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise OSError(f"{' '.join(cmd)} failed: {proc.stderr.strip() or proc.returncode}")


class Site(ABC):
    """Resolves places, reports missing capabilities, owns what it mounts."""

    mode: str
    places: frozenset[str]

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self._fakefs: tuple[FaultMount, Path, Path] | None = None
        self._fakefs_error: str | None = None
        self._used: dict[str, Path] = {}
        self._tmp: Path | None = None

    # -- lifetime ---------------------------------------------------------
    def __enter__(self) -> Site:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stack.close()

    def _private_tmp(self) -> Path:
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="cowprobe-conformance-"))
            tmp = self._tmp
            self._stack.callback(shutil.rmtree, tmp, True)
        return self._tmp

    # -- places -----------------------------------------------------------
    def applies(self, variant: Variant) -> bool:
        """Is this variant's set-up one this kind of site can express at all?"""
        return {variant.source, variant.dest} <= self.places | {_FAKEFS}

    def missing(self, variant: Variant) -> str | None:
        """Why ``variant`` cannot run here (names the missing thing), or None."""
        for place in (variant.source, variant.dest):
            if place == _FAKEFS and (why := self.fakefs_missing()):
                return why
            if why := self.place_missing(place):
                return why
        for cap in variant.requires:
            if why := self.capability_missing(cap):
                return why
        if variant.syscall_faults:
            import fakefs

            if why_list := fakefs.syscall_missing():
                return "; ".join(why_list)
        return None

    def fakefs_missing(self) -> str | None:
        if self._fakefs_error:
            return self._fakefs_error
        return fuse_missing()

    def place_missing(self, place: str) -> str | None:
        return None

    def capability_missing(self, cap: str) -> str | None:
        if cap == "not-root":
            return (
                "running as root, which bypasses permission bits (run as a normal user)"
                if os.geteuid() == 0 else None
            )
        return self._pair_missing(cap)

    def _pair_missing(self, cap: str) -> str | None:
        return f"unknown capability {cap!r}"

    def workdir(self, place: str, role: str) -> Workdir:
        if place == _FAKEFS:
            _, mnt, backing = self.fakefs()
            name = f"{role}-{secrets.token_hex(4)}"
            (backing / name).mkdir()
            return Workdir(mnt / name, backing=backing / name)
        wd = self._workdir(place, role)
        self._used.setdefault(place, wd.path.parent)
        return wd

    @abstractmethod
    def _workdir(self, place: str, role: str) -> Workdir: ...

    @abstractmethod
    def _fakefs_backing(self) -> Path: ...

    def _mount_dir(self) -> Path:
        d = self._private_tmp() / f"fakefs-{secrets.token_hex(4)}"
        d.mkdir()
        return d

    def fill(self, place: str, wd: Workdir) -> None:  # noqa: B027 - optional hook
        """Last set-up step before the call (e.g. fill a tiny fs up)."""

    def discard(self, wd: Workdir) -> None:
        _rmtree(wd.setup_path)

    # -- fakefs -----------------------------------------------------------
    def fakefs(self) -> tuple[FaultMount, Path, Path]:
        """The session's fakefs mount: (handle, mountpoint, backing dir)."""
        if self._fakefs is None:
            if why := self.fakefs_missing():
                raise RuntimeError(why)
            fakefs = importlib.import_module("fakefs")
            backing = self._fakefs_backing()
            mnt = self._mount_dir()
            try:
                handle = self._stack.enter_context(fakefs.mount(backing, mnt))
            except Exception as err:
                self._fakefs_error = f"fakefs mount failed: {err}"
                raise
            self._fakefs = (handle, mnt, backing)
            self._used[_FAKEFS] = mnt
        return self._fakefs

    # -- report -----------------------------------------------------------
    def properties(self) -> dict[str, str]:
        """Kernel release and, per place used, filesystem type and mount options."""
        props = {"kernel.release": platform.release(), "site.mode": self.mode}
        for place, path in sorted(self._used.items()):
            info = mount_of(path)
            if info is None:
                continue
            props[f"{place}.fstype"] = info.fstype
            props[f"{place}.mount_options"] = info.options
            props[f"{place}.mountpoint"] = info.mountpoint
        return props


class LabSite(Site):
    """The built-in lab: loopback btrfs / XFS / ext4 plus tmpfs, and mounts on top."""

    mode = "lab"
    places = LAB_PLACES

    def __init__(self, lab: Lab) -> None:
        super().__init__()
        self.lab = lab
        self._binds: dict[str, Path] = {}
        self._tiny: Path | None = None

    def _bind(self, name: str) -> Path:
        if name not in self._binds:
            bind = self.lab.bind_mount if name == "bind" else self.lab.readonly_bind
            self._binds[name] = bind("btrfs")
        return self._binds[name]

    def _tiny_full(self) -> Path:
        # A filesystem of its own, so filling it up never starves the lab
        # filesystems other scenarios use; the lab tears it down (also after
        # a SIGKILL, through its stale-lab reaper).
        if self._tiny is None:
            self._tiny = self.lab.make_tiny("tmpfs", 1).mountpoint
        return self._tiny

    def _mount_dir(self) -> Path:
        # Under the lab's root, so the lab's reaper unmounts it should this
        # process be killed before it can.
        d = self.lab.root / f"conformance-fakefs-{secrets.token_hex(4)}"
        d.mkdir()
        return d

    def fill(self, place: str, wd: Workdir) -> None:
        if place != "tiny-full":
            return
        # Fill to the last byte: a file grows until ENOSPC, whatever the
        # block size and the space the fixtures already took.
        chunk = b"\xff" * 4096
        with open(wd.setup_path / ".filler", "wb", buffering=0) as fh:
            while True:
                try:
                    fh.write(chunk)
                except OSError as err:
                    if err.errno != errno.ENOSPC:
                        raise
                    break

    def _workdir(self, place: str, role: str) -> Workdir:
        name = f"{role}-{secrets.token_hex(4)}"
        if place in ("btrfs-bind", "btrfs-ro"):
            real = self.lab.scratch_dir("btrfs", name)
            rel = real.relative_to(self.lab.path("btrfs"))
            view = self._bind("bind" if place == "btrfs-bind" else "ro") / rel
            return Workdir(view, writable=real if place == "btrfs-ro" else None)
        if place == "tiny-full":
            d = self._tiny_full() / name
            d.mkdir()
            return Workdir(d)
        return Workdir(self.lab.scratch_dir(place, name))

    def _fakefs_backing(self) -> Path:
        return self.lab.scratch_dir("btrfs", "fakefs-backing")


class DirSite(Site):
    """Two directories the user names; only the scenarios that apply there run."""

    mode = "dirs"
    places = USER_PLACES

    def __init__(self, source_dir: Path, dest_dir: Path) -> None:
        super().__init__()
        self.source_dir = source_dir
        self.dest_dir = dest_dir
        self._roots: dict[str, Path] = {}
        self._pair_errno: int | str | None = "unprobed"
        self._ro: Path | None = None

    def _root(self, base: Path) -> Path:
        key = os.path.realpath(base)
        if key not in self._roots:
            root = Path(tempfile.mkdtemp(prefix=".cowprobe-conformance-", dir=base))
            self._roots[key] = root
            self._stack.callback(_rmtree, root)
        return self._roots[key]

    def place_missing(self, place: str) -> str | None:
        if place == "dest-ro" and os.geteuid() != 0:
            return "not root: a read-only bind mount of dest-dir needs root"
        return None

    def _readonly_view(self) -> tuple[Path, Path]:
        if self._ro is None:
            target = self._root(self.dest_dir) / "ro-target"
            target.mkdir()
            mnt = self._private_tmp() / "dest-ro"
            mnt.mkdir()
            _run("mount", "--bind", str(target), str(mnt))
            self._stack.callback(_run, "umount", str(mnt))
            _run("mount", "-o", "remount,bind,ro", str(mnt))
            self._ro = mnt
        return self._ro, self._root(self.dest_dir) / "ro-target"

    def _workdir(self, place: str, role: str) -> Workdir:
        name = f"{role}-{secrets.token_hex(4)}"
        if place == "dest-ro":
            view, real = self._readonly_view()
            (real / name).mkdir()
            return Workdir(view / name, writable=real / name)
        base = self.source_dir if place == "source-dir" else self.dest_dir
        d = self._root(base) / name
        d.mkdir()
        return Workdir(d)

    def _fakefs_backing(self) -> Path:
        d = self._root(self.source_dir) / "fakefs-backing"
        d.mkdir(exist_ok=True)
        return d

    # -- what the pair can do, asked of the kernel directly ----------------
    def pair_errno(self) -> int | None:
        """FICLONE's own answer for source-dir -> dest-dir (None: it cloned).

        Asked with the raw ioctl, not through the library under test, so
        deciding which scenarios apply never depends on the classifier the
        run is checking.
        """
        if self._pair_errno == "unprobed":
            src = self._root(self.source_dir) / f"pair-probe-{secrets.token_hex(4)}"
            dst = self._root(self.dest_dir) / f"pair-probe-{secrets.token_hex(4)}"
            src.write_bytes(b"cowprobe pair probe\n" * 4096)
            result: int | None = None
            try:
                with open(src, "rb") as s, open(dst, "xb") as d:
                    try:
                        _linux.ficlone(d.fileno(), s.fileno())
                    except OSError as err:
                        result = err.errno
            finally:
                for p in (src, dst):
                    with contextlib.suppress(FileNotFoundError):
                        p.unlink()
            self._pair_errno = result
        assert not isinstance(self._pair_errno, str)
        return self._pair_errno

    def _pair_missing(self, cap: str) -> str | None:
        pair = f"{self.source_dir} -> {self.dest_dir}"
        got = self.pair_errno()
        said = "it clones" if got is None else f"FICLONE says {errno_name(got)}"
        if cap == "pair-clones":
            return None if got is None else f"{pair} does not clone ({said})"
        if cap == "pair-refuses":
            ok = got in (errno.EXDEV, errno.EOPNOTSUPP)
            return None if ok else f"{pair} is not a non-CoW pair ({said})"
        if cap.startswith("pair-errno:"):
            want = cap.split(":", 1)[1]
            ok = got == getattr(errno, want)
            return None if ok else f"{pair} does not answer {want} ({said})"
        if cap == "dest-btrfs":
            info = mount_of(self.dest_dir)
            fstype = info.fstype if info else "unknown"
            if fstype != "btrfs":
                return f"dest-dir is on {fstype}, not btrfs (the NOCOW refusal is btrfs's)"
            return None
        return super()._pair_missing(cap)

