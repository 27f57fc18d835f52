"""The capability probe on fakefs with faults armed: whatever fakefs makes
fail, the probe answers "unsupported" or "could not tell" for what it could
not establish -- never "yes", never a crash -- and leaves nothing behind."""

from __future__ import annotations

import errno
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _fakefs_util import fakefs_over

from probe.capabilities import (
    CAPABILITY_NAMES,
    CapabilityReport,
    ProbeContext,
    Status,
    probe_capabilities,
    probe_pair,
)
from probe.cli import EXIT_COULD_NOT_TELL, EXIT_USAGE, main
from probe.lab import Lab

S, U, C = Status.SUPPORTED, Status.UNSUPPORTED, Status.COULD_NOT_TELL


@pytest.fixture
def fake(cowprobe_lab: Lab) -> Iterator[tuple[Any, Path, Path]]:
    """(handle, mountpoint, backing): fakefs over a btrfs scratch directory."""
    yield from fakefs_over(cowprobe_lab, "btrfs")


def _never_yes_on_failure(rep: CapabilityReport, code: int) -> None:
    for cap in rep.capabilities:
        assert "crashed" not in (cap.reason or ""), cap
        if cap.errno == code:
            assert cap.status is not S, cap


def test_fuse_itself_answers_as_the_kernel_does(fake: tuple[Any, Path, Path]) -> None:
    _fs, mnt, backing = fake
    rep = probe_capabilities(mnt)
    assert rep.identity is not None and rep.identity.magic_name == "fuse"
    assert (rep.identity.fstype or "").startswith("fuse")
    got = {c.name: (c.status, c.errno) for c in rep.capabilities}
    # The kernel answers FICLONE for FUSE itself; fakefs implements neither
    # fallocate nor O_TMPFILE, and passes no birth time or hole map through.
    assert got["reflink"] == (U, errno.EOPNOTSUPP)
    assert got["fallocate"] == (U, errno.EOPNOTSUPP)
    assert got["o_tmpfile"] == (U, errno.EOPNOTSUPP)
    assert got["statx_btime"] == (U, None)
    assert got["sparse"] == (U, None)
    assert got["xattr"] == (S, None)
    assert got["hardlink"] == (S, None)
    assert got["rename_noreplace"][0] in (S, U)
    assert list(backing.iterdir()) == []


@pytest.mark.parametrize("rule", ["open:*:EIO", "setxattr:*:EIO", "write:*:EIO", "fsync:*:EIO",
                                  "create:*:ENOSPC", "link:*:EIO", "rename:*:EIO"])
def test_faults_armed_after_the_probe_dir_exists(fake: tuple[Any, Path, Path],
                                                 rule: str) -> None:
    fs, mnt, backing = fake
    armed: list[int] = []

    def arm(name: str, ctx: ProbeContext) -> None:
        if not armed:
            armed.append(fs.add_fault(rule))

    rep = probe_capabilities(mnt, hook=arm)
    code = getattr(errno, rule.rsplit(":", 1)[1])
    assert armed and len(rep.capabilities) == len(CAPABILITY_NAMES)
    _never_yes_on_failure(rep, code)
    # The fault really bit: some answer carries its errno.
    assert any(c.errno == code for c in rep.capabilities)
    if rule.startswith("setxattr"):
        assert (rep["xattr"].status, rep["xattr"].errno) == (C, errno.EIO)
    fs.clear_faults()
    assert rep.leftover is None
    assert list(mnt.iterdir()) == [] and list(backing.iterdir()) == []


def test_probe_dir_refused(fake: tuple[Any, Path, Path]) -> None:
    fs, mnt, backing = fake
    fs.add_fault("mkdir:*:EACCES")
    rep = probe_capabilities(mnt)
    assert rep.limitation is not None and "EACCES" in rep.limitation
    assert {(c.status, c.errno) for c in rep.capabilities} == {(C, errno.EACCES)}
    assert list(backing.iterdir()) == []


