"""`cowprobe check`: the CI gate's exit codes and its one line per miss."""

from __future__ import annotations

import os

import pytest

from probe.cli import EXIT_COULD_NOT_TELL, EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from probe.lab import Lab


def check(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["check", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_all_present(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    d = lab.scratch_dir("btrfs", "check")
    code, out, _err = check(capsys, str(d), "--require", "reflink,user-xattr",
                            "--require", "hardlink")
    assert code == EXIT_OK
    assert out.strip() == (f"{d} (btrfs): all required capabilities present: "
                           "reflink, xattr, hardlink")
    assert os.listdir(d) == []


def test_missing_one_line_each_with_errno(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    d = lab.scratch_dir("tmpfs", "check")
    code, out, _err = check(capsys, str(d), "--require", "reflink,xattr,zero_range,copy_shares")
    assert code == EXIT_USAGE  # "copy_shares" is not a name: nothing was probed
    code, out, _err = check(capsys, str(d), "--require", "reflink,xattr,zero_range,o_tmpfile")
    assert code == EXIT_FAILED
    lines = out.splitlines()
    assert lines[0].startswith("missing: reflink (EOPNOTSUPP): ")
    assert lines[1].startswith("missing: zero_range (EOPNOTSUPP): ")
    assert lines[2] == f"{d} (tmpfs): 2 of 4 required capabilities missing"
    assert len(lines) == 3


def test_could_not_tell(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    ro = lab.readonly_bind("ext4")
    code, out, _err = check(capsys, str(ro), "--require", "xattr")
    assert code == EXIT_COULD_NOT_TELL
    assert out.splitlines()[0].startswith("could not tell: xattr (EROFS): read-only filesystem")


def test_missing_wins_over_could_not_tell(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    # ext4: reflink is missing; copy_shares_blocks is a plain "no" there too,
    # so use tmpfs, where it cannot be verified (no FIEMAP).
    d = lab.scratch_dir("tmpfs", "mixed")
    code, out, _err = check(capsys, str(d), "--require", "reflink,copy_shares_blocks")
    assert code == EXIT_FAILED
    assert "missing: reflink" in out and "could not tell: copy_shares_blocks" in out


@pytest.mark.parametrize("argv", [
    ["/nonexistent/cowprobe", "--require", "reflink"],
    [".", "--require", "warp-drive"],
    ["."],
    ["--require", "reflink"],
    [".", "--require", ","],
])
def test_usage_errors(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, err = check(capsys, *argv)
    assert code == EXIT_USAGE
    assert out == "" and err.startswith("cowprobe check: ")


def test_list_names_every_capability(capsys: pytest.CaptureFixture[str]) -> None:
    from probe.capabilities import CAPABILITY_NAMES

    code, out, _err = check(capsys, "--list")
    assert code == EXIT_OK
    for name in CAPABILITY_NAMES:
        assert name in out
