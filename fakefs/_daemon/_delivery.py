"""Did a failed READ/WRITE reach the caller's syscall? Ask /proc.

The kernel turns a failed FUSE request into the syscall's error only when
it was the first request of that syscall; after a partial transfer the
caller gets a short count instead (direct I/O split into max_read chunks,
sendfile/splice/copy_file_range loops over pipe-sized chunks, readahead
running ahead of the page the caller waits for). FUSE tells the daemon
nothing about the syscall behind a request, but the caller is blocked in it
while we answer: /proc/TID/syscall names the syscall and its arguments, and
/proc/PID/fdinfo/FD the file position it started from. The failure reaches
the caller iff the syscall's starting offset lies in the failed request.

Only asked when a read/write fault fires, so its cost is off the hot path.
``None`` means "could not tell" (an unknown architecture, a vanished
opener).
"""

from __future__ import annotations

import contextlib
import os
import platform

__all__ = ["delivered", "flush_delivered", "getxattr_delivered"]

# syscall -> (argument index of our fd, of its offset pointer or value, how
# the offset is given): "pos" = the fd's file position, "val" = the argument
# itself (-1 for preadv2/pwritev2 means the file position), "ptr" = a
# pointer to a loff_t (NULL means the file position).
_Spec = tuple[int, int | None, str]
_READ_X86 = {0: (0, None, "pos"), 17: (0, 3, "val"), 19: (0, None, "pos"),
             295: (0, 3, "val"), 327: (0, 3, "val"), 40: (1, 2, "ptr"),
             275: (0, 1, "ptr"), 326: (0, 1, "ptr")}  # fmt: skip
_WRITE_X86 = {1: (0, None, "pos"), 18: (0, 3, "val"), 20: (0, None, "pos"),
              296: (0, 3, "val"), 328: (0, 3, "val"), 40: (0, None, "pos"),
              275: (2, 3, "ptr"), 326: (2, 3, "ptr")}  # fmt: skip
_READ_ARM = {63: (0, None, "pos"), 67: (0, 3, "val"), 65: (0, None, "pos"),
             69: (0, 3, "val"), 286: (0, 3, "val"), 71: (1, 2, "ptr"),
             76: (0, 1, "ptr"), 285: (0, 1, "ptr")}  # fmt: skip
_WRITE_ARM = {64: (0, None, "pos"), 68: (0, 3, "val"), 66: (0, None, "pos"),
              70: (0, 3, "val"), 287: (0, 3, "val"), 71: (0, None, "pos"),
              76: (2, 3, "ptr"), 285: (2, 3, "ptr")}  # fmt: skip
_TABLES: dict[str, tuple[dict[int, _Spec], dict[int, _Spec]]] = {
    "x86_64": (_READ_X86, _WRITE_X86),
    "aarch64": (_READ_ARM, _WRITE_ARM),
}
_MACHINE = platform.machine()


#: which syscall a failure was seen in: (thread, syscall nr, start offset,
#: the thread's finished read and write syscalls so far)
Syscall = tuple[str, int, int, int]


def delivered(pid: int, mount_id: int, ino: int, op: str, *, off: int,
              size: int) -> tuple[bool | None, Syscall | None]:
    """Whether the failed request [off, off+size) reaches the caller, and the
    syscall it belongs to (so a kernel retry inside the same syscall -- a
    page re-read after failed readahead -- is not counted twice)."""
    tables = _TABLES.get(_MACHINE)
    if tables is None or not mount_id or pid <= 0:
        return None, None
    table = tables[0] if op == "read" else tables[1]
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None, None
    for tid in tasks:
        found = _start(pid, tid, table, mount_id, ino)
        if found is not None:
            nr, start = found
            return off <= start < off + max(size, 1), (tid, nr, start, _finished(pid, tid))
    # No thread of the opener waits on this file: the request was the
    # kernel's own (async readahead, writeback) and its failure cannot reach
    # a syscall. (A reader in another process than the opener is taken for
    # this too -- reported absorbed, never injected.)
    return False, None


def _start(pid: int, tid: str, table: dict[int, _Spec], mount_id: int,
           ino: int) -> tuple[int, int] | None:
    try:
        with open(f"/proc/{pid}/task/{tid}/syscall") as f:
            fields = f.read().split()
    except OSError:
        return None
    if len(fields) < 7 or not fields[0].isdigit():
        return None  # "running" or "-1 ..." (not in a syscall)
    nr = int(fields[0])
    spec = table.get(nr)
    if spec is None:
        return None
    args = [int(a, 16) for a in fields[1:7]]
    fd_arg, off_arg, how = spec
    fd = args[fd_arg]
    pos = _our_pos(pid, fd, mount_id, ino)
    if pos is None:
        return None
    start = _offset(pid, how, None if off_arg is None else args[off_arg], pos)
    return None if start is None else (nr, start)