def test_cleanup_refused_is_reported_not_hidden(fake: tuple[Any, Path, Path]) -> None:
    fs, mnt, backing = fake
    rid: list[int] = []

    def arm(name: str, ctx: ProbeContext) -> None:
        if name == "fcntl_lock" and not rid:
            rid.append(fs.add_fault("unlink:*:EIO"))

    rep = probe_capabilities(mnt, hook=arm)
    assert rep.leftover is not None and "EIO" in rep.leftover
    fs.clear_faults()
    # What the report named is what is there, and it can be removed now.
    (left,) = list(mnt.iterdir())
    assert left.name in rep.leftover
    shutil.rmtree(left)
    assert list(backing.iterdir()) == []


# -- regressions from the fault-schedule torture (issue 8) ---------------------

def _probe_dir_gone(mnt: Path, backing: Path) -> None:
    assert list(mnt.iterdir()) == [] and list(backing.iterdir()) == []


@pytest.mark.parametrize("rule", ["rmdir:.cowprobe-probe-*.d:EACCES:nth=1",
                                  "opendir:.cowprobe-probe-*.d:EIO:nth=1"])
def test_one_failed_cleanup_step_is_retried(fake: tuple[Any, Path, Path], rule: str) -> None:
    """One refused step of the cleanup walk used to leave the private
    directory behind (reported, never retried)."""
    fs, mnt, backing = fake
    rid: list[int] = []

    def arm(name: str, ctx: ProbeContext) -> None:
        if not rid:
            rid.append(fs.add_fault(rule))

    rep = probe_capabilities(mnt, hook=arm)
    # The fault fired (the final cleanup really met it) and still nothing stays.
    assert {r["id"]: r["hits"] for r in fs.faults()}[rid[0]] == 1
    assert rep.leftover is None, rep.leftover
    fs.clear_faults()
    _probe_dir_gone(mnt, backing)


def test_statfs_failing_once_costs_nothing(fake: tuple[Any, Path, Path]) -> None:
    fs, mnt, backing = fake
    fs.add_fault("statfs:.:EACCES:nth=1")
    rep = probe_capabilities(mnt, only=["hardlink"])
    assert rep.identity is not None and rep.identity.unreadable == ()
    assert rep.identity.block_size and rep.identity.total_bytes
    assert rep["hardlink"].status is S
    _probe_dir_gone(mnt, backing)


def test_statfs_refused_leaves_identity_partial_not_a_crash(
        fake: tuple[Any, Path, Path]) -> None:
    """statvfs refused for good: the numbers are "could not tell" (None,
    with the errno), the identity from the mount table and stat is intact,
    every capability is still measured, and the report still renders and
    validates."""
    import jsonschema

    from probe.report import identity_rows, load_schema, to_document

    fs, mnt, backing = fake
    fs.add_fault("statfs:*:EACCES")
    rep = probe_capabilities(mnt)
    ident = rep.identity
    assert ident is not None
    assert (ident.block_size, ident.total_bytes, ident.available_bytes) == (None, None, None)
    assert len(ident.unreadable) == 1 and "EACCES" in ident.unreadable[0]
    # The magic comes from statfs too, so it is unknown; the mount table
    # still names the filesystem.
    assert ident.magic is None and (ident.fstype or "").startswith("fuse")
    assert rep["hardlink"].status is S and rep["reflink"].status is U
    rows = {r[0]: r[1] for r in identity_rows([rep])}
    assert rows["block size"] == rows["size"] == rows["free"] == "?"
    doc = to_document([rep])
    jsonschema.validate(doc, load_schema())
    assert "EACCES" in json.dumps(doc), "JSON readers must see why the fields are null"
    fs.clear_faults()
    _probe_dir_gone(mnt, backing)


@pytest.fixture
def fake_ext4(cowprobe_lab: Lab) -> Iterator[tuple[Any, Path, Path]]:
    """fakefs over ext4, which refuses misaligned O_DIRECT I/O with EINVAL
    (btrfs quietly falls back to buffered I/O and hides the bug)."""
    yield from fakefs_over(cowprobe_lab, "ext4")


@pytest.mark.parametrize("targeted", [False, True])
def test_o_direct_is_what_the_kernel_says(fake_ext4: tuple[Any, Path, Path],
                                          targeted: bool) -> None:
    """fakefs used to open the backing file O_DIRECT too and pwrite()
    pyfuse3's unaligned buffer into it: EINVAL, or success by luck."""
    fs, mnt, backing = fake_ext4
    if targeted:
        # A rule matching every path (but never firing) gives every handle
        # FUSE direct_io, as the torture harness runs.
        fs.add_fault(f"statfs:*:EIO:pid={2**22 + 1}")
    answers = {(c.status, c.errno) for _ in range(5)
               for c in probe_capabilities(mnt, only=["o_direct"]).capabilities}
    assert answers == {(S, None)}
    fs.clear_faults()
    _probe_dir_gone(mnt, backing)


