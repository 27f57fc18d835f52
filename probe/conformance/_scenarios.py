"""The DESIGN.md scenario matrix, as data.

Each ``Scenario`` is one row: what it means, what the library must answer,
and -- per column (a real filesystem, a simulated one) -- the concrete
set-ups ("variants") that exercise it. A variant only *names* its set-up
(places, a NOCOW or immutable dest directory, fakefs fault rules, a deleter);
``probe.conformance._runner`` is the one piece of code that knows how to
build and check any of them. Adding a scenario is adding one entry to
``SCENARIOS``.

Places are symbolic so one matrix serves both the built-in lab and a pair of
directories a user names:

* lab kinds (``btrfs``, ``xfs``, ``xfs-noreflink``, ``ext4``, ``tmpfs``),
  ``btrfs-bind`` (a second mount of the lab's btrfs), ``btrfs-ro`` (a
  read-only bind of it), ``tiny-full`` (a tiny tmpfs that fills up at once);
* ``source-dir`` / ``dest-dir``: the user's directories (``--source-dir``,
  ``--dest-dir``), ``dest-ro``: a read-only bind of a directory in the
  user's dest directory;
* ``fakefs``: a directory on the fault-injecting FUSE mount.

Fault rules may say ``{source}`` / ``{dest}``: the paths of this case's files
relative to the fakefs mount root (syscall rules: relative to the common
root of the case's two directories), filled in by the runner.

Syscall-layer variants (``syscall_faults``) run on a real lab btrfs or XFS:
the clone syscall itself answers the errno (or runs for real), which FUSE
can never do.
"""

from __future__ import annotations

from ._model import (
    Check,
    Deleter,
    Expect,
    NotHere,
    Op,
    Result,
    Scenario,
    Variant,
)

__all__ = ["LAB_PLACES", "SCENARIOS", "USER_PLACES", "scenario"]


LAB_PLACES = frozenset(
    {"btrfs", "xfs", "xfs-noreflink", "ext4", "tmpfs", "btrfs-bind", "btrfs-ro", "tiny-full"}
)
USER_PLACES = frozenset({"source-dir", "dest-dir", "dest-ro"})

_C = Check
_CLONE_CHECKS = frozenset(
    {_C.DEST_EXACT, _C.DEST_MODE, _C.INODE_DISTINCT, _C.BLOCKS_SHARED, _C.WRITES_ISOLATED,
     _C.SOURCE_UNTOUCHED}
)
_REFUSED = frozenset({_C.NO_DEST, _C.SOURCE_UNTOUCHED})
_FAILED_REPLACE = frozenset({_C.EXISTING_DEST_UNTOUCHED, _C.SOURCE_UNTOUCHED})
_SRC = "{source}"
_DST = "{dest}"


def _at_clone(label: str, errno: str, *, op: Op = Op.REFLINK, **kw: object) -> tuple[Variant, ...]:
    """The same syscall-layer refusal at FICLONE on the lab's btrfs and XFS."""
    return tuple(
        Variant(f"{label} (syscall layer, {fs})", fs, fs, op=op,
                syscall_faults=(f"FICLONE:{_DST}:{errno}",), **kw)  # type: ignore[arg-type]
        for fs in ("btrfs", "xfs")
    )


