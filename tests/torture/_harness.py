"""Record a workload's trace on fakefs, replay it under fault schedules,
check the invariants after every run, and count.

One fakefs mount per workload family: a replay only resets the backing tree
and swaps the armed rules, so a schedule costs a few milliseconds rather than
a daemon start.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import fakefs

from ._schedule import Fault, Schedule, TraceOp
from ._stale import OWNER, fakefs_mounts_under, mounts_under, new_base

__all__ = [
    "BASELINE_RULE",
    "DEADLINE",
    "STATS",
    "Family",
    "Outcome",
    "Replayer",
    "Stats",
    "Workload",
    "check_error",
    "check_file",
    "family",
    "leftovers",
    "loops_under",
]

#: A hard bound on one workload run. Generous: a run takes milliseconds,
#: and anything near this is a hang (a FIFO open, a retry loop), not a slow
#: machine.
DEADLINE = 20.0
#: Armed for the life of every torture mount and never fires (pid 1 never
#: touches it). A rule whose glob matches a path turns fakefs's caching off
#: for that path (zero entry/attr timeouts, direct I/O); with it on every
#: path the recording and every replay send the same operations, instead of
#: the targeted path alone losing its page cache in the replay.
BASELINE_RULE = "statfs:*:EIO:pid=1"
#: The piece every temporary or probe name the library makes contains.
LEFTOVER_MARK = ".cowprobe-"
_LEFTOVER = re.compile(r"(?:left behind:|stray entry) (\S+)")


@dataclass
class Stats:
    runs: int = 0
    schedules: set[tuple[str, Schedule]] = field(default_factory=set)
    injected: int = 0
    #: schedules whose faults never fired (the replay diverged from the trace
    #: before reaching them); the run is still checked
    unfired: int = 0
    violations: list[str] = field(default_factory=list)
    seconds: float = 0.0
    per_workload: dict[str, int] = field(default_factory=dict)
    #: leftovers a second fault made unavoidable (see Replayer._excuse)
    excused: int = 0


#: Accumulated over the whole pytest session; the conftest prints it.
STATS = Stats()


@dataclass
class Outcome:
    value: object = None
    error: BaseException | None = None
    hung: bool = False
    seconds: float = 0.0


class Workload(Protocol):
    name: str

    def reset(self) -> None:
        """Restore the backing tree to the state before the call."""

    def run(self) -> object:
        """Make the call under test."""

    def check(self, out: Outcome, fired: Sequence[Fault]) -> list[str]:
        """Violations of the invariants after ``out`` (empty: all held)."""


def run_bounded(fn: Any, deadline: float = DEADLINE) -> tuple[Outcome, threading.Thread]:
    """Run ``fn`` in a worker thread joined with a timeout: a hang becomes a
    reported violation instead of a CI job that never ends."""
    out = Outcome()

    def target() -> None:
        t0 = time.perf_counter()
        try:
            out.value = fn()
        except BaseException as exc:
            out.error = exc
        out.seconds = time.perf_counter() - t0

    t = threading.Thread(target=target, name="torture-workload", daemon=True)
    t.start()
    t.join(deadline)
    out.hung = t.is_alive()
    return out, t


@dataclass
class Family:
    """One torture directory with one fakefs mount over ``backing``."""

    root: Path
    backing: Path
    mnt: Path
    real: Path
    fs: fakefs.FakeFS

    def leftovers(self) -> list[str]:
        """Marked temporaries anywhere in the family's directory -- not only
        in the backing tree, so a staged tree written *next to* the mount
        is caught too -- and any entry of its own there: nothing may be
        written outside the directory a call was aimed at. The mount is
        skipped (it is the backing tree again, seen through the faults)."""
        ours = {"backing", "mnt", "real", OWNER}
        found = [f"stray entry beside the mount: {self.root / n}"
                 for n in sorted(os.listdir(self.root)) if n not in ours]
        return found + leftovers(p for p in self.root.iterdir() if p != self.mnt)

    def leak_violations(self) -> list[str]:
        found = [mp for mp, _ in mounts_under(self.root) if mp != str(self.mnt)]
        problems = [f"mount leaked: {mp}" for mp in found]
        if fakefs_mounts_under(self.root) != [str(self.mnt)]:
            problems.append(f"the family's fakefs mount is gone or doubled: "
                            f"{fakefs_mounts_under(self.root)}")
        return problems


def loops_under(root: Path) -> list[str]:
    """Loop devices backed by files under ``root``."""
    out = []
    prefix = str(root).rstrip("/") + "/"
    for entry in Path("/sys/block").glob("loop*"):
        with contextlib.suppress(OSError):
            if (entry / "loop" / "backing_file").read_text().strip().startswith(prefix):
                out.append(entry.name)
    return out


@contextlib.contextmanager
def family(name: str) -> Iterator[Family]:
    root = new_base()
    backing, mnt, real = root / "backing", root / "mnt", root / "real"
    for d in (backing, mnt, real):
        d.mkdir()
    try:
        with fakefs.mount(backing, mnt, faults=[BASELINE_RULE], cache_timeout=0) as fs:
            yield Family(root, backing, mnt, real, fs)
        leaked = mounts_under(root) + [(lo, "loop") for lo in loops_under(root)]
        if leaked:
            STATS.violations.append(f"{name}: left behind after the family: {leaked}")
    finally:
        if not mounts_under(root):
            shutil.rmtree(root, ignore_errors=True)


class Replayer:
    """Drives one workload on one family's mount."""

    def __init__(self, fam: Family, workload: Workload, deadline: float = DEADLINE) -> None:
        self.fam = fam
        self.fs = fam.fs
        self.workload = workload
        self.deadline = deadline

    def record(self) -> list[TraceOp]:
        """The workload's trace without faults (after one warm-up run, so
        first-time-only kernel requests do not shift the indices); raises if
        the fault-free run itself breaks an invariant."""
        for _ in range(2):
            self.workload.reset()
            self.fs.clear_trace()
            out = self._run()
            bad = self.workload.check(out, ())
            if bad:
                raise AssertionError(f"{self.workload.name}: fails without faults: {bad}")
        return [TraceOp.from_record(r) for r in self.fs.trace()]

    def _run(self) -> Outcome:
        out, thread = run_bounded(self.workload.run, self.deadline)
        if out.hung:
            # Let the stuck call go: no rule may keep it blocked while we
            # report (only a delay rule could, and none is armed by us).
            self.fs.clear_faults()
            self.fs.add_fault(BASELINE_RULE)
            thread.join(self.deadline)
        return out

    def replay(self, schedule: Schedule) -> list[str]:
        t0 = time.perf_counter()
        self.workload.reset()
        self.fs.clear_trace()
        ids = [self.fs.add_fault(f.rule) for f in schedule]
        try:
            out = self._run()
            hits = {int(r["id"]): int(r["hits"]) for r in self.fs.faults()}
        finally:
            for rid in ids:
                with contextlib.suppress(fakefs.ControlError):
                    self.fs.remove_fault(rid)
        fired = [f for f, rid in zip(schedule, ids, strict=True) if hits.get(rid, 0)]
        problems = []
        if out.hung:
            problems.append(f"hung: still running after {self.deadline}s")
        else:
            problems += self.workload.check(out, fired)
        if len(fired) > 1 and problems:
            problems = self._excuse(problems, ids)
        problems += self.fam.leak_violations()
        name = self.workload.name
        STATS.runs += 1
        STATS.schedules.add((name, schedule))
        STATS.injected += len(fired)
        STATS.unfired += not fired
        STATS.per_workload[name] = STATS.per_workload.get(name, 0) + 1
        STATS.seconds += time.perf_counter() - t0
        text = " + ".join(f.rule for f in schedule) or "(no fault)"
        tagged = [f"{name} [{text}]: {p}" for p in problems]
        STATS.violations += tagged
        return tagged

    def _excuse(self, problems: list[str], ids: list[int]) -> list[str]:
        """Drop leftovers that a *second* fault made unavoidable.

        With one fault the library must clean up. With several, a later one
        may fail the cleanup itself (the unlink of the temporary, or the
        lookup of its directory): the file then stays, and no code could
        have removed it. Excused only when a fault after the first hit the
        leftover itself or its directory; counted in the summary.
        """
        injected = [r for r in self.fs.trace() if r["rule"] in ids and r["errno"] is not None]
        later = {str(r["path"]) for r in injected[1:]}
        kept = []
        for p in problems:
            m = _LEFTOVER.search(p)
            if m is not None:
                rel = os.path.relpath(m.group(1), self.fam.backing)
                parent = os.path.dirname(rel) or "."
                if rel in later or parent in later:
                    STATS.excused += 1
                    # Known debris now: gone, so that no later run (another
                    # workload shares this backing) takes it for its own.
                    _discard(Path(m.group(1)))
                    continue
            kept.append(p)
        return kept

    def replay_all(self, schedules: Iterable[Schedule]) -> list[str]:
        problems: list[str] = []
        for s in schedules:
            problems += self.replay(s)
        return problems