def test_a_slow_filesystem_is_cut_off_at_the_timeout(fake: tuple[Any, Path, Path]) -> None:
    # Every create stalls 100 ms (the whole probe then takes seconds): with
    # half a second, the first capabilities are probed, the rest are "could
    # not tell" with the time limit as their reason, and nothing is left.
    fs, mnt, backing = fake
    fs.add_fault("create:*:delay=100ms")
    rep = probe_capabilities(mnt, timeout=0.5)
    late = [c for c in rep.capabilities if "time limit" in (c.reason or "")]
    probed = [c for c in rep.capabilities if c not in late]
    assert probed and late, rep.capabilities
    assert rep.capabilities[: len(probed)] == tuple(probed)  # the late ones are a suffix
    assert all(c.status is C and c.errno is None for c in late)
    assert f"after {len(probed)} of {len(rep.capabilities)}" in (late[0].reason or "")
    assert rep.leftover is None and list(backing.iterdir()) == []


@pytest.mark.parametrize("bad", [0, -1.0, float("nan")])
def test_a_timeout_that_is_not_positive_is_refused(tmp_path: Path, bad: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        probe_capabilities(tmp_path, timeout=bad)
    assert list(tmp_path.iterdir()) == []


def test_report_timeout_reaches_the_probe(fake: tuple[Any, Path, Path],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    fs, mnt, backing = fake
    fs.add_fault("create:*:delay=100ms")
    main(["report", str(mnt), "--timeout", "0.5", "--format", "json"])
    doc = json.loads(capsys.readouterr().out)
    (rep,) = doc["filesystems"]
    reasons = [c["reason"] or "" for c in rep["capabilities"].values()]
    assert any("the time limit ran out" in r for r in reasons), reasons
    assert not all("the time limit ran out" in r for r in reasons), reasons
    assert list(backing.iterdir()) == []


@pytest.mark.parametrize("bad", ["0", "-2", "abc", "nan", "inf"])
def test_report_refuses_a_timeout_that_is_not_a_time(tmp_path: Path, bad: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["report", str(tmp_path), "--timeout", bad])
    assert exited.value.code == EXIT_USAGE
    out, err = capsys.readouterr()
    assert out == "" and f"expected a positive number of seconds, got {bad!r}" in err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_check_timeout_makes_the_late_capabilities_unknown(
        fake: tuple[Any, Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    # the passthrough over btrfs has every one of these; only the clock keeps
    # the later ones from being established, and check says so (exit 3).
    fs, mnt, backing = fake
    fs.add_fault("create:*:delay=100ms")
    wanted = "hardlink,symlink,chmod,xattr,sparse,rename_noreplace"
    code = main(["check", str(mnt), "--require", wanted, "--timeout", "0.3"])
    out = capsys.readouterr().out
    assert code == EXIT_COULD_NOT_TELL, out
    assert "the time limit ran out" in out and "missing:" not in out
    assert list(backing.iterdir()) == []


def test_a_pair_probe_is_cut_off_at_the_timeout(fake: tuple[Any, Path, Path]) -> None:
    fs, mnt, backing = fake
    (mnt / "a").mkdir()
    (mnt / "b").mkdir()
    fs.add_fault("create:*:delay=100ms")
    rep = probe_pair(mnt / "a", mnt / "b", timeout=0.25)  # each probe makes 2+ slow creates
    late = [c.name for c in rep.capabilities if "time limit" in (c.reason or "")]
    assert rep.capabilities[0].name not in late and late, rep.capabilities
    assert [c.name for c in rep.capabilities[-len(late):]] == late
    assert rep.leftover is None
    assert list((backing / "a").iterdir()) == [] and list((backing / "b").iterdir()) == []
    with pytest.raises(ValueError, match="positive"):
        probe_pair(mnt / "a", mnt / "b", timeout=0)
