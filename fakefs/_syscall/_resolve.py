"""Turning a trapped call's registers into paths, through /proc.

The supervisor only *reads* here (readlink of /proc/PID/fd/N and
/proc/PID/cwd, path strings and structs from /proc/PID/mem, and the
directory part of a path looked up as an O_PATH handle -- a lookup like
lstat's: no file is opened, read or changed), and the real call runs (or
fails) in the caller with the caller's own credentials. A hostile name
can therefore only decide whether a rule matches -- it cannot lend the
supervisor's privileges to anyone. What we read can be stale by the time
the call runs (another thread may swap a descriptor or rewrite the string):
for fault injection that is the program's own race, and seccomp_unotify(2)
says as much -- CONTINUE decisions are not a security boundary.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import struct

from probe import _libc

from ._filter import IOCTL_OPS, Arch

__all__ = ["CallArgs", "decode", "fd_dest_lanes", "fd_path"]

_AT_FDCWD = -100
_PATH_MAX = 4096
_DELETED = " (deleted)"
_BY_CODE = {v: k for k, v in IOCTL_OPS.items()}


def _s32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


class CallArgs:
    """Lazy readers over one trapped call's process (one /proc/PID/mem open)."""

    def __init__(self, pid: int, *, want_source: bool = True) -> None:
        self.pid = pid
        #: read source paths at all (only a ``src=`` rule needs them; each
        #: costs a readlink in /proc on every trapped call)
        self.want_source = want_source
        self._mem: int | None = None

    def close(self) -> None:
        if self._mem is not None:
            os.close(self._mem)
            self._mem = None

    def src_fd_path(self, fd: int) -> str | None:
        return self.fd_path(fd) if self.want_source else None

    def src_at_path(self, dirfd: int, addr: int) -> str | None:
        return self.at_path(dirfd, addr) if self.want_source else None

    def fd_path(self, fd: int) -> str | None:
        return fd_path(self.pid, _s32(fd))

    def _read(self, addr: int, size: int) -> bytes:
        if self._mem is None:
            self._mem = os.open(f"/proc/{self.pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
        return os.pread(self._mem, size, addr)

    def string(self, addr: int) -> str | None:
        out = b""
        # Read page by page: a string may end just before an unmapped page.
        while len(out) < _PATH_MAX:
            chunk_len = 4096 - (addr + len(out)) % 4096
            try:
                chunk = self._read(addr + len(out), chunk_len)
            except OSError:
                return None
            nul = chunk.find(b"\0")
            if nul >= 0:
                return os.fsdecode(out + chunk[:nul])
            if not chunk:
                return None
            out += chunk
        return None

    def at_path(self, dirfd: int, addr: int, resolve: int = 0) -> str | None:
        """The path a name argument leads to: its directory as the kernel's
        own walk finds it, then the last component as given (whether that
        is followed is the call's business, and the supervisor never
        follows it). Folding ``a/b/..`` by text was wrong where ``b`` is a
        symlink (``root/link-out/../x`` is outside the root), and a root
        reached through a symlinked spelling never matched.

        The walk starts where the kernel's does: at the caller's own root
        for an absolute name (a chroot()ed caller's "/x" is ROOT/x: taking
        it for our /x made rules fire on files outside --root), and at the
        dirfd for openat2's RESOLVE_IN_ROOT (``resolve``), under which an
        absolute name, ".." and absolute symlinks all stay inside it."""
        name = self.string(addr)
        if name is None:
            return None
        head, tail = os.path.split(name)
        if tail in ("", ".", ".."):
            head, tail = name, ""
        dfd = _s32(dirfd)
        resolve &= ~_RESOLVE_CACHED  # EAGAIN for us, not a different answer
        if resolve & _RESOLVE_IN_ROOT:
            top, where, rel = self._base(dfd), _where(self.pid, dfd), name
        else:
            top = self._root()
            if top is None:
                return None
            if top == "/":
                # The common case: the caller's root is ours.
                if name.startswith("/"):
                    found = _walk(None, head, resolve)
                    return _text("/", name) if found is None else _join(found, tail)
                base = self._base(dfd)
                if base is None:
                    return None
                if not head or head == ".":
                    return _join(base, tail)
                found = _walk(_where(self.pid, dfd), head, resolve)
                if found is None:  # no such directory: by the text
                    return os.path.normpath(os.path.join(base, name))
                return _join(found, tail)
            where, rel = f"/proc/{self.pid}/root", name
            if not name.startswith("/"):
                base = self._base(dfd)
                inside = None if base is None else _inside(base, top)
                if inside is None:
                    return None  # a base outside its own root: not ours to guess
                rel = f"{inside}/{name}"
            resolve |= _RESOLVE_IN_ROOT
        if top is None:
            return None
        head = os.path.dirname(rel) if tail else rel
        found = _walk(where, head or ".", resolve)
        if found is not None:
            return _join(found, tail)
        # No such directory (the call fails on its own): by the text, ".."
        # stopping at the root as the kernel's walk would.
        return _text(top, "/" + rel)

    def _root(self) -> str | None:
        try:
            return os.readlink(f"/proc/{self.pid}/root")
        except OSError:
            return None

    def _base(self, dfd: int) -> str | None:
        if dfd == _AT_FDCWD:
            try:
                return os.readlink(f"/proc/{self.pid}/cwd")
            except OSError:
                return None
        return self.fd_path(dfd)

    def s64_at(self, addr: int) -> int | None:
        try:
            data = self._read(addr, 8)
        except OSError:
            return None
        return struct.unpack("=q", data)[0] if len(data) == 8 else None


def _join(base: str, tail: str) -> str:
    return os.path.join(base, tail) if tail else base


_LOOKUP = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
#: openat2 resolve flags (linux/openat2.h)
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_IN_ROOT = 0x10
_RESOLVE_CACHED = 0x20
_OPEN_HOW = struct.Struct("=QQQ")  # struct open_how { u64 flags, mode, resolve; }


def _where(pid: int, dfd: int) -> str:
    return f"/proc/{pid}/cwd" if dfd == _AT_FDCWD else f"/proc/{pid}/fd/{dfd}"


def _inside(path: str, top: str) -> str | None:
    """``path`` as seen from under root ``top`` ("." for top itself)."""
    if path == top:
        return "."
    prefix = top.rstrip("/") + "/"
    return path[len(prefix):] if path.startswith(prefix) else None


def _text(top: str, name: str) -> str:
    """Absolute ``name`` under root ``top``, folded by text (no walk)."""
    folded = os.path.normpath(name)
    folded = "/" + folded.lstrip("/")  # normpath keeps a leading "//"
    if top == "/":
        return folded
    return top if folded == "/" else top.rstrip("/") + folded


#: the same number on x86-64 and aarch64 (the generic table's)
_OPENAT2_NR = 437
# Variadic in C: no argtypes, every argument passed as its C type.
_SYSCALL = _libc.function("syscall", ctypes.c_long)


def _openat2(base: int, path: str, resolve: int) -> int:
    """An O_PATH directory lookup with openat2's ``resolve`` flags."""
    how = ctypes.create_string_buffer(_OPEN_HOW.pack(_LOOKUP, 0, resolve), _OPEN_HOW.size)
    fd = _SYSCALL(ctypes.c_long(_OPENAT2_NR), ctypes.c_int(base), os.fsencode(path), how,
                  ctypes.c_size_t(_OPEN_HOW.size))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(fd)


def _walk(where: str | None, head: str, resolve: int = 0) -> str | None:
    """The directory ``head`` names, resolved by the kernel relative to
    ``where`` (a /proc magic link: the caller's cwd, a dirfd of its, its
    root), or absolute in our root (``where`` None); None if there is none.
    ``resolve``: openat2 flags for the walk -- RESOLVE_IN_ROOT makes
    ``where`` the root of it, as the caller's chroot (or its own openat2
    flags) make it for the kernel.

    An O_PATH lookup and a readlink of our own descriptor, not
    realpath(): the kernel resolves symlinks and ".." exactly as it will
    for the caller, in one call, and lstat-walking in Python would be
    slower and subtly different.
    """
    # Never through a magic link (/proc/self/cwd, /dev/fd/N, /proc/P/root
    # inside the name): the kernel gives it the meaning of the task that
    # resolves it -- ours, not the caller's -- so "/proc/self/cwd/x" named
    # *our* cwd (the default --root) and fired rules on the caller's x
    # outside it. Such a name falls back to its text, which matches no root.
    resolve |= _RESOLVE_NO_MAGICLINKS
    try:
        if where is None:
            fd = _openat2(_AT_FDCWD, head, resolve)
        else:
            base = os.open(where, _LOOKUP)
            try:
                fd = _openat2(base, head, resolve)
            finally:
                os.close(base)
    except OSError:
        return None
    try:
        found = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
    finally:
        os.close(fd)
    return found if found.startswith("/") else None


def fd_path(pid: int, fd: int) -> str | None:
    """The absolute path descriptor ``fd`` of task ``pid`` names, or None
    (a bad fd -- the kernel will answer EBADF itself -- or no path: a pipe,
    an anonymous inode)."""
    try:
        target = os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return None
    if target.endswith(_DELETED) and _unlinked(pid, fd):
        # Only for a file really gone: "x (deleted)" may be a live name.
        target = target[: -len(_DELETED)]
    return target if target.startswith("/") else None  # pipe:[..], anon_inode:..


def _unlinked(pid: int, fd: int) -> bool:
    try:
        return os.stat(f"/proc/{pid}/fd/{fd}").st_nlink == 0
    except OSError:
        return True


#: calls whose file written is a descriptor argument: op -> its index (the
#: one table decode() and the supervisor's short way both read)
_FD_DEST = {"FICLONE": 0, "FICLONERANGE": 0, "copy_file_range": 2, "fallocate": 0,
            "fsync": 0, "fdatasync": 0, "ftruncate": 0}


def fd_dest_lanes(a: Arch) -> dict[int, tuple[str, int]]:
    """Calls decided from one readlink, keyed as the supervisor sees them:
    by ioctl request code for an ioctl, else by system call number (the
    codes are all above any call number). -> (op, index of the dest fd)."""
    lanes: dict[int, tuple[str, int]] = {}
    for op, index in _FD_DEST.items():
        key = IOCTL_OPS.get(op, a.nr.get(op))
        if key is not None:
            lanes[key] = (op, index)
    return lanes


_NAMES: dict[str, dict[int, str]] = {}


def _names(a: Arch) -> dict[int, str]:
    names = _NAMES.get(a.name)
    if names is None:
        names = _NAMES[a.name] = {v: k for k, v in a.nr.items()}
    return names


def decode(a: Arch, nr: int, args: tuple[int, ...], reader: CallArgs) -> tuple[str, str | None,
                                                                                 str | None]:
    """(op, dest path, source path) of a trapped call; absolute paths."""
    op = _names(a).get(nr, f"nr{nr}")
    if op == "ioctl":
        code = args[1] & 0xFFFFFFFF
        op = _BY_CODE.get(code, f"ioctl{code:#x}")
        if op == "FIDEDUPERANGE":
            # Issued on the *source*; the file written is info[0].dest_fd:
            # struct file_dedupe_range { u64 src_offset, src_length;
            # u16 dest_count, reserved1; u32 reserved2; info[] }.
            dest_fd = reader.s64_at(args[2] + 24)
            dest = None if dest_fd is None else reader.fd_path(dest_fd)
            return op, dest, reader.src_fd_path(args[0])
    index = _FD_DEST.get(op)
    if index is not None:
        dest = reader.fd_path(args[index])
        if op == "FICLONE":  # (dest fd, FICLONE, src fd)
            return op, dest, reader.src_fd_path(args[2])
        if op == "FICLONERANGE":
            # struct file_clone_range { __s64 src_fd; ... } at args[2]
            src_fd = reader.s64_at(args[2]) if reader.want_source else None
            return op, dest, None if src_fd is None else reader.fd_path(src_fd)
        if op == "copy_file_range":  # (fd_in, off_in, fd_out, off_out, len, flags)
            return op, dest, reader.src_fd_path(args[0])
        return op, dest, None  # fallocate, fsync, fdatasync, ftruncate
    if op in {"rename", "link"}:  # (old, new)
        return op, reader.at_path(_AT_FDCWD, args[1]), reader.src_at_path(_AT_FDCWD, args[0])
    if op in {"renameat", "renameat2", "linkat"}:  # (olddfd, old, newdfd, new, ...)
        return op, reader.at_path(args[2], args[3]), reader.src_at_path(args[0], args[1])
    # The file opened, as named (its last component not resolved: what a
    # symlink there leads to is for the kernel to find).
    if op == "openat":  # (dirfd, path, flags, mode)
        return op, reader.at_path(args[0], args[1]), None
    if op == "openat2":  # (dirfd, path, struct open_how *, size): its resolve flags count
        resolve = reader.s64_at(args[2] + 16)
        return op, reader.at_path(args[0], args[1], resolve or 0), None
    if op in {"open", "creat"}:  # (path, ...)
        return op, reader.at_path(_AT_FDCWD, args[0]), None
    return op, None, None


def relative(path: str | None, root: str) -> str | None:
    """``path`` relative to ``root``; None outside it (never matches)."""
    if path is None:
        return None
    if path == root:
        return "."
    prefix = root.rstrip("/") + "/"
    return path[len(prefix):] if path.startswith(prefix) else None


def tgid_of(pid: int) -> int:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("Tgid:"):
                return int(line.split()[1])
    return pid
