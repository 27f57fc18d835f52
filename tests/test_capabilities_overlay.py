"""The overlayfs lanes, built through the real kernel: every answer the
capability probe gives there is the kernel's, with its errno -- the cases
container users trip on (clone of a lower-layer file, copy-up sharing
blocks, EXDEV renaming a lower directory, hard links that copy up, and
copy_file_range across two overlay mounts)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from probe._mounttable import mount_at
from probe.capabilities import CapabilityReport, Status, probe_capabilities, probe_pair
from probe.lab import (
    KIT_DIR,
    KIT_FILE,
    LANES,
    OVERLAY_KINDS,
    Lab,
    kit_bytes,
    missing_prerequisites,
)
from probe.pytest_plugin import require
from probe.report import capability_cell

S, U, C = Status.SUPPORTED, Status.UNSUPPORTED, Status.COULD_NOT_TELL
NOTSUP, EXDEV = errno.EOPNOTSUPP, errno.EXDEV

_SAME_FS_COW = {
    "overlay_clone_lower": (S, None),
    "overlay_copy_up": (S, None),  # copy-up clones on a CoW base
    "overlay_rename_dir": (U, EXDEV),  # redirect_dir is off by default
    "overlay_hardlink": (S, None),  # works, after a silent copy-up
}
_NO_CLONE = {"reflink": (U, NOTSUP), "clone_range": (U, NOTSUP), "dedupe": (U, errno.EINVAL),
             "fiemap_shared": (U, NOTSUP), "copy_shares_blocks": (U, None)}

#: Found by experiment on 6.x; every other capability is supported.
EXPECTED: dict[str, dict[str, tuple[Status, int | None]]] = {
    "overlay-xfs": _SAME_FS_COW,
    "overlay-btrfs": _SAME_FS_COW,
    "overlay-ext4": {
        **_NO_CLONE,
        "overlay_clone_lower": (U, NOTSUP),
        "overlay_copy_up": (U, None),  # a full copy, seen by FIEMAP
        "overlay_rename_dir": (U, EXDEV),
        "overlay_hardlink": (S, None),
    },
    "overlay-squashfs": {
        # upper on tmpfs: no clones, no FIEMAP, no zero range
        **_NO_CLONE,
        "copy_shares_blocks": (C, NOTSUP),
        "fiemap": (U, NOTSUP),
        "zero_range": (U, NOTSUP),
        "overlay_clone_lower": (U, EXDEV),  # lower (squashfs) and upper (tmpfs) differ
        "overlay_copy_up": (C, NOTSUP),  # tmpfs upper: FIEMAP cannot show it
        "overlay_rename_dir": (U, EXDEV),
        # layers on two filesystems: the two names report different inodes
        "overlay_hardlink": (U, None),
    },
}


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    missing = missing_prerequisites(OVERLAY_KINDS)
    require(not missing, f"overlay lanes: {'; '.join(missing)}")
    with Lab(OVERLAY_KINDS) as lab:
        yield lab


@pytest.fixture(scope="module")
def reports(lab: Lab) -> dict[str, CapabilityReport]:
    return {k: probe_capabilities(lab.scratch_dir(k, "caps"), label=k) for k in OVERLAY_KINDS}


def test_lanes_are_real_overlays_with_the_layers_they_claim(lab: Lab) -> None:
    for kind in OVERLAY_KINDS:
        fs = lab[kind]
        assert fs.fstype == "overlay" and fs.lower is not None and fs.upper is not None
        assert f"lowerdir={fs.lower}" in fs.options and f"upperdir={fs.upper}" in fs.options
        # The kit comes from the lower layer, not from upper.
        assert (fs.mountpoint / KIT_DIR / KIT_FILE).read_bytes() == kit_bytes()
        assert not (fs.upper / KIT_DIR / KIT_FILE).exists()
    # The image layer: a read-only squashfs mount, as a container's lower.
    lower = lab["overlay-squashfs"].lower
    assert lower is not None
    entry = mount_at(lower)
    assert entry is not None and entry.fstype == "squashfs" and "ro" in entry.options
    with pytest.raises(OSError) as err:
        (lower / "new").write_bytes(b"x")
    assert err.value.errno == errno.EROFS


@pytest.mark.parametrize("kind", OVERLAY_KINDS)
def test_every_answer_is_the_kernels(reports: dict[str, CapabilityReport], kind: str) -> None:
    rep = reports[kind]
    got = {c.name: (c.status, c.errno) for c in rep.capabilities}
    want = {name: EXPECTED[kind].get(name, (S, None)) for name in got}
    assert got == want
    assert rep.limitation is None and rep.leftover is None
    assert rep.identity is not None and rep.identity.fstype == "overlay"
    for cap in rep.capabilities:
        if cap.name.startswith("overlay_") and cap.errno is not None:
            assert any(cap.errno_name and cap.errno_name in line for line in cap.evidence), cap


def test_hardlink_of_a_lower_file_copies_it_up(reports: dict[str, CapabilityReport]) -> None:
    for kind in ("overlay-xfs", "overlay-ext4"):
        cap = reports[kind]["overlay_hardlink"]
        assert cap.value == 1 and "silent copy-up" in (cap.reason or "")
    squash = reports["overlay-squashfs"]["overlay_hardlink"]
    assert "different inodes" in (squash.reason or "")


def test_copy_file_range_across_two_overlay_mounts(lab: Lab) -> None:
    across = probe_pair(lab.scratch_dir("overlay-xfs", "p"), lab.scratch_dir("overlay-btrfs", "p"))
    assert (across["copy_file_range"].status, across["copy_file_range"].errno) == (U, EXDEV)
    assert (across["reflink"].status, across["reflink"].errno) == (U, EXDEV)
    same = probe_pair(lab.scratch_dir("overlay-xfs", "a"), lab.scratch_dir("overlay-xfs", "b"))
    assert same["copy_file_range"].status is S and same["copy_shares_blocks"].status is S


def test_probes_run_again_on_the_same_mount(lab: Lab) -> None:
    # Copy-up is one-way: a second probe takes fresh spare files, and the
    # answers stay the kernel's rather than turning into "upper file" ones.
    d = lab.scratch_dir("overlay-xfs", "again")
    rep = probe_capabilities(d, only=["overlay_copy_up", "overlay_hardlink"])
    assert [c.status for c in rep.capabilities] == [S, S]
    assert os.listdir(d) == []


def test_not_an_overlay_says_so(tmp_path: Path) -> None:
    rep = probe_capabilities(tmp_path, only=list(_SAME_FS_COW))
    if rep.identity is not None and rep.identity.fstype == "overlay":
        pytest.skip("the temporary directory is itself on an overlay")
    for cap in rep.capabilities:
        assert (cap.status, cap.errno) == (U, None) and "not an overlay" in (cap.reason or "")
        # The cell says why there was nothing to try, not "no (checked)",
        # which would claim a check that found the feature broken.
        assert capability_cell(cap) == "no (not an overlay)", cap.name


def test_lab_report_has_the_overlay_lanes() -> None:
    require(not missing_prerequisites(LANES), f"the whole lab: {missing_prerequisites(LANES)}")
    out = subprocess.run([sys.executable, "-m", "probe.cli", "report", "--lab", "--format", "json"],
                         capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    lanes = {fs["label"]: fs for fs in doc["filesystems"]}
    overlays = [k for k in OVERLAY_KINDS if k in lanes]
    assert overlays == list(OVERLAY_KINDS)
    for kind in overlays:
        assert lanes[kind]["identity"]["fstype"] == "overlay"
        rename = lanes[kind]["capabilities"]["overlay_rename_dir"]
        assert rename["errno_name"] == "EXDEV", rename
    assert any("two overlay mounts" in p["label"] for p in doc["pairs"])
