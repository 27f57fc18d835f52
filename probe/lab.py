"""The real-filesystem lab: loopback btrfs, XFS (reflink on and off) and ext4,
plus a tmpfs, each a real kernel mount, built under one directory the lab owns.

Why a lab and not fixtures that mock the kernel: the answers cowprobe
classifies (EXDEV, EOPNOTSUPP, EINVAL for NOCOW, shared extents) come from the
filesystems themselves and change between kernels. Asking them is the only
test that means anything.

Shape on disk (one lab)::

    /tmp/cowprobe-lab-<pid>-<random>/
        owner.json    pid + process start time + boot id of the owner
        lock          flock'ed (shared) by the owner while it lives
        images/       sparse image files, one per loop-backed filesystem
        mnt/<kind>    the mountpoints
        bind/...      bind mounts handed out by bind_mount()/readonly_bind()

Several engineers run labs on one machine at the same time, so the lab only
ever unmounts what lies under its own root and only detaches loop devices it
can prove are backed by its own images. Leftovers of a lab whose owner died
(SIGKILL, OOM, a CI runner pulled away) are reaped by ``cleanup_stale()``,
which every new lab runs first; a lab whose owner is alive is never touched.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import TracebackType

__all__ = [
    "KINDS",
    "Lab",
    "LabError",
    "LabFs",
    "LabUnavailable",
    "arm_autoclear",
    "cleanup_stale",
    "missing_prerequisites",
]

KINDS: tuple[str, ...] = ("btrfs", "xfs", "xfs-noreflink", "ext4", "tmpfs")

DEFAULT_BASE = Path("/tmp")
_ROOT_PREFIX = "cowprobe-lab-"
# The pid in the name is the fallback owner when owner.json is not written
# yet (the microseconds between mkdtemp and the write) or is unreadable.
_ROOT_RE = re.compile(r"^cowprobe-lab-(\d+)-[A-Za-z0-9_]+$")
_OWNER = "owner.json"
_LOCK = "lock"
_MIB = 1 << 20


class LabError(RuntimeError):
    """The lab could not do what was asked (build, teardown)."""


class LabUnavailable(LabError):
    """The lab cannot run here; the message names exactly what is missing."""


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


@dataclass(frozen=True)
class _Spec:
    fstype: str
    mkfs: str | None
    mkfs_args: tuple[str, ...]
    size_mb: int
    mount_data: str
    package: str


# Sizes are each mkfs's minimum rounded up (mkfs.xfs refuses < 300 MiB,
# mkfs.btrfs ~110 MiB). The images are sparse, so the size costs no disk;
# only what mkfs writes (mostly the XFS log) is allocated. -K / nodiscard:
# discarding a fresh sparse file is pure waste. ext4's lazy init would spawn
# a kernel thread that zeroes inode tables into the sparse image long after
# mkfs; the image reads as zeros already, so noinit_itable skips it.
_SPECS: dict[str, _Spec] = {
    "btrfs": _Spec("btrfs", "mkfs.btrfs", ("-f", "-q", "-K"), 128, "", "btrfs-progs"),
    "xfs": _Spec("xfs", "mkfs.xfs", ("-q", "-f", "-K", "-m", "reflink=1"), 300, "", "xfsprogs"),
    "xfs-noreflink": _Spec(
        "xfs", "mkfs.xfs", ("-q", "-f", "-K", "-m", "reflink=0"), 300, "", "xfsprogs"
    ),
    "ext4": _Spec(
        "ext4",
        "mkfs.ext4",
        ("-q", "-F", "-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard"),
        32,
        "noinit_itable",
        "e2fsprogs",
    ),
    "tmpfs": _Spec("tmpfs", None, (), 64, "mode=0755", ""),
}


# --------------------------------------------------------------------------
# prerequisites


def _kernel_has(fstype: str) -> bool:
    try:
        with Path("/proc/filesystems").open() as fh:
            if any(line.split()[-1] == fstype for line in fh if line.strip()):
                return True
    except OSError:
        return False
    # Not registered yet is fine if it is a module: mount(2) as root loads it.
    dep = Path("/lib/modules") / os.uname().release / "modules.dep"
    try:
        text = dep.read_text()
    except OSError:
        return False
    return f"/{fstype}.ko" in text


def missing_prerequisites(kinds: Iterable[str] = KINDS, *, path: str | None = None) -> list[str]:
    """What this machine lacks to build a lab of ``kinds``; empty if nothing.

    ``path`` is the search path for the tools (default: ``$PATH``).
    """
    kinds = _check_kinds(kinds)
    missing: list[str] = []
    if os.geteuid() != 0:
        missing.append(
            f"not root (running as uid {os.geteuid()}; mount(2) and loop devices need root)"
        )
    loop_kinds = [k for k in kinds if _SPECS[k].mkfs is not None]
    if loop_kinds:
        if not Path("/dev/loop-control").exists():
            missing.append("no /dev/loop-control (loop module not loaded or not exposed here)")
        if shutil.which("losetup", path=path) is None:
            missing.append("losetup missing (install util-linux)")
    seen: set[str] = set()
    for kind in kinds:
        spec = _SPECS[kind]
        if spec.mkfs and spec.mkfs not in seen:
            seen.add(spec.mkfs)
            if shutil.which(spec.mkfs, path=path) is None:
                missing.append(f"{spec.mkfs} missing (install {spec.package})")
        if spec.fstype not in seen:
            seen.add(spec.fstype)
            if not _kernel_has(spec.fstype):
                missing.append(f"kernel lacks {spec.fstype} (not in /proc/filesystems, no module)")
    return missing


def _check_kinds(kinds: Iterable[str]) -> tuple[str, ...]:
    if isinstance(kinds, str):  # Lab("btrfs") would otherwise iterate letters
        kinds = (kinds,)
    out = tuple(dict.fromkeys(kinds))
    unknown = [k for k in out if k not in _SPECS]
    if unknown:
        raise ValueError(f"unknown lab filesystem kind(s) {unknown}; known: {list(KINDS)}")
    return out


# --------------------------------------------------------------------------
# mount(2), umount2(2) and the loop ioctls. Called directly rather than via
# mount(8): the exact errno decides what to do (EBUSY -> lazy detach, EINVAL
# -> already gone), and there is no text to parse.

_MS_RDONLY = 0x1
_MS_REMOUNT = 0x20
_MS_BIND = 0x1000
_MNT_DETACH = 0x2

_LOOP_CLR_FD = 0x4C01
_LOOP_SET_STATUS64 = 0x4C04
_LOOP_GET_STATUS64 = 0x4C05
_LO_FLAGS_AUTOCLEAR = 4
_LO_FLAGS_FIELD = 8
# struct loop_info64: lo_device, lo_inode, lo_rdevice, lo_offset,
# lo_sizelimit (u64); lo_number, lo_encrypt_type, lo_encrypt_key_size,
# lo_flags (u32); lo_file_name[64], lo_crypt_name[64], lo_encrypt_key[32];
# lo_init[2] (u64).
_LOOP_INFO64 = struct.Struct("=QQQQQIIII64s64s32sQQ")


@cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.mount.argtypes = [
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_ulong,
        ctypes.c_char_p,
    ]
    libc.mount.restype = ctypes.c_int
    libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    libc.umount2.restype = ctypes.c_int
    return libc


def _sys_mount(source: str, target: Path, fstype: str | None, flags: int, data: str) -> None:
    rc = int(
        _libc().mount(
            source.encode(),
            os.fsencode(target),
            fstype.encode() if fstype else None,
            flags,
            data.encode() if data else None,
        )
    )
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(target))


def _sys_umount(target: str, flags: int = 0) -> int:
    """umount2; 0 or the errno."""
    if int(_libc().umount2(os.fsencode(target), flags)) == 0:
        return 0
    return ctypes.get_errno()


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _mountinfo() -> list[tuple[str, str]]:
    """(mountpoint, options) for every mount, in mount order."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" ")
        sep = fields.index("-")
        opts = fields[5]
        if len(fields) > sep + 3:
            opts = f"{opts},{fields[sep + 3]}"
        out.append((_unescape(fields[4]), opts))
    return out


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root + "/")


