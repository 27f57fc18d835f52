"""The ``Lab`` itself: builds the filesystems under a root it owns, hands out
mountpoints, scratch dirs and bind mounts, and tears it all down."""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import os
import tempfile
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from ._errors import LabError, LabUnavailable
from ._loops import Loop, arm_autoclear, attach
from ._mounts import MS_BIND, MS_RDONLY, MS_REMOUNT, mount_options, sys_mount, unmount
from ._overlay import make_squashfs, mount_data, write_kit
from ._owner import DEFAULT_BASE, LOCK, ROOT_PREFIX, cleanup_stale, write_owner
from ._specs import (
    KINDS,
    OVERLAYS,
    SPECS,
    check_kinds,
    default_size_mb,
    missing_prerequisites,
)
from ._teardown import dismantle
from ._tool import run_tool

_MIB = 1 << 20


@dataclass(frozen=True)
class LabFs:
    """One mounted lab filesystem."""

    kind: str
    mountpoint: Path
    fstype: str
    #: the loop device (``/dev/loopN``); None for tmpfs
    device: str | None
    #: the sparse image file behind ``device``; None for tmpfs
    image: Path | None
    #: effective mount options, as the kernel reports them
    options: str
    #: the mkfs arguments that made this variant (e.g. ``-m reflink=0``)
    mkfs_args: tuple[str, ...] = ()
    #: the size it was made with (the image, or tmpfs's size=), MiB
    size_mb: int = 0
    #: overlay lanes: the lower layer (a read-only squashfs mount, or a
    #: directory on the base filesystem) and the upper directory; else None
    lower: Path | None = None
    upper: Path | None = None