def _offset(pid: int, how: str, value: int | None, pos: int) -> int | None:
    if how == "pos" or value is None:
        return pos
    if how == "val":
        return pos if value == (1 << 64) - 1 else value
    if value == 0:
        return pos
    try:
        with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
            mem.seek(value)
            raw = mem.read(8)
    except (OSError, OverflowError, ValueError):
        return None
    return int.from_bytes(raw, "little", signed=True) if len(raw) == 8 else None


def _our_pos(pid: int, fd: int, mount_id: int, ino: int) -> int | None:
    """The file position of ``fd`` in ``pid`` if it is our node ``ino``.

    Read from fdinfo, never by stat()ing /proc/PID/fd/FD: that would send a
    GETATTR to this very daemon, which is busy answering the caller.
    """
    info: dict[str, str] = {}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/fdinfo/{fd}") as f:
        for line in f:
            key, _, value = line.partition(":")
            info[key] = value.strip()
    if info.get("mnt_id") != str(mount_id) or info.get("ino") != str(ino):
        return None
    try:
        return int(info["pos"])
    except (KeyError, ValueError):
        return None


def _finished(pid: int, tid: str) -> int:
    """The thread's read plus write syscalls finished so far.

    The kernel counts one (inc_syscr/inc_syscw) as each read-, write-,
    sendfile- or copy_file_range-like syscall ends, so two failures seen
    with the same count belong to one syscall: the second is the kernel's
    retry, not the caller's next call at the same offset. -1: unknown.
    """
    try:
        with open(f"/proc/{pid}/task/{tid}/io") as f:
            lines = f.read().splitlines()
    except OSError:
        return -1
    total = 0
    for line in lines:
        key, _, value = line.partition(":")
        if key in {"syscr", "syscw"}:
            total += int(value)
    return total


# -- FLUSH and GETXATTR: the kernel's own path decides ----------------------
#
# Neither request carries an offset to check, and pyfuse3 passes no caller
# for FLUSH. What decides whether the error reaches a program is the kernel
# path that sent the request, and the sender is blocked in it while we
# answer: /proc/TID/stack names it (root only; elsewhere "could not tell").

#: FLUSH: only close(2) returns filp_flush()'s error. exit, dup2/dup3 over
#: the fd, close_range and close-on-exec drop it.
_CLOSE = "_sys_close+"
_FLUSH_DROPPED = ("do_exit+", "do_dup2+", "_sys_close_range+", "__range_close+",
                  "do_close_on_exec+", "begin_new_exec+")
#: GETXATTR of security.capability by the set-ID/capability kill check
#: (open with O_TRUNC, truncate, write, chown): cap_inode_need_killpriv()
#: reads any error as "nothing to kill", and the syscall goes on.
_GETXATTR_DROPPED = ("need_killpriv+",)
#: the getxattr family of syscalls (their entry is a tail call on x86-64:
#: do_getxattr is the frame that stays)
_GETXATTR_CALLS = ("do_getxattr+", "_sys_getxattr+", "_sys_lgetxattr+", "_sys_fgetxattr+")


def flush_delivered(opener: int) -> bool | None:
    """Did a failed FLUSH reach a program? Its sender is the opener or a
    process that inherited the descriptor (looked for among the opener's
    descendants first, then anywhere: the opener may be gone)."""
    family = _family(opener)
    found, verdict = _verdict(family, "fuse_flush+", (_CLOSE,), _FLUSH_DROPPED)
    if not found:
        _, verdict = _verdict(_all_pids(set(family)), "fuse_flush+", (_CLOSE,),
                              _FLUSH_DROPPED)
    return verdict


def getxattr_delivered(caller: int) -> bool | None:
    """Did a failed GETXATTR reach the caller (FUSE names its thread)?"""
    return _verdict([caller], "fuse_getxattr+", _GETXATTR_CALLS, _GETXATTR_DROPPED)[1]


def _verdict(pids: list[int], frame: str, reach: tuple[str, ...],
             dropped: tuple[str, ...]) -> tuple[bool, bool | None]:
    """Whether any thread of ``pids`` is blocked in ``frame``, and one
    answer for them: True (a syscall that returns the error), False (a
    path that drops it), None (none found, threads disagree, or a path not
    known here)."""
    seen: set[bool | None] = set()
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/stack") as f:
                    stack = f.read()
            except OSError:
                continue
            if frame not in stack:
                continue
            if any(r in stack for r in reach):
                seen.add(True)
            elif any(d in stack for d in dropped):
                seen.add(False)
            else:
                seen.add(None)
    if not seen:
        return False, None
    return True, seen.pop() if len(seen) == 1 else None


def _family(pid: int) -> list[int]:
    """``pid`` and its descendants (breadth first)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop(0)
        out.append(p)
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            with contextlib.suppress(OSError, ValueError), \
                    open(f"/proc/{p}/task/{tid}/children") as f:
                todo.extend(int(c) for c in f.read().split() if int(c) not in out)
    return out


def _all_pids(skip: set[int]) -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in skip]
