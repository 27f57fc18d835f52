"""The pytest plugin seen from the outside: a throwaway downstream project
(pytester, run in a subprocess like a real user's pytest) whose own tests use
the fixtures and markers. It passes, skips with reasons naming what is
missing, and fails under strict mode."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from probe.conformance import fuse_missing
from probe.lab import missing_prerequisites
from probe.pytest_plugin import require

pytest_plugins = ("pytester",)

_DOWNSTREAM = '''
import os
import tempfile
from pathlib import Path

import pytest

from probe import ReflinkOutcome, try_reflink


def _src(d: Path) -> Path:
    p = d / "blob"
    p.write_bytes(b"downstream" * 8192)
    return p


def _fstype(path: Path) -> str:
    best = ("", "")
    for line in open("/proc/self/mountinfo"):
        left, _, right = line.partition(" - ")
        mnt = left.split()[4]
        if (str(path) + "/").startswith(mnt.rstrip("/") + "/") and len(mnt) >= len(best[0]):
            best = (mnt, right.split()[0])
    return best[1]


def test_btrfs_clones(btrfs_dir):
    assert _fstype(btrfs_dir) == "btrfs"
    assert try_reflink(_src(btrfs_dir), btrfs_dir / "copy") is ReflinkOutcome.CLONED


def test_xfs_noreflink_refuses(xfs_noreflink_dir):
    got = try_reflink(_src(xfs_noreflink_dir), xfs_noreflink_dir / "c")
    assert got is ReflinkOutcome.UNSUPPORTED


def test_ext4(ext4_dir):
    assert _fstype(ext4_dir) == "ext4"


def test_tmpfs(tmpfs_dir):
    assert _fstype(tmpfs_dir) == "tmpfs"
    assert try_reflink(_src(tmpfs_dir), tmpfs_dir / "c") is ReflinkOutcome.UNSUPPORTED


def test_every_kind(lab_dir):
    assert lab_dir.is_dir() and os.listdir(lab_dir) == []


@pytest.mark.needs_reflink
def test_reflink_kinds(lab_dir):
    assert _fstype(lab_dir) in ("btrfs", "xfs")
    assert try_reflink(_src(lab_dir), lab_dir / "c") is ReflinkOutcome.CLONED


@pytest.mark.cowprobe_fs("ext4", "tmpfs")
def test_chosen_kinds(lab_dir):
    assert _fstype(lab_dir) in ("ext4", "tmpfs")


@pytest.mark.cowprobe_fs("overlay-xfs", "overlay-squashfs")
def test_overlay_lanes(lab_dir):
    assert _fstype(lab_dir) == "overlay"
    assert lab_dir.is_dir() and os.listdir(lab_dir) == []


@pytest.mark.needs_reflink
@pytest.mark.cowprobe_fs("overlay-xfs", "overlay-ext4")
def test_overlay_that_clones(lab_dir):
    assert lab_dir.parent.name == "overlay-xfs"
    assert try_reflink(_src(lab_dir), lab_dir / "c") is ReflinkOutcome.CLONED


def test_pair(cross_fs_dirs):
    assert _fstype(cross_fs_dirs.source) != _fstype(cross_fs_dirs.dest)
    got = try_reflink(_src(cross_fs_dirs.source), cross_fs_dirs.dest / "c")
    assert got is ReflinkOutcome.UNSUPPORTED


@pytest.mark.needs_reflink
def test_tmp_path_clones(tmp_path):
    assert try_reflink(_src(tmp_path), tmp_path / "c") is ReflinkOutcome.CLONED
    assert _fstype(Path(tempfile.gettempdir())) == _fstype(tmp_path)
    assert os.environ["TMPDIR"] == tempfile.gettempdir()


@pytest.mark.needs_fuse
def test_fuse_available():
    assert os.path.exists("/dev/fuse")


def test_fakefs_fault(fakefs):
    (fakefs.backing / "blob").write_bytes(b"x" * 65536)
    fakefs.add_fault("open:blob:EXDEV")
    got = try_reflink(fakefs.mountpoint / "blob", fakefs.mountpoint / "c")
    assert got is ReflinkOutcome.UNSUPPORTED
    assert not (fakefs.backing / "c").exists()
'''


@pytest.fixture
def downstream(pytester: pytest.Pytester) -> pytest.Pytester:
    why = missing_prerequisites()
    require(not why, "; ".join(why))
    pytester.makepyfile(test_downstream=_DOWNSTREAM)
    # A downstream CI would set CI=true; these runs choose strictness explicitly.
    pytester._monkeypatch.delenv("CI", raising=False)
    return pytester


def _hide_system_tools(p: pytest.Pytester, tmp_path: Path) -> None:
    """PATH without the system tool directories: mkfs.* and losetup are
    "not installed" for the downstream session; tmpfs needs neither."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    p._monkeypatch.setenv("PATH", str(empty))


def _run(p: pytest.Pytester, *args: str) -> pytest.RunResult:
    # A subprocess: the downstream session loads the plugin through its
    # pytest11 entry point exactly as a user's project would.
    return p.runpytest_subprocess("-p", "no:cacheprovider", "-rs", *args)