_ZFS_NOT_HERE = "no filesystem here answers EAGAIN from FICLONE (ZFS block cloning does)"

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        id="clone-on-cow",
        title="clone on a CoW fs",
        expect=Expect(Result.CLONED),
        checks=_CLONE_CHECKS,
        real=(
            Variant("btrfs", "btrfs", "btrfs"),
            Variant("xfs reflink=1", "xfs", "xfs"),
            Variant("btrfs -> bind mount of btrfs", "btrfs", "btrfs-bind"),
            Variant("source-dir -> dest-dir", "source-dir", "dest-dir",
                    requires=("pair-clones",)),
        ),
        # The rule fires (a delay) and answers CONTINUE: the trapped call
        # then runs for real, and must clone.
        simulated=tuple(
            Variant(f"FICLONE trapped, no errno (syscall layer, {fs})", fs, fs,
                    syscall_faults=(f"FICLONE:{_DST}:delay=1ms",))
            for fs in ("btrfs", "xfs")
        ),
    ),
    Scenario(
        id="fs-without-reflink",
        title="fs without reflink",
        expect=Expect(Result.UNSUPPORTED, "EOPNOTSUPP"),
        checks=_REFUSED,
        real=(
            Variant("ext4", "ext4", "ext4"),
            Variant("tmpfs", "tmpfs", "tmpfs"),
            Variant("xfs reflink=0", "xfs-noreflink", "xfs-noreflink"),
            Variant("FUSE itself (fakefs, no rules)", "fakefs", "fakefs"),
            Variant("source-dir -> dest-dir", "source-dir", "dest-dir",
                    requires=("pair-errno:EOPNOTSUPP",)),
        ),
        simulated=(
            Variant("EOPNOTSUPP on source open", "fakefs", "fakefs",
                    faults=(f"open:{_SRC}:EOPNOTSUPP",)),
            *_at_clone("EOPNOTSUPP at FICLONE", "EOPNOTSUPP"),
        ),
    ),
    Scenario(
        id="cross-filesystem",
        title="cross-filesystem",
        expect=Expect(Result.UNSUPPORTED, "EXDEV"),
        checks=_REFUSED,
        real=(
            Variant("btrfs -> xfs", "btrfs", "xfs"),
            Variant("btrfs -> tmpfs", "btrfs", "tmpfs"),
            Variant("ext4 -> tmpfs", "ext4", "tmpfs"),
            Variant("fakefs -> ext4", "fakefs", "ext4"),
            Variant("fakefs -> dest-dir", "fakefs", "dest-dir"),
            Variant("source-dir -> dest-dir", "source-dir", "dest-dir",
                    requires=("pair-errno:EXDEV",)),
        ),
        simulated=(
            Variant("EXDEV on source open", "fakefs", "fakefs", faults=(f"open:{_SRC}:EXDEV",)),
            *_at_clone("EXDEV at FICLONE", "EXDEV"),
        ),
    ),
    Scenario(
        id="per-file-refusal",
        title="per-file refusal",
        expect=Expect(Result.UNSUPPORTED, "EINVAL"),
        checks=_REFUSED,
        real=(
            Variant("btrfs NOCOW dest vs COW source", "btrfs", "btrfs", nocow_dest=True),
            Variant("source-dir -> NOCOW dest-dir", "source-dir", "dest-dir", nocow_dest=True,
                    requires=("pair-clones", "dest-btrfs")),
        ),
        simulated=(
            Variant("EINVAL on source open", "fakefs", "fakefs", faults=(f"open:{_SRC}:EINVAL",)),
            *_at_clone("EINVAL at FICLONE", "EINVAL"),
        ),
    ),
    Scenario(
        id="kernel-lacks-the-call",
        title="kernel lacks the call",
        expect=Expect(Result.UNSUPPORTED, "ENOSYS"),
        checks=_REFUSED,
        real=NotHere(
            "no filesystem on this kernel returns ENOSYS from FICLONE; "
            "the simulated column answers it from the real syscall"
        ),
        # FUSE cannot carry ENOSYS (the kernel reads it as 'not implemented');
        # the syscall layer returns it from FICLONE itself.
        simulated=_at_clone("ENOSYS at FICLONE", "ENOSYS"),
    ),
    Scenario(
        id="field-refusals",
        title="field refusals",
        expect=Expect(Result.UNSUPPORTED),
        checks=_REFUSED,
        real=NotHere(
            "ENOTTY, EPERM, EACCES and EBADF from a correctly opened FICLONE come from "
            "seccomp, LSMs, idmapped mounts and old kernels, none here; the real ETXTBSY "
            "(an active swap file) would need swapon, which the suite does not do"
        ),
        # Linux's call-only refusals (probe._outcome._LINUX_CALL_REFUSALS):
        # UNSUPPORTED from FICLONE itself -- and, through clonefile_or_copy,
        # a copy. Without these cells an empty refusal table passed the suite.
        simulated=(
            *(v for e in ("ENOTTY", "EPERM", "EACCES", "EBADF", "ETXTBSY")
              for v in _at_clone(f"{e} at FICLONE", e, expect=Expect(Result.UNSUPPORTED, e))),
            # The clone's dest is a temporary there, so the rule matches any name.
            *(Variant(f"{e} at FICLONE, then a copy (syscall layer, btrfs)", "btrfs", "btrfs",
                      op=Op.CLONE_OR_COPY, syscall_faults=(f"FICLONE:*:{e}",),
                      expect=Expect(Result.COPIED),
                      checks=frozenset({_C.DEST_EXACT, _C.DEST_MODE, _C.INODE_DISTINCT,
                                        _C.SOURCE_UNTOUCHED}))
              for e in ("ENOTTY", "EPERM")),
        ),
        notes="UNSUPPORTED, copy",
    ),
    Scenario(
        id="source-missing-before",
        title="source missing before the call",
        expect=Expect(Result.SOURCE_VANISHED),
        checks=frozenset({_C.NO_DEST}),
        real=(
            Variant("btrfs", "btrfs", "btrfs", deleter=Deleter.BEFORE),
            Variant("xfs", "xfs", "xfs", deleter=Deleter.BEFORE),
            Variant("xfs reflink=0", "xfs-noreflink", "xfs-noreflink", deleter=Deleter.BEFORE),
            Variant("ext4", "ext4", "ext4", deleter=Deleter.BEFORE),
            Variant("tmpfs", "tmpfs", "tmpfs", deleter=Deleter.BEFORE),
            Variant("source-dir -> dest-dir", "source-dir", "dest-dir", deleter=Deleter.BEFORE),
        ),
        simulated=NotHere(
            "nothing to inject: the pre-check finds the source missing before "
            "any filesystem operation the library could be made to fail"
        ),
    ),
    Scenario(
        id="source-vanishes-mid-flight",
        title="source vanishes mid-flight",
        expect=Expect(Result.SOURCE_VANISHED, "ENOENT"),
        checks=frozenset({_C.NO_DEST, _C.SOURCE_GONE}),
        real=(
            Variant("btrfs, concurrent unlink", "btrfs", "btrfs", deleter=Deleter.MID_FLIGHT),
            Variant("ext4, concurrent unlink", "ext4", "ext4", deleter=Deleter.MID_FLIGHT),
            Variant("source-dir -> dest-dir, concurrent unlink", "source-dir", "dest-dir",
                    deleter=Deleter.MID_FLIGHT),
        ),
        simulated=(
            Variant("vanishes after its first lookup", "fakefs", "fakefs",
                    faults=(f"lookup:{_SRC}:vanish",)),
            *_at_clone("ENOENT at FICLONE, source unlinked", "ENOENT",
                       deleter=Deleter.DURING),
        ),
    ),
    Scenario(
        id="enoent-source-present",
        title="ENOENT but source still there",
        expect=Expect(Result.ERROR, "ENOENT"),
        checks=_REFUSED,
        real=(
            Variant("dest parent missing (btrfs)", "btrfs", "btrfs", dest_parent_missing=True),
            Variant("dest parent missing (source-dir -> dest-dir)", "source-dir", "dest-dir",
                    dest_parent_missing=True),
        ),
        simulated=(
            Variant("ENOENT on source open, file kept", "fakefs", "fakefs",
                    faults=(f"open:{_SRC}:ENOENT",)),
            *_at_clone("ENOENT at FICLONE, source kept", "ENOENT"),
        ),
    ),
    Scenario(
        id="other-failures",
        title="other failures",
        expect=Expect(Result.ERROR),
        checks=_REFUSED,
        real=(
            Variant("read-only bind mount", "btrfs", "btrfs-ro",
                    expect=Expect(Result.ERROR, "EROFS")),
            Variant("immutable dest dir (chattr +i)", "btrfs", "btrfs", immutable_dest=True,
                    expect=Expect(Result.ERROR, "EPERM")),
            Variant("tiny full fs, copy over an existing dest", "btrfs", "tiny-full",
                    op=Op.CLONE_OR_COPY, existing_dest=True, checks=_FAILED_REPLACE,
                    expect=Expect(Result.ERROR, "ENOSPC")),
            Variant("read-only dest-dir (mode 0555)", "source-dir", "dest-dir",
                    readonly_mode_dest=True, requires=("not-root",),
                    expect=Expect(Result.ERROR, "EACCES")),
            Variant("read-only bind of dest-dir", "source-dir", "dest-ro",
                    expect=Expect(Result.ERROR, "EROFS")),
        ),
        simulated=(
            Variant("EIO on source open", "fakefs", "fakefs", faults=(f"open:{_SRC}:EIO",),
                    expect=Expect(Result.ERROR, "EIO")),
            Variant("EACCES on source open", "fakefs", "fakefs",
                    faults=(f"open:{_SRC}:EACCES",), expect=Expect(Result.ERROR, "EACCES")),
            Variant("EIO on read during the copy, existing dest", "fakefs", "ext4",
                    op=Op.CLONE_OR_COPY, existing_dest=True, faults=(f"read:{_SRC}:EIO",),
                    checks=_FAILED_REPLACE, expect=Expect(Result.ERROR, "EIO")),
            Variant("EIO on read during the copy, existing dest (user dirs)", "fakefs",
                    "dest-dir", op=Op.CLONE_OR_COPY, existing_dest=True,
                    faults=(f"read:{_SRC}:EIO",), checks=_FAILED_REPLACE,
                    expect=Expect(Result.ERROR, "EIO")),
            Variant("ENOSPC on write during the copy, existing dest", "btrfs", "fakefs",
                    op=Op.CLONE_OR_COPY, existing_dest=True, faults=("write:*:ENOSPC",),
                    checks=_FAILED_REPLACE, expect=Expect(Result.ERROR, "ENOSPC")),
            Variant("ENOSPC on write during the copy, existing dest (user dirs)", "source-dir",
                    "fakefs", op=Op.CLONE_OR_COPY, existing_dest=True,
                    faults=("write:*:ENOSPC",), checks=_FAILED_REPLACE,
                    expect=Expect(Result.ERROR, "ENOSPC")),
            *_at_clone("EIO at FICLONE", "EIO", expect=Expect(Result.ERROR, "EIO")),
            Variant("ENOSPC at copy_file_range, existing dest (syscall layer, ext4)", "ext4",
                    "ext4", op=Op.CLONE_OR_COPY, existing_dest=True,
                    syscall_faults=("copy_file_range:*:ENOSPC",), checks=_FAILED_REPLACE,
                    expect=Expect(Result.ERROR, "ENOSPC")),
        ),
    ),
    Scenario(
        id="batch-one-vanished",
        title="batch with one vanished blob",
        expect=Expect(Result.SOURCE_VANISHED),
        checks=frozenset({_C.REST_CLONED, _C.REST_EXACT, _C.VANISHED_JOB_REPORTED}),
        real=(
            Variant("btrfs, first blob deleted", "btrfs", "btrfs", op=Op.BATCH, jobs=8,
                    deleter=Deleter.BEFORE),
            Variant("source-dir -> dest-dir, first blob deleted", "source-dir",
                    "dest-dir", op=Op.BATCH, jobs=8, deleter=Deleter.BEFORE,
                    requires=("pair-clones",)),
        ),
        simulated=(
            # FUSE never clones, so the rest are copies; what this proves is
            # that the vanished blob is reported per-job and the rest complete.
            Variant("fakefs vanish, dests on btrfs", "fakefs", "btrfs", op=Op.BATCH, jobs=8,
                    faults=(f"lookup:{_SRC}:vanish",),
                    checks=frozenset({_C.REST_EXACT, _C.VANISHED_JOB_REPORTED})),
            Variant("fakefs vanish, dests in dest-dir", "fakefs", "dest-dir", op=Op.BATCH,
                    jobs=8, faults=(f"lookup:{_SRC}:vanish",),
                    checks=frozenset({_C.REST_EXACT, _C.VANISHED_JOB_REPORTED})),
        ),
    ),
    Scenario(
        id="batch-onto-non-cow",
        title="batch onto a non-CoW fs",
        expect=Expect(Result.COPIED),
        checks=frozenset({_C.REST_EXACT, _C.STOPS_AFTER_FIRST_UNSUPPORTED}),
        real=(
            Variant("btrfs -> ext4", "btrfs", "ext4", op=Op.BATCH, jobs=8),
            Variant("source-dir -> dest-dir", "source-dir", "dest-dir", op=Op.BATCH, jobs=8,
                    requires=("pair-refuses",)),
        ),
        simulated=(
            Variant("btrfs -> fakefs", "btrfs", "fakefs", op=Op.BATCH, jobs=8),
            Variant("source-dir -> fakefs", "source-dir", "fakefs", op=Op.BATCH, jobs=8),
            Variant("EOPNOTSUPP at every FICLONE (syscall layer, btrfs)", "btrfs", "btrfs",
                    op=Op.BATCH, jobs=8, syscall_faults=("FICLONE:*:EOPNOTSUPP",)),
        ),
    ),
    Scenario(
        id="transient",
        title="transient refusal in a batch",
        expect=Expect(Result.CLONED),
        checks=frozenset({_C.ALL_CLONED, _C.REST_EXACT}),
        real=NotHere(_ZFS_NOT_HERE),
        simulated=tuple(
            Variant(f"EAGAIN at FICLONE, twice (syscall layer, {fs})", fs, fs, op=Op.BATCH,
                    jobs=8, syscall_faults=("FICLONE:*:EAGAIN:times=2",))
            for fs in ("btrfs", "xfs")
        ),
        notes="retried; the pair stays on",
    ),
    Scenario(
        id="batch-one-refused",
        title="batch with one per-file refusal",
        expect=Expect(Result.CLONED),
        checks=frozenset({_C.FIRST_COPIED, _C.REST_CLONED, _C.REST_EXACT}),
        real=NotHere("tested per file in 'per-file refusal' (btrfs NOCOW dest)"),
        simulated=tuple(
            Variant(f"{e} at FICLONE for job 0 (syscall layer, {fs})", fs, fs, op=Op.BATCH,
                    # The batch clones into a staging directory renamed into
                    # place afterwards, so the rule matches job 0's file name.
                    jobs=8, syscall_faults=(f"FICLONE:*/blob-0:{e}",))
            for fs in ("btrfs", "xfs")
            # ETXTBSY (an active swap file) is per file as well: is_per_file.
            for e in ("EINVAL", "ETXTBSY")
        ),
        notes="per-file EINVAL / ETXTBSY mid-batch: that job copies, reflink stays on for the rest",
    ),
)


def scenario(scenario_id: str) -> Scenario:
    for s in SCENARIOS:
        if s.id == scenario_id:
            return s
    raise KeyError(f"no scenario {scenario_id!r}; known: {', '.join(s.id for s in SCENARIOS)}")