def _mounts_under(root: str) -> list[str]:
    return [mp for mp, _ in _mountinfo() if _under(mp, root)]


def _mount_options(mountpoint: Path) -> str:
    wanted = str(mountpoint)
    found = ""
    for mp, opts in _mountinfo():
        if mp == wanted:
            found = opts  # the last one is the top of a stack
    return ",".join(dict.fromkeys(found.split(",")))


def _loop_backing(device: str) -> str | None:
    """The path backing ``/dev/loopN`` per sysfs, without " (deleted)"."""
    name = os.path.basename(device)
    try:
        text = (Path("/sys/block") / name / "loop" / "backing_file").read_text()
    except OSError:
        return None
    text = text.rstrip("\n")
    return text.removesuffix(" (deleted)")


def _loops_backed_under(root: str) -> list[str]:
    found = []
    for entry in Path("/sys/block").glob("loop*"):
        backing = _loop_backing(entry.name)
        if backing is not None and _under(backing, root):
            found.append(f"/dev/{entry.name}")
    return found


def arm_autoclear(device: str) -> None:
    """Let the kernel detach ``device`` by itself once nothing holds it.

    A SIGKILL (``docker kill``, the OOM killer, a CI runner pulled away) gives
    no chance to tear down. With autoclear set on a *mounted* loop the device
    frees itself when its filesystem is unmounted -- by us, by the next
    ``cleanup_stale()``, or by the kernel when a container's mount namespace
    dies. Set only after the mount: on a loop nobody holds, autoclear would
    detach it at once.
    """
    fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    try:
        buf = bytearray(_LOOP_INFO64.size)
        fcntl.ioctl(fd, _LOOP_GET_STATUS64, buf)
        fields = list(_LOOP_INFO64.unpack(buf))
        fields[_LO_FLAGS_FIELD] |= _LO_FLAGS_AUTOCLEAR
        fcntl.ioctl(fd, _LOOP_SET_STATUS64, _LOOP_INFO64.pack(*fields))
    finally:
        os.close(fd)


