"""The syscall layer: faults at the calls FUSE never sees (FICLONE,
copy_file_range, fsync, rename, ...) on real filesystems, through seccomp
user notification. Standard library only.

Rooms: ``_filter`` (the BPF program, per architecture), ``_notify`` (the
seccomp syscall and ioctls), ``_resolve`` (registers -> paths via /proc),
``_table`` (rules, counters, trace), ``_supervisor`` (the answering
thread), ``_inprocess`` (``syscall_faults()``), ``_launch`` / ``_spawn``
(``fakefs run``: a filtered child), ``_profiles`` (named rule sets).
"""

from ._inprocess import SyscallFaults, parse_syscall_rules, syscall_faults

__all__ = ["SyscallFaults", "parse_syscall_rules", "syscall_faults"]