class Lab:
    """A set of freshly made, mounted lab filesystems; a context manager.

    ``Lab(kinds)`` only records what to build; ``__enter__`` (or ``start``)
    builds, raising ``LabUnavailable`` with the exact missing prerequisite,
    or with the failing step. Whatever was built is torn down on exit -- also
    when setup failed half-way, or the body raised.

    ``base_dir`` (default /tmp) must be an existing directory: the lab makes
    its root there and removes only that root. A missing one raises
    ``FileNotFoundError`` (a file, ``NotADirectoryError``) naming it, before
    anything is made.
    """

    def __init__(
        self,
        kinds: Iterable[str] = KINDS,
        *,
        base_dir: str | os.PathLike[str] | None = None,
        sizes_mb: Mapping[str, int] | None = None,
        reap_stale: bool = True,
    ) -> None:
        self.kinds = check_kinds(kinds)
        self.base_dir = Path(base_dir) if base_dir is not None else DEFAULT_BASE
        self._sizes = {k: default_size_mb(k) for k in (*KINDS, *OVERLAYS)}
        if sizes_mb:
            check_kinds(sizes_mb)
            self._sizes.update(sizes_mb)
        self._reap_stale = reap_stale
        self._lock = threading.RLock()
        self._root: Path | None = None
        self._lock_fd: int | None = None
        self._fs: dict[str, LabFs] = {}
        self._loops: list[Loop] = []
        self._counter = 0
        self._started = False
        self._closed = False
        #: seconds the last build / teardown took (None until it happened)
        self.build_seconds: float | None = None
        self.teardown_seconds: float | None = None

    # -- lifecycle ---------------------------------------------------------

    def __enter__(self) -> Lab:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
            return
        # The body's own failure is the story; a teardown problem on top of
        # it is reported without replacing it.
        try:
            self.close()
        except LabError as err:
            warnings.warn(str(err), RuntimeWarning, stacklevel=2)

    def start(self) -> None:
        with self._lock:
            if self._started:
                raise LabError("lab already started")
            self._started = True
        missing = missing_prerequisites(self.kinds)
        if missing:
            self._closed = True
            raise LabUnavailable("; ".join(missing))
        if self._reap_stale:
            cleanup_stale(self.base_dir)
        t0 = time.monotonic()
        root = self._make_root()
        self._root = root
        atexit.register(self._close_at_exit)
        try:
            write_owner(root)
            self._lock_fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(self._lock_fd, fcntl.LOCK_SH)
            (root / "images").mkdir()
            (root / "mnt").mkdir()
            # mkfs, losetup and mount are mostly waiting on the kernel and on
            # child processes; one thread per filesystem cuts the build to
            # the slowest single filesystem.
            with ThreadPoolExecutor(max_workers=max(1, len(self.kinds))) as pool:
                futures = {k: pool.submit(self._build, k, k, self._sizes[k]) for k in self.kinds}
                failures = []
                for kind, fut in futures.items():
                    try:
                        self._fs[kind] = fut.result()
                    except (LabError, OSError) as err:
                        failures.append(f"{kind}: {err}")
            if failures:
                raise LabUnavailable("could not build the lab: " + "; ".join(failures))
        except BaseException:
            try:
                self.close()
            except LabError as err:
                warnings.warn(str(err), RuntimeWarning, stacklevel=2)
            raise
        self.build_seconds = time.monotonic() - t0

    def _make_root(self) -> Path:
        # The base directory must exist already: no mkdir -p. Parents made
        # here would outlive the lab, and a mistyped base (the mountpoint of
        # a scratch disk) would quietly put the images on whatever holds its
        # nearest existing parent.
        try:
            return Path(tempfile.mkdtemp(prefix=f"{ROOT_PREFIX}{os.getpid()}-",
                                         dir=self.base_dir))
        except OSError as err:
            self._closed = True
            if err.errno in (errno.ENOENT, errno.ENOTDIR):
                # Named by the base dir, not by the root that could not be.
                raise OSError(err.errno, err.strerror, str(self.base_dir)) from None
            raise

    def close(self) -> None:
        """Unmount (bind mounts first), detach, delete. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            root = self._root
        atexit.unregister(self._close_at_exit)
        if root is None:
            return
        t0 = time.monotonic()
        errors = dismantle(root, self._loops)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        self.teardown_seconds = time.monotonic() - t0
        if errors:
            raise LabError(f"lab {root} teardown incomplete: " + "; ".join(errors))

    def _close_at_exit(self) -> None:
        # A lab entered but never exited (an interpreter shutting down with
        # it open) still cleans up after itself.
        with contextlib.suppress(LabError):
            self.close()

    # -- building ----------------------------------------------------------

    def _require_root(self) -> Path:
        if self._root is None or self._closed:
            raise LabError("the lab is not running (use it inside `with Lab() as lab:`)")
        return self._root

    def _build(self, kind: str, name: str, size_mb: int) -> LabFs:
        if kind in OVERLAYS:
            return self._build_overlay(kind, name, size_mb)
        root = self._require_root()
        spec = SPECS[kind]
        mountpoint = root / "mnt" / name
        mountpoint.mkdir()
        if spec.mkfs is None:
            data = ",".join(filter(None, [f"size={size_mb}m", spec.mount_data]))
            self._mount("cowprobe-lab", mountpoint, spec.fstype, 0, data)
            return LabFs(
                kind, mountpoint, spec.fstype, None, None, mount_options(mountpoint), (), size_mb
            )
        image = root / "images" / f"{name}.img"
        with image.open("xb") as fh:
            fh.truncate(size_mb * _MIB)  # sparse: no blocks until written
        run_tool([spec.mkfs, *spec.mkfs_args, str(image)],
                 f"{spec.mkfs} failed on a {size_mb} MiB image")
        device = self._attach(image)
        self._mount(device, mountpoint, spec.fstype, 0, spec.mount_data)
        arm_autoclear(device)
        return LabFs(
            kind,
            mountpoint,
            spec.fstype,
            device,
            image,
            mount_options(mountpoint),
            spec.mkfs_args,
            size_mb,
        )

    def _build_overlay(self, kind: str, name: str, size_mb: int) -> LabFs:
        """Layers first (each a lab filesystem of its own), the kit in the
        lower, then the overlay on top; teardown unmounts in reverse."""
        root = self._require_root()
        spec = OVERLAYS[kind]
        base = self._build(spec.base, f"{name}-base", size_mb)
        if spec.lower_fs is None:
            lower = base.mountpoint / "lower"
            lower.mkdir()
            write_kit(lower)
        else:
            stage = root / "images" / f"{name}-lower.d"
            stage.mkdir()
            write_kit(stage)
            image = root / "images" / f"{name}-lower.img"
            make_squashfs(stage, image)
            lower = root / "mnt" / f"{name}-lower"
            lower.mkdir()
            device = self._attach(image)
            self._mount(device, lower, spec.lower_fs, MS_RDONLY, "")
            arm_autoclear(device)
        upper, work = base.mountpoint / "upper", base.mountpoint / "work"
        upper.mkdir()
        work.mkdir()
        mountpoint = root / "mnt" / name
        mountpoint.mkdir()
        self._mount("overlay", mountpoint, "overlay", 0, mount_data(lower, upper, work))
        return LabFs(kind, mountpoint, "overlay", base.device, base.image,
                     mount_options(mountpoint), base.mkfs_args, size_mb, lower, upper)

    def _attach(self, image: Path) -> str:
        loop = attach(image)
        with self._lock:
            self._loops.append(loop)
        return loop.device

    def _mount(self, source: str, target: Path, fstype: str | None, flags: int, data: str) -> None:
        try:
            sys_mount(source, target, fstype, flags, data)
        except OSError as err:
            if err.errno == errno.ENODEV and fstype:
                raise LabUnavailable(f"kernel lacks {fstype} (mount says ENODEV)") from err
            what = f"mount -t {fstype}" if fstype else "mount"
            raise LabError(f"{what} {source} on {target}: {err.strerror}") from err

    # -- access ------------------------------------------------------------

    @property
    def root(self) -> Path:
        """The directory the lab owns (images, mountpoints, owner file)."""
        return self._require_root()

    @property
    def filesystems(self) -> dict[str, LabFs]:
        return dict(self._fs)

    def __getitem__(self, kind: str) -> LabFs:
        try:
            return self._fs[kind]
        except KeyError:
            raise KeyError(
                f"this lab has no {kind!r} filesystem (it has {list(self._fs)})"
            ) from None

    def __contains__(self, kind: object) -> bool:
        return kind in self._fs

    def __iter__(self) -> Iterator[LabFs]:
        return iter(self._fs.values())

    def path(self, kind: str) -> Path:
        """The mountpoint of ``kind``."""
        return self[kind].mountpoint

    def _next(self) -> int:
        with self._lock:
            self._counter += 1
            return self._counter

    def scratch_dir(self, kind: str, name: str) -> Path:
        """A fresh, empty, uniquely named directory on ``kind``'s filesystem."""
        if not name or "/" in name or "\0" in name:
            raise ValueError(f"scratch dir name must be a plain file name, not {name!r}")
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.path(kind)))

    def bind_mount(self, kind: str) -> Path:
        """A second mount (bind) of ``kind``'s filesystem; its mountpoint."""
        return self._bind(kind, readonly=False)

    def readonly_bind(self, kind: str) -> Path:
        """A read-only bind mount of ``kind``'s filesystem; its mountpoint.

        Writes through it fail with EROFS while the filesystem itself stays
        writable through the lab's own mountpoint.
        """
        return self._bind(kind, readonly=True)

    def _bind(self, kind: str, *, readonly: bool) -> Path:
        source = self.path(kind)
        root = self._require_root()
        target = root / "bind" / f"{kind}-{'ro-' if readonly else ''}{self._next()}"
        target.mkdir(parents=True)
        self._mount(str(source), target, None, MS_BIND, "")
        if readonly:
            # MS_RDONLY is ignored on the initial bind; a bind mount only
            # becomes read-only through a remount of that mount alone.
            try:
                self._mount("none", target, None, MS_REMOUNT | MS_BIND | MS_RDONLY, "")
            except LabError:
                unmount(str(target))
                raise
        return target

    def make_tiny(self, kind: str, size_mb: int) -> LabFs:
        """An extra, small filesystem of ``kind`` (e.g. to fill up for ENOSPC).

        Torn down with the lab. mkfs decides how small is too small and the
        error says so (XFS needs 300 MiB, btrfs ~110 MiB; ext4 and tmpfs go
        down to a few MiB).
        """
        (kind,) = check_kinds((kind,))
        if size_mb < 1:
            raise ValueError(f"size_mb must be >= 1, not {size_mb}")
        missing = missing_prerequisites((kind,))
        if missing:
            raise LabUnavailable("; ".join(missing))
        self._require_root()
        return self._build(kind, f"{kind}-tiny-{self._next()}", size_mb)

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("running" if self._root else "not started")
        return f"Lab(kinds={self.kinds!r}, root={self._root}, {state})"