def _detach_loop(device: str, root: str, image_ino: int | None) -> str | None:
    """Detach ``device`` if it is still backed by an image under ``root``.

    The check happens on an open descriptor: while we hold it the kernel
    cannot free the device (autoclear waits for the last close), so it cannot
    be recycled for another engineer's image between our check and the
    LOOP_CLR_FD. Returns an error description or None.
    """
    try:
        fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as err:
        return f"open {device}: {err.strerror}"
    try:
        buf = bytearray(_LOOP_INFO64.size)
        try:
            fcntl.ioctl(fd, _LOOP_GET_STATUS64, buf)
        except OSError as err:
            if err.errno == errno.ENXIO:  # not bound to anything: already gone
                return None
            return f"{device}: LOOP_GET_STATUS64: {err.strerror}"
        lo_inode = _LOOP_INFO64.unpack(buf)[1]
        backing = _loop_backing(device)
        if backing is None or not _under(backing, root):
            return None
        if image_ino is not None and lo_inode != image_ino:
            return None
        try:
            # With other openers left (a lazily detached mount) this only
            # sets autoclear, and the device frees itself when they go.
            fcntl.ioctl(fd, _LOOP_CLR_FD, 0)
        except OSError as err:
            if err.errno != errno.ENXIO:
                return f"{device}: LOOP_CLR_FD: {err.strerror}"
    finally:
        os.close(fd)
    return None


def _unmount(mountpoint: str) -> str | None:
    err = _sys_umount(mountpoint)
    if err in (0, errno.EINVAL, errno.ENOENT):  # EINVAL: not a mountpoint (any more)
        return None
    if err == errno.EBUSY:
        # Something (a leaked fd, a cwd) still uses it. Detach it from the
        # tree now; the filesystem dies, and its loop device frees itself,
        # when that user goes. Leaving it mounted would leak it for good.
        err = _sys_umount(mountpoint, _MNT_DETACH)
        if err in (0, errno.EINVAL, errno.ENOENT):
            return None
    return f"umount {mountpoint}: {os.strerror(err)}"


@dataclass(frozen=True)
class _Loop:
    device: str
    image_ino: int


def _dismantle(root: Path, loops: Iterable[_Loop] = ()) -> list[str]:
    """Unmount, detach and delete everything of the lab at ``root``.

    Works from what the kernel reports (mountinfo, sysfs), so it finishes a
    lab whose setup died half-way as well as one whose owner was killed.
    Returns what could not be undone.
    """
    real = os.path.realpath(root)
    errors: list[str] = []
    # Reverse mount order: bind mounts and anything stacked come off before
    # the filesystem they sit on.
    for mp in reversed(_mounts_under(real)):
        problem = _unmount(mp)
        if problem:
            errors.append(problem)
    known = {lp.device: lp.image_ino for lp in loops}
    for device in dict.fromkeys([*known, *_loops_backed_under(real)]):
        problem = _detach_loop(device, real, known.get(device))
        if problem:
            errors.append(problem)
    left = _mounts_under(real)
    if left:
        # Never rmtree through a live mount: that would delete a
        # filesystem's contents instead of the empty mountpoint.
        errors.append(f"still mounted under {real}: {left}")
        return errors
    try:
        shutil.rmtree(real)
    except FileNotFoundError:
        pass
    except OSError as err:
        errors.append(f"remove {real}: {err}")
    return errors


