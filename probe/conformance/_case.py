"""One case: builds any scenario variant's set-up on any site, makes the
one library call, and checks it.

For every case it builds the set-up the variant names (fresh directories,
fixtures written beneath any FUSE mount, NOCOW / immutable / read-only
directories, a deleter, fault rules armed at the last moment), makes the one
library call, compares the answer (result and errno) with the expectation,
verifies every post-condition, and removes what it made. A case whose
set-up cannot be had here is "not applicable" with the reason -- never a
pass.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import hashlib
import os
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .. import _linux, _platform
from .._copy import clonefile_or_copy
from .._outcome import errno_name
from .._platform import Platform
from .._reflink import reflink_at
from ._model import Check, Deleter, Expect, Op, Result, Scenario, Variant
from ._racing import with_deleter, with_late_deleter
from ._site import Site, Workdir

__all__ = ["Case", "Observed", "payload"]

_PAYLOAD_SIZE = 192 * 1024  # several extents' worth, far above btrfs's inline limit
_SOURCE_MODE = 0o754  # an exec bit and odd group/other bits: a lost mode shows
_OLD_DEST = b"existing dest: a failed replace must leave this intact\n" * 40


@dataclass(frozen=True)
class Observed:
    result: Result
    errno: int | None = None
    message: str = ""

    def describe(self) -> str:
        word = self.result.value.upper()
        if self.errno is None:
            return word
        return f"{word} ({errno_name(self.errno)})"


def payload(size: int = _PAYLOAD_SIZE, seed: str = "") -> bytes:
    """Deterministic, incompressible bytes (a run can be compared with another)."""
    return hashlib.shake_256(f"cowprobe conformance {seed}".encode()).digest(size)


def _read(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def _shared(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return _linux.shared_bytes(fd)
    finally:
        os.close(fd)


def _listing(d: Path) -> set[str]:
    try:
        return set(os.listdir(d))
    except FileNotFoundError:
        return set()


def _left_behind(dest_dir: Path, before: set[str]) -> str | None:
    """A failed call must not leave a temporary (or anything) in the dest dir."""
    extra = _listing(dest_dir) - before
    return f"left behind in the dest directory: {sorted(extra)}" if extra else None


class Case:
    def __init__(self, site: Site, scenario: Scenario, variant: Variant) -> None:
        self.site = site
        self.scenario = scenario
        self.v = variant
        self.expect: Expect = scenario.expect_for(variant)
        self.checks = scenario.checks_for(variant)
        self.data = payload(seed=f"{scenario.id}/{variant.label}")
        self.src_wd: Workdir | None = None
        self.dst_wd: Workdir | None = None

    def run(self) -> tuple[list[str], str]:
        if not self.v.syscall_faults:
            return self._run()
        # A seccomp filter cannot be removed: run the case in a fresh thread
        # so the filter ends with it, and the caller's thread (and every
        # process it starts later) stays unfiltered.
        out: list[tuple[list[str], str]] = []
        errors: list[BaseException] = []

        def body() -> None:
            try:
                out.append(self._run())
            except BaseException as err:  # re-raised on the caller's thread
                errors.append(err)

        worker = threading.Thread(target=body, name="cowprobe-syscall-case")
        worker.start()
        worker.join()
        if errors:
            raise errors[0]
        return out[0]

    def _run(self) -> tuple[list[str], str]:
        with contextlib.ExitStack() as stack:
            src_wd = self.site.workdir(self.v.source, "src")
            stack.callback(self.site.discard, src_wd)
            dst_wd = self.site.workdir(self.v.dest, "dst")
            stack.callback(self.site.discard, dst_wd)
            if self.v.op is Op.BATCH:
                return self._batch(src_wd, dst_wd, stack)
            return self._single(src_wd, dst_wd, stack)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- set-up pieces -----------------------------------------------------
    def _write_source(self, wd: Workdir, name: str, data: bytes) -> Path:
        p = wd.setup_path / name
        with open(p, "xb") as fh:
            fh.write(data)
            # On disk before the clone, so FIEMAP afterwards reports real
            # extents rather than delayed allocations.
            os.fsync(fh.fileno())
        os.chmod(p, _SOURCE_MODE)
        return wd.path / name

    def _prepare_dest_dir(self, wd: Workdir, stack: contextlib.ExitStack) -> None:
        target = wd.setup_path
        if self.v.nocow_dest:
            # New files inherit NOCOW from their directory; the library's own
            # exclusive create then makes the NOCOW dest the scenario needs.
            _linux.change_dir_flags(target, add=_linux.FS_NOCOW_FL)
        if self.v.readonly_mode_dest:
            os.chmod(target, 0o555)  # noqa: S103 - read-only on purpose
            stack.callback(os.chmod, target, 0o755)

    @contextlib.contextmanager
    def _faults(self, rel: dict[str, str]) -> Iterator[dict[int, str]]:
        """Arm the variant's rules on the fakefs mount; yields {rule id: rule}."""
        if not self.v.faults:
            yield {}
            return
        handle = self.site.fakefs()[0]
        armed: dict[int, str] = {}
        try:
            for r in (r.format(**rel) for r in self.v.faults):
                armed[int(handle.add_fault(r))] = r
            yield armed
        finally:
            handle.clear_faults()

    @contextlib.contextmanager
    def _syscall_faults(self, src: Path, dst: Path) -> Iterator[Callable[[], list[str]]]:
        """The variant's syscall-layer rules around the call; yields a check
        for rules that never fired."""
        if not self.v.syscall_faults:
            yield list
            return
        import fakefs  # the integration layer may; only syscall variants need it

        root = Path(os.path.commonpath([src, dst]))
        rel = {"source": str(src.relative_to(root)), "dest": str(dst.relative_to(root))}
        rules = [r.format(**rel) for r in self.v.syscall_faults]
        with fakefs.syscall_faults(rules, root=root) as handle:
            yield lambda: [f"syscall rule {f['rule']!r} never fired"
                           for f in handle.faults() if int(f["hits"]) < 1]

    def _rel(self, *paths: Path) -> dict[str, str]:
        out = {}
        mnt: Path | None = None
        if "fakefs" in (self.v.source, self.v.dest):
            mnt = self.site.fakefs()[1]
        for key, p in zip(("source", "dest"), paths, strict=False):
            try:
                out[key] = str(p.relative_to(mnt)) if mnt else p.name
            except ValueError:
                out[key] = p.name
        return out

    def _fault_hits(self, armed: dict[int, str]) -> list[str]:
        """Rules that never fired: a simulated case whose fault did not happen
        proves nothing, whatever the outcome looked like."""
        if not armed:
            return []
        handle = self.site.fakefs()[0]
        # hits: faults that reached a caller's syscall; one the kernel or the
        # caller absorbed (a short count, a revalidation) proves nothing.
        got = {int(f["id"]): (int(f["hits"]), int(f.get("absorbed", 0))) for f in handle.faults()}
        unfired = []
        for rule_id, text in armed.items():
            hits, absorbed = got.get(rule_id, (0, 0))
            if hits < 1:
                unfired.append(f"fault rule {text!r} never fired"
                               + (f" ({absorbed} failures absorbed)" if absorbed else ""))
        return unfired

    # -- one call ----------------------------------------------------------
    def _truth(self, path: Path) -> Path:
        """``path`` as stored: beneath a FUSE mount, the backing file.

        Identity checks ("the same inode as before") must not ask the FUSE
        mount: its inode numbers are the daemon's, handed out afresh when
        the kernel forgets an entry (which fakefs forces when rules change).
        """
        for wd in (self.src_wd, self.dst_wd):
            if wd is not None and wd.backing is not None:
                try:
                    return wd.backing / path.relative_to(wd.path)
                except ValueError:
                    continue
        return path

    def _single(
        self, src_wd: Workdir, dst_wd: Workdir, stack: contextlib.ExitStack
    ) -> tuple[list[str], str]:
        self.src_wd, self.dst_wd = src_wd, dst_wd
        v = self.v
        src = self._write_source(src_wd, "source.bin", self.data)
        dest_dir = dst_wd.path / "missing-parent" if v.dest_parent_missing else dst_wd.path
        dst = dest_dir / "dest.bin"
        old: tuple[int, int] | None = None
        if v.existing_dest:
            p = dst_wd.setup_path / "dest.bin"
            p.write_bytes(_OLD_DEST)
            st = os.stat(self._truth(dst))
            old = (st.st_dev, st.st_ino)
        self._prepare_dest_dir(dst_wd, stack)
        self.site.fill(v.dest, dst_wd)
        if v.immutable_dest:
            _linux.change_dir_flags(dst_wd.setup_path, add=_linux.FS_IMMUTABLE_FL)
            stack.callback(_clear_immutable, dst_wd.setup_path)
        src_st = os.stat(self._truth(src))
        before = _listing(self._truth(dst_wd.path))
        if v.deleter is Deleter.BEFORE:
            os.unlink(src)
        plat = _platform.current()
        if v.deleter is Deleter.MID_FLIGHT:
            plat = with_deleter(plat, str(src))
        elif v.deleter is Deleter.DURING:
            plat = with_late_deleter(plat, str(src))

        with self._faults(self._rel(src, dst)) as rules, \
                self._syscall_faults(src, dst) as sys_unfired:
            observed = self._call(src, dst, plat)
            unfired = self._fault_hits(rules) + sys_unfired()

        problems = list(unfired)
        # An expectation of "an error" with no errno named accepts any errno.
        any_error = self.expect.errno is None and self.expect.result is Result.ERROR
        wanted = (self.expect.result, _errno_of(self.expect))
        if (observed.result, observed.errno) != wanted and not (
            any_error and observed.result is Result.ERROR
        ):
            problems.append(
                f"expected {self.expect.describe()}, got {observed.describe()}"
                + (f" [{observed.message}]" if observed.message else "")
            )
        for check in sorted(self.checks, key=lambda c: c.name):
            if check is Check.WRITES_ISOLATED:
                continue  # last: it changes both files
            try:
                problem = self._verify(
                    check, src, dst, self._truth(dst_wd.path), before, old, src_st
                )
            except OSError as err:
                problem = f"{check.value}: {err}"
            if problem:
                problems.append(problem)
        if Check.WRITES_ISOLATED in self.checks:
            try:
                problem = self._writes_isolated(src, dst)
            except OSError as err:
                problem = f"{Check.WRITES_ISOLATED.value}: {err}"
            if problem:
                problems.append(problem)
        return problems, observed.describe()

    def _call(self, src: Path, dst: Path, plat: Platform) -> Observed:
        try:
            if self.v.op is Op.CLONE_OR_COPY:
                cloned = clonefile_or_copy(src, dst)
                return Observed(Result.CLONED if cloned else Result.COPIED)
            res = reflink_at(str(src), str(dst), None, plat)
            return Observed(Result(res.outcome.value), res.errno)
        except OSError as err:
            return Observed(Result.ERROR, err.errno, str(err))

    def _verify(  # noqa: PLR0917 - one call site, every piece of the case's state
        self,
        check: Check,
        src: Path,
        dst: Path,
        dest_dir: Path,
        before: set[str],
        old: tuple[int, int] | None,
        src_st: os.stat_result,
    ) -> str | None:
        if check is Check.DEST_EXACT:
            got = _read(dst)
            if got != self.data:
                return f"dest bytes differ ({len(got)} bytes, want {len(self.data)})"
        elif check is Check.DEST_MODE:
            mode = stat.S_IMODE(os.stat(dst).st_mode)
            if mode != _SOURCE_MODE:
                return f"dest mode {mode:o}, source's is {_SOURCE_MODE:o}"
        elif check is Check.NO_DEST:
            if os.path.lexists(dst) or os.path.lexists(self._truth(dst)):
                return "a dest was left behind"
            return _left_behind(dest_dir, before)
        elif check is Check.INODE_DISTINCT:
            a, b = os.stat(src), os.stat(dst)
            if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino):
                return "dest is the source's inode (a hard link, not a clone)"
        elif check is Check.BLOCKS_SHARED:
            shared = _shared(dst)
            if shared < len(self.data) or _shared(src) == 0:
                return f"FIEMAP shows {shared} of {len(self.data)} dest bytes shared"
        elif check is Check.BLOCKS_NOT_SHARED:
            if _shared(dst):
                return "FIEMAP shows the dest sharing blocks (expected a plain copy)"
        elif check is Check.SOURCE_UNTOUCHED:
            src = self._truth(src)
            st = os.stat(src)
            if _read(src) != self.data or (st.st_dev, st.st_ino) != (src_st.st_dev, src_st.st_ino):
                return "the source changed"
        elif check is Check.SOURCE_GONE:
            if os.path.lexists(src) or os.path.lexists(self._truth(src)):
                return "the source still exists (the vanish did not happen)"
        elif check is Check.EXISTING_DEST_UNTOUCHED:
            dst = self._truth(dst)
            st = os.stat(dst)
            if _read(dst) != _OLD_DEST or (st.st_dev, st.st_ino) != old:
                return "the existing dest was changed or replaced"
            return _left_behind(dest_dir, before)
        else:
            return f"check {check.value!r} does not apply to a single call"
        return None

    def _writes_isolated(self, src: Path, dst: Path) -> str | None:
        block = 4096
        fd = os.open(dst, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.pwrite(fd, b"D" * block, 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        if _read(src) != self.data:
            return "writing the dest changed the source (blocks not copy-on-write)"
        os.chmod(src, 0o644)
        fd = os.open(src, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.pwrite(fd, b"S" * block, 2 * block)
            os.fsync(fd)
        finally:
            os.close(fd)
        want = b"D" * block + self.data[block:]
        if _read(dst) != want:
            return "writing the source changed the dest"
        return None

    # -- a batch -----------------------------------------------------------
    def _batch(
        self, src_wd: Workdir, dst_wd: Workdir, stack: contextlib.ExitStack
    ) -> tuple[list[str], str]:
        from ._batch import run_batch

        n = max(2, self.v.jobs)
        blobs = [payload(64 * 1024, f"{self.scenario.id}/{i}") for i in range(n)]
        sources = [self._write_source(src_wd, f"blob-{i}", b) for i, b in enumerate(blobs)]
        dests = [dst_wd.path / f"wt/blob-{i}" for i in range(n)]
        if self.v.deleter is Deleter.BEFORE:
            os.unlink(sources[0])
        with self._faults(self._rel(sources[0], dests[0])) as rules, \
                self._syscall_faults(sources[0], dests[0]) as sys_unfired:
            outcome = run_batch(list(zip(sources, dests, strict=True)))
            unfired = self._fault_hits(rules) + sys_unfired()
        problems = list(unfired) + outcome.problems(self.checks, blobs, dests)
        return problems, outcome.describe()


def _errno_of(expect: Expect) -> int | None:
    return None if expect.errno is None else int(getattr(_errno, expect.errno))


def _clear_immutable(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        _linux.change_dir_flags(path, remove=_linux.FS_IMMUTABLE_FL)
