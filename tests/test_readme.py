"""The README's promises that CI depends on."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text, re.S)
    assert block, "README.md must open with a ```sh block of set-up commands"
    assert text.index(block.group(0)) < text.index("\n\n", text.index("# cowprobe")) + 3, (
        "the set-up commands must come first"
    )
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_opens_with_exactly_two_setup_commands() -> None:
    commands = _readme_commands()
    assert len(commands) == 2, commands
    main_job, tests = commands
    assert "cowprobe report --lab" in main_job
    assert "pytest" in tests


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    test_command = _readme_commands()[1]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci, f".ci/run must run the README's test command: {test_command!r}"
    assert any("ruff check" in line for line in ci)
    assert any("mypy --strict" in line for line in ci)


_MARK = "<!-- tests/test_readme.py runs this block -->\n```sh\n"


def _example_blocks() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    blocks = []
    for part in text.split(_MARK)[1:]:
        body = part.split("```", 1)[0]
        blocks.append([line for line in body.splitlines() if line.strip()])
    return blocks


def _sh(line: str, subst: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    for old, new in subst.items():
        line = line.replace(old, new)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run(["bash", "-c", line], capture_output=True, text=True, check=False,
                          cwd=cwd, env=env, timeout=120)


def test_readme_has_the_fakefs_examples() -> None:
    fuse, syscall = _example_blocks()
    assert [line.split()[1] for line in fuse] == ["mount", "fault", "trace", "unmount", "run"]
    assert all(line.startswith("fakefs run ") for line in syscall)


def test_readme_fakefs_mount_examples_run(tmp_path: Path) -> None:
    from fakefs._mounts import find_mount, unmount
    from probe.pytest_plugin import require_fakefs

    require_fakefs()
    backing, mnt, out = tmp_path / "backing", tmp_path / "mnt", tmp_path / "out"
    (backing / "blobs").mkdir(parents=True)
    (backing / "blobs" / "a").write_text("a\n")
    mnt.mkdir()
    subst = {"/srv/backing": str(backing), "/mnt/fake": str(mnt), "/tmp/out": str(out),
             "/tmp/trace.jsonl": str(tmp_path / "trace.jsonl")}
    fuse = _example_blocks()[0]
    try:
        results = [_sh(line, subst, tmp_path) for line in fuse]
    finally:
        info = find_mount(mnt)
        if info is not None and info.control is not None:
            unmount(mnt, info.mount_id)
    for line, res in zip(fuse[:4], results[:4], strict=True):
        assert res.returncode == 0, (line, res.stderr)
    assert json.loads(results[1].stdout)["rule"] == "lookup:blobs/a:vanish"
    # The run line: cp's own status (1) passes through, EXDEV reached it.
    assert results[4].returncode == 1 and "Invalid cross-device link" in results[4].stderr
    assert (tmp_path / "trace.jsonl").read_text().strip()
    assert find_mount(mnt) is None


def test_readme_syscall_examples_run(btrfs_dir: Path) -> None:
    import fakefs
    from probe import _linux
    from probe.pytest_plugin import require

    require(not fakefs.syscall_missing(), "; ".join(fakefs.syscall_missing()))
    data = os.urandom(64 * 1024)
    (btrfs_dir / "a").write_bytes(data)
    (btrfs_dir / "src").mkdir()
    for i in range(5):
        (btrfs_dir / "src" / f"f{i}").write_bytes(data[: 4096 * (i + 1)])
    os.sync()
    lines = _example_blocks()[1]
    results = [_sh(line, {}, btrfs_dir) for line in lines]
    assert results[0].returncode == 1 and "Invalid cross-device link" in results[0].stderr
    assert results[1].returncode == 0, results[1].stderr
    fd = os.open(btrfs_dir / "c", os.O_RDONLY)
    try:
        assert _linux.shared_bytes(fd) >= len(data)
    finally:
        os.close(fd)
    assert results[2].returncode == 0, results[2].stderr
    counters = json.loads(results[2].stderr.strip().splitlines()[-1])
    assert [r["hits"] for r in counters["syscall_rules"]] == [3]
    assert (btrfs_dir / "wt" / "f4").read_bytes() == data[: 4096 * 5]