# --------------------------------------------------------------------------
# ownership: who is alive


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _start_ticks(pid: int) -> int | None:
    """The start time of live process ``pid`` (clock ticks after boot);
    None if there is no such process or only its zombie is left."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm (field 2) may contain spaces and parentheses; fields after the
    # last ')' are fixed. State is field 3, starttime field 22.
    rest = text[text.rindex(")") + 2 :].split()
    if rest[0] in ("Z", "X", "x"):  # a zombie holds nothing and will do nothing
        return None
    return int(rest[19])


def _owner_alive(root: Path, name_pid: int) -> bool:
    try:
        owner = json.loads((root / _OWNER).read_text())
        pid, ticks, boot = int(owner["pid"]), int(owner["start_ticks"]), str(owner["boot_id"])
    except FileNotFoundError:
        return _start_ticks(name_pid) is not None
    except (OSError, ValueError, KeyError, TypeError):
        # Unreadable or torn: all we know is the pid in the name. Treat a
        # live pid as the owner; mistaking a dead lab for live only delays
        # its cleanup, the reverse would destroy someone's running tests.
        return _start_ticks(name_pid) is not None
    if boot != _boot_id():
        return False
    # pid AND start time: a recycled pid belongs to a different process.
    return _start_ticks(pid) == ticks


def _write_owner(root: Path) -> None:
    pid = os.getpid()
    doc = {
        "pid": pid,
        "start_ticks": _start_ticks(pid),
        "boot_id": _boot_id(),
        "created": time.time(),
    }
    tmp = root / f".{_OWNER}.tmp"
    tmp.write_text(json.dumps(doc))
    # A reader sees the whole file or none (then it falls back to the pid).
    tmp.replace(root / _OWNER)


def _is_lab_root(entry: Path) -> int | None:
    """The pid from the name if ``entry`` is a lab root we may reap."""
    m = _ROOT_RE.match(entry.name)
    if not m:
        return None
    try:
        st = entry.lstat()
    except OSError:
        return None
    # /tmp is world-writable: only a real directory owned by us counts, never
    # a symlink someone planted to aim the reaper at something else.
    if not (os.path.isdir(entry) and not entry.is_symlink() and st.st_uid == os.geteuid()):
        return None
    return int(m.group(1))


def cleanup_stale(base_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Tear down labs under ``base_dir`` whose owner process is dead.

    A lab is stale only if its recorded owner (pid *and* process start time,
    same boot) is gone; a live lab of any process is never touched. Two
    reapers never work on one lab: each takes the lab's lock exclusively,
    which also fails while the live owner holds it shared. Returns the roots
    that were removed.
    """
    base = Path(base_dir) if base_dir is not None else DEFAULT_BASE
    reaped: list[Path] = []
    try:
        entries = sorted(base.iterdir())
    except FileNotFoundError:
        return reaped
    for entry in entries:
        name_pid = _is_lab_root(entry)
        if name_pid is None or _owner_alive(entry, name_pid):
            continue
        try:
            lock_fd = os.open(entry / _LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            continue  # vanished meanwhile (another reaper finished it)
        try:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            if not entry.exists():
                continue
            errors = _dismantle(entry)
            if errors:
                warnings.warn(
                    f"cowprobe lab: stale lab {entry} not fully removed: {'; '.join(errors)}",
                    RuntimeWarning,
                    stacklevel=2,
                )
            else:
                reaped.append(entry)
        finally:
            os.close(lock_fd)
    return reaped


# --------------------------------------------------------------------------
# the lab


class Lab:
    """A set of freshly made, mounted lab filesystems; a context manager.

    ``Lab(kinds)`` only records what to build; ``__enter__`` (or ``start``)
    builds, raising ``LabUnavailable`` with the exact missing prerequisite,
    or with the failing step. Whatever was built is torn down on exit -- also
    when setup failed half-way, or the body raised.
    """

    def __init__(
        self,
        kinds: Iterable[str] = KINDS,
        *,
        base_dir: str | os.PathLike[str] | None = None,
        sizes_mb: Mapping[str, int] | None = None,
        reap_stale: bool = True,
    ) -> None:
        self.kinds = _check_kinds(kinds)
        self.base_dir = Path(base_dir) if base_dir is not None else DEFAULT_BASE
        self._sizes = {k: _SPECS[k].size_mb for k in KINDS}
        if sizes_mb:
            _check_kinds(sizes_mb)
            self._sizes.update(sizes_mb)
        self._reap_stale = reap_stale
        self._lock = threading.RLock()
        self._root: Path | None = None
        self._lock_fd: int | None = None
        self._fs: dict[str, LabFs] = {}
        self._extra: list[LabFs] = []
        self._loops: list[_Loop] = []
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
        self.base_dir.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix=f"{_ROOT_PREFIX}{os.getpid()}-", dir=self.base_dir))
        self._root = root
        atexit.register(self._close_at_exit)
        try:
            _write_owner(root)
            self._lock_fd = os.open(root / _LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
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
        errors = _dismantle(root, self._loops)
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
        root = self._require_root()
        spec = _SPECS[kind]
        mountpoint = root / "mnt" / name
        mountpoint.mkdir()
        if spec.mkfs is None:
            data = ",".join(filter(None, [f"size={size_mb}m", spec.mount_data]))
            self._mount("cowprobe-lab", mountpoint, spec.fstype, 0, data)
            return LabFs(kind, mountpoint, spec.fstype, None, None, _mount_options(mountpoint))
        image = root / "images" / f"{name}.img"
        with image.open("xb") as fh:
            fh.truncate(size_mb * _MIB)  # sparse: no blocks until written
        proc = subprocess.run(
            [spec.mkfs, *spec.mkfs_args, str(image)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            msg = (proc.stderr or proc.stdout).strip().splitlines()
            raise LabError(
                f"{spec.mkfs} failed on a {size_mb} MiB image (exit {proc.returncode}): "
                + (msg[-1] if msg else "no message")
            )
        device = self._attach(image)
        self._mount(device, mountpoint, spec.fstype, 0, spec.mount_data)
        arm_autoclear(device)
        return LabFs(
            kind,
            mountpoint,
            spec.fstype,
            device,
            image,
            _mount_options(mountpoint),
            spec.mkfs_args,
        )

    def _attach(self, image: Path) -> str:
        """A free loop device bound to ``image``, found by losetup, never assumed.

        ``losetup --find`` picks a free device and binds it; a concurrent
        lab (or our own other threads) can win the same device between the
        two steps, which losetup reports as busy. Trying again picks the
        next free one.
        """
        ino = image.stat().st_ino
        last = ""
        for _attempt in range(8):
            proc = subprocess.run(
                ["losetup", "--find", "--show", str(image)],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode == 0:
                device = proc.stdout.strip()
                with self._lock:
                    self._loops.append(_Loop(device, ino))
                return device
            last = proc.stderr.strip()
            if "busy" not in last.lower():
                break
        raise LabError(f"losetup --find --show {image} failed: {last or 'no message'}")

    def _mount(self, source: str, target: Path, fstype: str | None, flags: int, data: str) -> None:
        try:
            _sys_mount(source, target, fstype, flags, data)
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
        self._mount(str(source), target, None, _MS_BIND, "")
        if readonly:
            # MS_RDONLY is ignored on the initial bind; a bind mount only
            # becomes read-only through a remount of that mount alone.
            try:
                self._mount("none", target, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY, "")
            except LabError:
                _unmount(str(target))
                raise
        return target

    def make_tiny(self, kind: str, size_mb: int) -> LabFs:
        """An extra, small filesystem of ``kind`` (e.g. to fill up for ENOSPC).

        Torn down with the lab. mkfs decides how small is too small and the
        error says so (XFS needs 300 MiB, btrfs ~110 MiB; ext4 and tmpfs go
        down to a few MiB).
        """
        (kind,) = _check_kinds((kind,))
        if size_mb < 1:
            raise ValueError(f"size_mb must be >= 1, not {size_mb}")
        missing = missing_prerequisites((kind,))
        if missing:
            raise LabUnavailable("; ".join(missing))
        self._require_root()
        fs = self._build(kind, f"{kind}-tiny-{self._next()}", size_mb)
        with self._lock:
            self._extra.append(fs)
        return fs

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("running" if self._root else "not started")
        return f"Lab(kinds={self.kinds!r}, root={self._root}, {state})"
