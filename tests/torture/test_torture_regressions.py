"""One test per library bug the torture sweep found (fixed in probe/_copy.py
and probe/_platform.py), each pinned to the fault that exposed it."""

from __future__ import annotations

import errno
from collections.abc import Iterator

import pytest

import probe

from ._clone import SRC_MODE, CloneWorkload
from ._harness import Family, Replayer, check_file, leftovers
from ._schedule import Fault, TraceOp, fault_at


@pytest.fixture(scope="module")
def new(torture_family: Family) -> Iterator[tuple[Replayer, list[TraceOp]]]:
    r = Replayer(torture_family, CloneWorkload(torture_family, "new"))
    yield r, r.record()


def _index(trace: list[TraceOp], op: str, path_part: str, occurrence: int) -> int:
    hits = [i for i, t in enumerate(trace) if t.op == op and path_part in t.path]
    return hits[occurrence - 1]


def _run(r: Replayer, fault: Fault) -> BaseException | None:
    w = r.workload
    assert isinstance(w, CloneWorkload)
    w.reset()
    rid = r.fs.add_fault(fault.rule)
    try:
        try:
            probe.clonefile_or_copy(w.src, w.dst)
        except OSError as err:
            return err
        return None
    finally:
        hits = {f["id"]: f["hits"] for f in r.fs.faults()}
        r.fs.remove_fault(rid)
        assert hits[rid] == 1, f"{fault.rule} never fired"


def test_short_read_is_not_taken_for_eof(new: tuple[Replayer, list[TraceOp]]) -> None:
    """A FUSE short read means EOF to the kernel, which shrinks its cached
    size: the copy stopped at 1000 of 100003 bytes and reported success."""
    r, trace = new
    assert _run(r, fault_at(trace, _index(trace, "read", "src", 1), "short=1000")) is None
    w = r.workload
    assert isinstance(w, CloneWorkload)
    assert check_file(w.dst_store, w.data, SRC_MODE, "dest") == []


def test_failed_close_of_the_copy_names_the_dest(new: tuple[Replayer, list[TraceOp]]) -> None:
    """close() (FUSE FLUSH) failing on the copy raised an OSError naming no file."""
    r, trace = new
    err = _run(r, fault_at(trace, _index(trace, "flush", ".new.cowprobe-", 2), "EIO"))
    assert isinstance(err, OSError) and err.errno == errno.EIO
    w = r.workload
    assert isinstance(w, CloneWorkload)
    assert str(w.dst) in {err.filename, err.filename2}
    assert not w.dst_store.exists()
    assert leftovers([r.fam.backing]) == []


def test_failed_close_of_the_source_is_not_an_error(new: tuple[Replayer, list[TraceOp]]) -> None:
    """A read-only descriptor's close() error cannot mean lost data; it
    used to fail a complete, correct copy (naming no file)."""
    r, trace = new
    assert _run(r, fault_at(trace, _index(trace, "flush", "src", 2), "EIO")) is None
    w = r.workload
    assert isinstance(w, CloneWorkload)
    assert check_file(w.dst_store, w.data, SRC_MODE, "dest") == []


def test_unprovable_clone_temp_does_not_block_the_copy(
    new: tuple[Replayer, list[TraceOp]],
) -> None:
    """remove_created() skips an unlink it cannot prove safe (its fstat
    failed); the copy then reused the same temporary name and died with
    EEXIST. Now the copy gets a fresh name and the clone's is discarded."""
    r, trace = new
    err = _run(r, fault_at(trace, _index(trace, "getattr", ".new.cowprobe-", 2), "EIO"))
    assert err is None
    w = r.workload
    assert isinstance(w, CloneWorkload)
    assert check_file(w.dst_store, w.data, SRC_MODE, "dest") == []
    assert leftovers([r.fam.backing]) == []


def test_failed_stat_of_the_dest_names_the_whole_path(
    new: tuple[Replayer, list[TraceOp]],
) -> None:
    """The dest is stat()ed relative to its directory's fd; the error named
    just "new"."""
    r, trace = new
    k = next(i for i, t in enumerate(trace) if t.op == "lookup" and t.path == "d/new")
    err = _run(r, fault_at(trace, k, "EIO"))
    assert isinstance(err, OSError) and err.errno == errno.EIO
    w = r.workload
    assert isinstance(w, CloneWorkload)
    assert err.filename == str(w.dst)


def test_failed_fstat_of_the_source_names_it(new: tuple[Replayer, list[TraceOp]]) -> None:
    """open_source()'s fstat error named no file."""
    r, trace = new
    # The getattr right after the copy's open of the source is that fstat.
    opens = [i for i, t in enumerate(trace) if t.op == "open" and t.path == "src"]
    k = next(i for i in range(opens[-1] + 1, len(trace))
             if trace[i].op == "getattr" and trace[i].path == "src")
    err = _run(r, fault_at(trace, k, "EIO"))
    assert isinstance(err, OSError) and err.errno == errno.EIO
    w = r.workload
    assert isinstance(w, CloneWorkload)
    assert err.filename == str(w.src)


def test_failed_close_after_a_failed_source_fstat_keeps_the_named_error(
    torture_family: Family,
) -> None:
    """Random schedule ``getattr:src:EIO`` (the source's fstat) then
    ``flush:src:EIO`` (closing it): the cleanup's close error replaced the
    fstat's, and the caller got an EIO naming no file."""
    fs = torture_family.fs
    (torture_family.backing / "src").write_bytes(b"x" * 70_001)
    (torture_family.backing / "dst").write_bytes(b"old")
    # The schedule the random sweep found: the 5th GETATTR of src is the
    # copy's fstat of its opened source, the 2nd FLUSH that descriptor's close.
    fs.add_fault("getattr:src:EIO:nth=5")
    fs.add_fault("flush:src:EIO:nth=2")
    try:
        with pytest.raises(OSError) as info:
            probe.clonefile_or_copy(torture_family.mnt / "src", torture_family.mnt / "dst")
    finally:
        fs.clear_faults()
    assert info.value.errno == errno.EIO
    assert info.value.filename == str(torture_family.mnt / "src")
    assert (torture_family.backing / "dst").read_bytes() == b"old"


def test_the_leftover_check_sees_beside_the_mount(torture_family: Family) -> None:
    """The materializer once staged a worktree next to the mount, not in it:
    a check of the backing tree alone passed. The family's check covers the
    whole directory the mount sits in."""
    fam = torture_family
    stray, staged = fam.root / "w1", fam.real / ".w1.cowprobe-1-2-3.stage"
    stray.mkdir()
    staged.mkdir()
    try:
        found = fam.leftovers()
    finally:
        stray.rmdir()
        staged.rmdir()
    assert f"stray entry beside the mount: {stray}" in found
    assert f"left behind: {staged}" in found
    assert fam.leftovers() == []