def test_downstream_passes(downstream: pytest.Pytester) -> None:
    # Without FUSE the downstream fuse tests would skip and this test would
    # still pass: a missing prerequisite hidden from CI.
    require(fuse_missing() is None, f"needs FUSE: {fuse_missing()}")
    res = _run(downstream)
    res.assert_outcomes(passed=19, skipped=1)
    out = res.stdout.str()
    assert "cowprobe: lab filesystems btrfs, xfs, xfs-noreflink, ext4, tmpfs" in out
    # tmp_path is on the machine's own filesystem: the reason says so and how to fix it.
    assert "needs reflink: the session's temporary directory" in out
    assert "run with --cowprobe-tmp-fs=btrfs" in out
    assert "cowprobe: filesystems used: btrfs at" in out


def test_tmp_fs_moves_the_whole_session(downstream: pytest.Pytester) -> None:
    res = _run(
        downstream, "--cowprobe-tmp-fs=btrfs", "-k", "test_tmp_path_clones or test_btrfs_clones"
    )
    res.assert_outcomes(passed=2)
    assert "cowprobe: tmp_path and TMPDIR on btrfs:" in res.stdout.str()


def test_tmp_fs_on_an_overlay_lane(downstream: pytest.Pytester) -> None:
    # An existing suite, unchanged, on the filesystem a container gives it.
    res = _run(downstream, "--cowprobe-tmp-fs=overlay-xfs", "-k", "test_tmp_path_clones")
    res.assert_outcomes(passed=1)
    out = res.stdout.str()
    assert "cowprobe: tmp_path and TMPDIR on overlay-xfs:" in out
    assert "[overlay (" in out, out


def test_unknown_lane_in_the_marker_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="""
import pytest

@pytest.mark.cowprobe_fs("overlay-zfs")
def test_x(lab_dir):
    pass
""")
    res = _run(pytester)
    said = res.stderr.str() + res.stdout.str()
    assert res.ret == pytest.ExitCode.INTERRUPTED, said  # a collection error, not a test run
    assert "cowprobe_fs('overlay-zfs'): unknown filesystem; known: btrfs, " in said
    assert "overlay-squashfs" in said


def test_missing_mkfs_skips_naming_it(downstream: pytest.Pytester, tmp_path: Path) -> None:
    _hide_system_tools(downstream, tmp_path)
    res = _run(downstream, "-k", "test_btrfs_clones or test_tmpfs")
    res.assert_outcomes(passed=1, skipped=1)
    out = res.stdout.str()
    assert "cannot build a btrfs lab filesystem: losetup missing (install util-linux)" in out
    assert "mkfs.btrfs missing (install btrfs-progs)" in out
    assert "unavailable btrfs, xfs, xfs-noreflink, ext4" in out


def test_missing_prerequisite_fails_in_strict_mode(
    downstream: pytest.Pytester, tmp_path: Path
) -> None:
    _hide_system_tools(downstream, tmp_path)
    res = _run(downstream, "--cowprobe-strict", "-k", "test_btrfs_clones or test_tmpfs")
    # The fixture fails in setup: an error, which is as red as a failure.
    res.assert_outcomes(passed=1, errors=1)
    out = res.stdout.str()
    assert "missing prerequisite (strict mode): cannot build a btrfs lab filesystem" in out
    # CI=true turns strict mode on by itself.
    downstream._monkeypatch.setenv("CI", "true")
    res = _run(downstream, "-k", "test_btrfs_clones")
    res.assert_outcomes(errors=1)


def test_missing_pyfuse3_skips_naming_it(downstream: pytest.Pytester) -> None:
    # The downstream project's conftest hides pyfuse3, as if not installed.
    downstream.makeconftest("import sys\nsys.modules['pyfuse3'] = None\n")
    res = _run(downstream, "-k", "fuse_available or fakefs_fault")
    res.assert_outcomes(skipped=2)
    assert "needs FUSE: pyfuse3 is not installed" in res.stdout.str()
    assert "pyfuse3 is not installed" in res.stdout.str()
    res = _run(downstream, "-k", "fuse_available or fakefs_fault", "--cowprobe-strict")
    res.assert_outcomes(errors=2)
    out = res.stdout.str()
    assert "missing prerequisite (strict mode): needs FUSE: pyfuse3 is not installed" in out


def test_tmp_fs_that_cannot_be_built_is_a_usage_error(
    downstream: pytest.Pytester, tmp_path: Path
) -> None:
    _hide_system_tools(downstream, tmp_path)
    res = _run(downstream, "--cowprobe-tmp-fs=xfs")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    assert "--cowprobe-tmp-fs=xfs: cannot build a xfs lab filesystem" in res.stderr.str()


def test_markers_are_registered(pytester: pytest.Pytester) -> None:
    res = pytester.runpytest_subprocess("--markers")
    out = res.stdout.str()
    for marker in ("cowprobe_fs(*kinds)", "needs_reflink", "needs_fuse", "needs_root"):
        assert f"@pytest.mark.{marker}" in out


def test_not_root_skip_reason() -> None:
    # The reason text the lab gives a normal user, which the fixtures pass on.
    # This suite runs as root, so ask again as nobody: a child that drops
    # its ids after the imports (the interpreter under /root is 0700).
    require(os.geteuid() == 0, "needs root to ask as another user")
    assert not any(w.startswith("not root") for w in missing_prerequisites())
    code = (
        "import os\nfrom probe.lab import missing_prerequisites\n"
        "os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
        "print('\\n'.join(missing_prerequisites()))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "not root (running as uid 65534; mount(2) and loop devices need root)" in out
