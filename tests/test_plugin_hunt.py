"""Findings of a hostile-user sweep of the pytest plugin, seen from a
throwaway downstream project run in a subprocess (as tests/test_plugin.py)."""

from __future__ import annotations

import pytest

pytest_plugins = ("pytester",)

_NO_CLONING_LANE = """
import pytest

@pytest.mark.needs_reflink
@pytest.mark.cowprobe_fs("ext4", "xfs-noreflink")
def test_clones(lab_dir):
    raise AssertionError("ran on a lane that cannot clone")
"""


def _run(p: pytest.Pytester, *args: str) -> pytest.RunResult:
    return p.runpytest_subprocess("-p", "no:cacheprovider", "-rs", *args)


def test_needs_reflink_on_lanes_that_cannot_clone_says_so(pytester: pytest.Pytester) -> None:
    # Every lane named was filtered out, leaving pytest's own "got empty
    # parameter set" skip -- a skip even under CI=true, where a test that
    # can never run must fail.
    pytester.makepyfile(test_lanes=_NO_CLONING_LANE)
    pytester._monkeypatch.delenv("CI", raising=False)
    res = _run(pytester)
    res.assert_outcomes(skipped=2)
    out = res.stdout.str()
    assert "needs reflink: the ext4 lab filesystem does not clone" in out
    assert "needs reflink: the xfs-noreflink lab filesystem does not clone" in out
    assert "empty parameter set" not in out
    pytester._monkeypatch.setenv("CI", "true")
    res = _run(pytester)
    res.assert_outcomes(errors=2)
    assert ("missing prerequisite (strict mode): needs reflink: the ext4 lab filesystem "
            "does not clone") in res.stdout.str()


_OWN_DIR_CLONES = """
import os, pytest
from probe import ReflinkOutcome, try_reflink

@pytest.mark.needs_reflink
def test_in_btrfs_dir(btrfs_dir):
    (btrfs_dir / "a").write_bytes(b"a" * 8192)
    assert try_reflink(btrfs_dir / "a", btrfs_dir / "b") is ReflinkOutcome.CLONED

@pytest.mark.needs_reflink
def test_in_ext4_dir(ext4_dir):
    raise AssertionError("ran although neither its directory nor tmp_path clones")
"""


def test_needs_reflink_counts_a_cloning_lab_dir_fixture(pytester: pytest.Pytester) -> None:
    # The marker asked only tmp_path's filesystem (ext4 here), so a test
    # cloning in its own btrfs_dir failed in strict mode for a directory it
    # never uses. ext4_dir does not clone: that one still fails.
    pytester.makepyfile(test_own=_OWN_DIR_CLONES)
    pytester._monkeypatch.setenv("CI", "true")
    res = _run(pytester)
    res.assert_outcomes(passed=1, errors=1)
    assert "test_in_ext4_dir" in res.stdout.str()
