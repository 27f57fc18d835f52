"""A bad place the user named -- a file for a directory, a read-only mount,
a directory not ours to write -- is one "OPTION PATH: strerror" line and
exit 2 from `cowprobe lab` and `cowprobe conformance`, never a traceback,
and nothing is written anywhere."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from _cli import cowprobe
from _files import NOBODY, importable_copy, world_dir

from probe.lab import KINDS, missing_prerequisites
from probe.pytest_plugin import require


def test_lab_clean_on_a_file_base_dir(tmp_path: Path) -> None:
    base = tmp_path / "file"
    base.write_bytes(b"x")
    out = cowprobe("lab", "--base-dir", str(base), "clean")
    assert out.stderr == f"cowprobe lab clean: --base-dir {base}: Not a directory\n"
    assert out.returncode == 2
    assert base.read_bytes() == b"x"


def test_lab_up_on_a_read_only_base_dir(read_only_dir: Path) -> None:
    require(not missing_prerequisites(["tmpfs"]), "the lab's tmpfs lane")
    out = cowprobe("lab", "--base-dir", str(read_only_dir), "up", "--kinds", "tmpfs")
    assert out.stderr == f"cowprobe lab up: --base-dir {read_only_dir}: Read-only file system\n"
    assert out.returncode == 2
    assert out.stdout == ""


def test_lab_matrix_on_a_read_only_base_dir(read_only_dir: Path) -> None:
    why = missing_prerequisites(KINDS)
    require(not why, "; ".join(why))
    out = cowprobe("lab", "--base-dir", str(read_only_dir), "matrix")
    assert out.stderr == f"cowprobe lab matrix: --base-dir {read_only_dir}: Read-only file system\n"
    assert out.returncode == 2
    assert out.stdout == ""


def _conformance(src: Path, dst: Path, *extra: str,
                 **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return cowprobe("conformance", "--no-progress", "--source-dir", str(src),
                     "--dest-dir", str(dst), *extra, **kwargs)


def test_conformance_into_a_read_only_dest_dir(tmp_path: Path, read_only_dir: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    out = _conformance(src, read_only_dir)
    assert out.stderr == (
        f"cowprobe conformance: --dest-dir {read_only_dir}: Read-only file system\n")
    assert out.returncode == 2
    assert list(src.iterdir()) == []  # the source's work directory is gone again


def test_conformance_junit_on_a_read_only_mount(tmp_path: Path, read_only_dir: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    junit = read_only_dir / "j.xml"
    out = _conformance(src, dst, "--junit", str(junit))
    assert out.stderr == f"cowprobe conformance: --junit {junit}: Read-only file system\n"
    assert out.returncode == 2
    assert out.stdout == ""  # refused before the suite ran


_CLI_AS_NOBODY = "import sys; sys.path.insert(0, sys.argv[1]); from probe.cli import main; " \
                 "sys.exit(main(sys.argv[2:]))"


def test_conformance_as_another_user_from_an_unwritable_source_dir() -> None:
    # The CLI runs from a copy of the package: nobody cannot reach the
    # checkout (CI's fresh clone sits in a root-only directory).
    require(os.geteuid() == 0 and shutil.which("setpriv") is not None,
            "root and setpriv (to run as uid 65534)")
    with world_dir("cowprobe-robust-") as base:
        lib = importable_copy(base, ("probe", "fakefs"))
        src, dst = base / "src", base / "dst"
        src.mkdir(mode=0o755)  # root's: not writable for uid 65534
        dst.mkdir()
        os.chown(dst, 65534, 65534)
        out = subprocess.run(
            [*NOBODY, os.path.realpath(sys.executable), "-I", "-B", "-c", _CLI_AS_NOBODY,
             str(lib), "conformance", "--no-progress", "--source-dir", str(src),
             "--dest-dir", str(dst)],
            cwd=base, capture_output=True, text=True, check=False, timeout=300)
        assert out.stderr == f"cowprobe conformance: --source-dir {src}: Permission denied\n"
        assert out.returncode == 2
        assert list(src.iterdir()) == [] and list(dst.iterdir()) == []
