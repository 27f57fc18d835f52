"""Bad arguments are exit 2 with one line saying what is wrong, never a
traceback and never a run that ignores them: a --timeout past any sane
wait, a merge file nested too deeply to decode, `--only` naming nothing,
and `lab ACTION --base-dir` (where people type it) is accepted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _cli import cowprobe


@pytest.mark.parametrize(("argv", "value"), [
    (["report", "{d}"], "1e10"),
    (["check", "{d}", "--require", "reflink"], "9300000000"),
    (["report", "{d}"], "604800.5"),
])
def test_a_timeout_beyond_a_week_is_refused(tmp_path: Path, argv: list[str], value: str) -> None:
    out = cowprobe(*[a.format(d=tmp_path) for a in argv], "--timeout", value)
    assert out.returncode == 2
    assert out.stderr.splitlines()[-1] == (
        f"cowprobe {argv[0]}: error: argument --timeout: at most 604800 seconds (a week), "
        f"got {value!r}")
    assert out.stdout == "" and list(tmp_path.iterdir()) == []


def test_a_week_itself_is_a_timeout(tmp_path: Path) -> None:
    out = cowprobe("check", str(tmp_path), "--require", "xattr", "--timeout", "604800")
    assert out.returncode in (0, 1, 3), out.stderr
    assert list(tmp_path.iterdir()) == []


def test_merge_of_json_nested_too_deeply(tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100000 + "]" * 100000)
    out = cowprobe("report", "merge", str(deep))
    assert out.stderr == f"cowprobe report: {deep}: JSON nested too deeply: not a cowprobe report\n"
    assert out.returncode == 2
    assert out.stdout == ""


@pytest.mark.parametrize("only", [",", "", " , "])
def test_only_naming_no_capability_is_refused(tmp_path: Path, only: str) -> None:
    out = cowprobe("report", "--only", only, str(tmp_path))
    assert out.stderr == "cowprobe report: --only names no capability\n"
    assert out.returncode == 2
    assert out.stdout == "" and list(tmp_path.iterdir()) == []


def test_only_with_a_name_still_probes_just_that(tmp_path: Path) -> None:
    out = cowprobe("report", "--only", "reflink,", str(tmp_path), "--format", "json")
    assert out.returncode == 0, out.stderr
    (fs,) = json.loads(out.stdout)["filesystems"]
    assert list(fs["capabilities"]) == ["reflink"]


def test_base_dir_after_the_lab_action(tmp_path: Path) -> None:
    empty = tmp_path / "labs"
    empty.mkdir()
    out = cowprobe("lab", "clean", "--base-dir", str(empty), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"removed": []}
    # Used, not just accepted: a file there is refused by name.
    base = tmp_path / "file"
    base.write_bytes(b"x")
    out = cowprobe("lab", "up", "--kinds", "tmpfs", "--base-dir", str(base))
    assert out.stderr == f"cowprobe lab up: --base-dir {base}: Not a directory\n"
    assert out.returncode == 2
    # After the action wins over before it, as a later option does.
    out = cowprobe("lab", "--base-dir", str(base), "clean", "--base-dir", str(empty))
    assert out.returncode == 0, out.stderr
    assert out.stdout == "no stale labs\n"
