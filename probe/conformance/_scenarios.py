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
relative to the fakefs mount root, filled in by the runner.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "LAB_PLACES",
    "SCENARIOS",
    "USER_PLACES",
    "Check",
    "Column",
    "Deleter",
    "Expect",
    "NotHere",
    "Op",
    "Result",
    "Scenario",
    "Variant",
    "scenario",
]


class Column(enum.Enum):
    REAL = "real"
    SIMULATED = "simulated"


class Op(enum.Enum):
    """Which library call a variant exercises."""

    #: ``reflink()`` through the platform seam: one clone attempt, no fallback.
    REFLINK = "reflink"
    #: ``clonefile_or_copy()``: clone or copy, replacing an existing dest atomically.
    CLONE_OR_COPY = "clonefile_or_copy"
    #: ``probe.materialize()``: a batch of (source, dest) jobs.
    BATCH = "batch"


class Result(enum.Enum):
    """What a call answered: a ReflinkOutcome, a copy, or a raised error."""

    CLONED = "cloned"
    UNSUPPORTED = "unsupported"
    SOURCE_VANISHED = "source_vanished"
    COPIED = "copied"
    ERROR = "error"


class Deleter(enum.Enum):
    #: The source is unlinked before the call starts.
    BEFORE = "before"
    #: Another thread unlinks the source in the window between the library's
    #: pre-check and its clone syscall (held there at the platform seam, so
    #: the race is won the same way every run -- no sleeps, no luck).
    MID_FLIGHT = "mid-flight"


class Check(enum.Enum):
    """Post-conditions a variant's outcome must leave behind."""

    DEST_EXACT = "dest bytes exact"
    DEST_MODE = "dest has the source's permission bits"
    NO_DEST = "no dest left (and nothing else created)"
    INODE_DISTINCT = "dest inode distinct from source"
    BLOCKS_SHARED = "blocks shared (FIEMAP)"
    BLOCKS_NOT_SHARED = "blocks not shared (FIEMAP)"
    WRITES_ISOLATED = "source untouched after writing the dest (and vice versa)"
    SOURCE_UNTOUCHED = "source bytes untouched"
    SOURCE_GONE = "source really gone afterwards"
    EXISTING_DEST_UNTOUCHED = "existing dest untouched after the failure"
    # Batch post-conditions.
    REST_CLONED = "every other job CLONED"
    REST_EXACT = "every other dest exact"
    VANISHED_JOB_REPORTED = "the vanished job reported, its dest absent"
    STOPS_AFTER_FIRST_UNSUPPORTED = "reflink not retried after the pair's first UNSUPPORTED"


@dataclass(frozen=True)
class Expect:
    result: Result
    #: errno name (``"EXDEV"``); None: no errno (a clean clone, a pre-check).
    errno: str | None = None

    def describe(self) -> str:
        word = self.result.value.upper()
        return f"{word} ({self.errno})" if self.errno else word


@dataclass(frozen=True)
class Variant:
    """One concrete set-up of a scenario in one column."""

    label: str
    source: str
    dest: str
    op: Op = Op.REFLINK
    #: Fault rules armed on the fakefs mount just before the call.
    faults: tuple[str, ...] = ()
    deleter: Deleter | None = None
    #: The dest directory gets ``chattr +C`` (btrfs: new files are NOCOW).
    nocow_dest: bool = False
    #: The dest directory gets ``chattr +i`` (nothing can be created in it).
    immutable_dest: bool = False
    #: The dest directory is made read-only by permission bits (mode 0555).
    readonly_mode_dest: bool = False
    #: The dest's parent directory does not exist.
    dest_parent_missing: bool = False
    #: A file already sits at the dest before the call.
    existing_dest: bool = False
    #: Batch size for Op.BATCH; with a deleter or vanish rule, job 0 is hit.
    jobs: int = 0
    #: Capabilities the site must have besides its places (see ``Site.missing``).
    requires: tuple[str, ...] = ()
    #: Overrides of the scenario's expectation / checks for this set-up.
    expect: Expect | None = None
    checks: frozenset[Check] | None = None


@dataclass(frozen=True)
class NotHere:
    """A column a scenario cannot be run in, and why (never a pass)."""

    reason: str


@dataclass(frozen=True)
class Scenario:
    id: str
    title: str
    expect: Expect
    checks: frozenset[Check]
    real: tuple[Variant, ...] | NotHere
    simulated: tuple[Variant, ...] | NotHere
    notes: str = ""

    def column(self, column: Column) -> tuple[Variant, ...] | NotHere:
        return self.real if column is Column.REAL else self.simulated

    def expect_for(self, variant: Variant) -> Expect:
        return variant.expect or self.expect

    def checks_for(self, variant: Variant) -> frozenset[Check]:
        return variant.checks if variant.checks is not None else self.checks


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
_FUSE_NO_CLONE = (
    "FUSE has no clone operation: the kernel answers FICLONE itself "
    "(EOPNOTSUPP or EXDEV) and never forwards it to a daemon, so a successful "
    "clone cannot be simulated"
)

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
        simulated=NotHere(_FUSE_NO_CLONE),
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
        ),
    ),
    Scenario(
        id="kernel-lacks-the-call",
        title="kernel lacks the call",
        expect=Expect(Result.UNSUPPORTED, "ENOSYS"),
        checks=_REFUSED,
        real=NotHere(
            "no filesystem on this kernel returns ENOSYS from FICLONE; "
            "tested at the platform seam (tests/test_platform_seam.py, injected clone primitive)"
        ),
        simulated=NotHere(
            "FUSE cannot carry ENOSYS (the kernel reads it as 'not implemented'); "
            "tested at the platform seam"
        ),
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
        ),
    ),
)


def scenario(scenario_id: str) -> Scenario:
    for s in SCENARIOS:
        if s.id == scenario_id:
            return s
    raise KeyError(f"no scenario {scenario_id!r}; known: {', '.join(s.id for s in SCENARIOS)}")