# ------------------------------------------------------------ shared checks


def check_file(path: Path, data: bytes, mode: int, what: str) -> list[str]:
    """``path`` is a regular file holding exactly ``data`` with ``mode``."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return [f"{what} {path} is missing"]
    if not stat.S_ISREG(st.st_mode):
        return [f"{what} {path} is not a regular file ({stat.filemode(st.st_mode)})"]
    problems = []
    if stat.S_IMODE(st.st_mode) != mode:
        problems.append(f"{what} {path} has mode {stat.S_IMODE(st.st_mode):o}, want {mode:o}")
    got = path.read_bytes()
    if got != data:
        problems.append(f"{what} {path} differs: {len(got)} bytes, want {len(data)} "
                        f"(first difference at {_first_diff(got, data)})")
    return problems


def _first_diff(a: bytes, b: bytes) -> int:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


def _discard(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def leftovers(dirs: Iterable[Path]) -> list[str]:
    """Temporary or probe files (anything named ``.cowprobe-``) anywhere
    below ``dirs``."""
    found = []
    for d in dirs:
        for dirpath, dirnames, filenames in os.walk(d):
            for n in dirnames + filenames:
                if LEFTOVER_MARK in n:
                    found.append(f"left behind: {os.path.join(dirpath, n)}")
    return found


def check_error(err: BaseException, fired: Sequence[Fault], paths: Iterable[str]) -> list[str]:
    """The error is an OSError carrying an errno a fired fault injected and
    naming one of ``paths`` (never a hidden temporary)."""
    if not isinstance(err, OSError):
        return [f"raised {type(err).__name__} (not an OSError): {err}"]
    injected = {getattr(errno, n) for f in fired if (n := f.errno_name) is not None}
    problems = []
    if not injected:
        problems.append(f"failed although no errno was injected: {err!r}")
    elif err.errno not in injected:
        problems.append(f"errno {errno.errorcode.get(err.errno or 0, err.errno)} is not the "
                        f"injected {sorted(errno.errorcode[e] for e in injected)}: {err!r}")
    named = {str(p) for p in (err.filename, err.filename2) if p is not None}
    if not named & set(paths):
        problems.append(f"error names {sorted(named) or 'no path'}, not one of the "
                        f"caller's paths: {err!r}")
    return problems
