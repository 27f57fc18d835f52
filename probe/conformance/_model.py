"""The scenario matrix's vocabulary: columns, library calls, results,
deleters, post-conditions, expectations, variants and scenarios.

Data types only; the rows themselves are ``_scenarios.SCENARIOS``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "Check",
    "Column",
    "Deleter",
    "Expect",
    "NotHere",
    "Op",
    "Result",
    "Scenario",
    "Variant",
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
    #: The clone syscall itself fails (a syscall-layer rule answers ENOENT)
    #: and the source is unlinked before the library looks at it again --
    #: the order a real unlink racing the call produces.
    DURING = "during"


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
    ALL_CLONED = "every job CLONED"
    FIRST_COPIED = "the refused job copied, every other one CLONED"


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
    #: Syscall-layer rules (``fakefs.syscall_faults``) around the call, on a
    #: real filesystem; globs relative to the case's directories' common root.
    syscall_faults: tuple[str, ...] = ()
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
