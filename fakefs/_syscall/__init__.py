"""The syscall layer: faults at the calls FUSE never sees (FICLONE,
copy_file_range, fsync, rename, ...) on real filesystems, through seccomp
user notification. Standard library only.

Rooms: ``_filter`` (the BPF program, per architecture), ``_notify`` (the
seccomp syscall and ioctls), ``_resolve`` (registers -> paths via /proc),
``_table`` (rules, counters, trace), ``_supervisor`` (the answering
thread), ``_inprocess`` (``syscall_faults()``), ``_spawn`` (``fakefs run``: a
filtered child), ``_profiles`` (named rule sets).
"""


# Nothing imported here: `fakefs run` loads only the rooms it needs, and
# starts its command before it loads the supervisor.
