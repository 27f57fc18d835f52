"""The report's context, checked against the kernel: the filesystem's own
mount options (btrfs compress=zstd), the probing uid, the user namespace,
the seccomp filter, the kernel release, cowprobe's version, and the probe
payload and repetitions. Each report is made by a whole `cowprobe report`
process, as a user or a CI job runs it, under the condition being checked."""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from probe.capabilities import probe_capabilities
from probe.lab import Lab
from probe.pytest_plugin import require
from probe.report import (
    PROBE_REPETITIONS,
    SCHEMA_VERSION,
    load_schema,
    render_markdown,
    to_document,
)

COWPROBE = [sys.executable, "-m", "probe.cli"]

#: Installs N allow-everything seccomp filters, then execs argv: the
#: process (and what it execs; filters are inherited) runs under a real
#: kernel filter, which /proc/self/status counts.
SECCOMP_EXEC = r"""
import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
class Prog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
insn = ctypes.create_string_buffer(struct.pack("HBBI", 0x06, 0, 0, 0x7FFF0000))  # RET ALLOW
prog = Prog(1, ctypes.addressof(insn))
if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
    sys.exit(f"PR_SET_NO_NEW_PRIVS: {os.strerror(ctypes.get_errno())}")
for _ in range(int(sys.argv[1])):
    if libc.prctl(22, 2, ctypes.byref(prog), 0, 0) != 0:  # PR_SET_SECCOMP, MODE_FILTER
        sys.exit(f"PR_SET_SECCOMP: {os.strerror(ctypes.get_errno())}")
os.execv(sys.argv[2], sys.argv[2:])
"""


def validate(doc: Any) -> None:
    jsonschema.Draft202012Validator(load_schema()).validate(doc)


def report_json(path: Path, *prefix: str, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """`cowprobe report PATH --format json` as a whole process, run under
    ``prefix`` (unshare, a seccomp exec wrapper, ...)."""
    proc = subprocess.run([*prefix, *COWPROBE, "report", str(path), "--format", "json",
                           "--only", "reflink", *extra],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    validate(doc)
    return doc


def test_schema_is_version_two() -> None:
    schema = load_schema()
    assert SCHEMA_VERSION == 2
    assert schema["$id"] == f"urn:cowprobe:report:{SCHEMA_VERSION}"
    assert schema["properties"]["schema_version"]["const"] == SCHEMA_VERSION
    assert {"host", "probe"} <= set(schema["required"])
    jsonschema.Draft202012Validator.check_schema(schema)


@pytest.fixture
def zstd_btrfs() -> Iterator[Path]:
    """A lab btrfs of this test's own, remounted with compress=zstd (the
    shared session lab stays as every other test expects it)."""
    require(shutil.which("mount") is not None, "mount(8) is needed to remount with compress=zstd")
    with Lab(kinds=["btrfs"]) as lab:
        mnt = lab.path("btrfs")
        subprocess.run(["mount", "-o", "remount,compress=zstd", str(mnt)], check=True,
                       capture_output=True)
        yield lab.scratch_dir("btrfs", "zstd")


def test_filesystem_options_are_the_kernels(zstd_btrfs: Path) -> None:
    doc = report_json(zstd_btrfs)
    ident = doc["filesystems"][0]["identity"]
    # The kernel's own view, through the tool a person would use.
    fs_options = subprocess.run(["findmnt", "-n", "-o", "FS-OPTIONS", "--target", str(zstd_btrfs)],
                                capture_output=True, text=True, check=True).stdout.strip()
    assert ident["super_options"] == fs_options.split(",")
    assert any(o.startswith("compress=zstd") for o in ident["super_options"])
    # ...and the people-facing renderings show it, not just the generic options.
    md = render_markdown([probe_capabilities(zstd_btrfs, only=["reflink"], label="zstd")])
    row = next(line for line in md.splitlines() if line.startswith("| fs options |"))
    assert "compress=zstd" in row
    table = subprocess.run([*COWPROBE, "report", str(zstd_btrfs), "--only", "reflink"],
                           capture_output=True, text=True, check=True).stdout
    assert "compress=zstd" in next(line for line in table.splitlines() if "fs options" in line)


def test_host_context_in_the_initial_namespace(tmpfs_dir: Path) -> None:
    doc = report_json(tmpfs_dir, extra=("--host", "lab-machine"))
    host = doc["host"]
    assert host["name"] == "lab-machine"
    assert host["kernel"] == Path("/proc/sys/kernel/osrelease").read_text().strip()
    assert host["hostname"] == Path("/proc/sys/kernel/hostname").read_text().strip()
    assert doc["cowprobe_version"] == importlib.metadata.version("cowprobe")
    uid_map = [" ".join(line.split())
               for line in Path("/proc/self/uid_map").read_text().splitlines()]
    assert host["user_namespace"] == {"inside": False, "uid_map": uid_map}
    assert (host["uid"], host["euid"], host["gid"]) == (0, 0, 0)  # the suite runs as root


def test_uid_and_user_namespace(tmpfs_dir: Path) -> None:
    unshare = ["unshare", "--user", "--map-user=1234", "--map-group=1234"]
    probe = subprocess.run([*unshare, "cat", "/proc/self/uid_map"], capture_output=True,
                           text=True, check=False)
    require(probe.returncode == 0, f"unshare --user failed: {probe.stderr.strip()}")
    doc = report_json(tmpfs_dir, *unshare)
    host = doc["host"]
    assert (host["uid"], host["euid"], host["gid"]) == (1234, 1234, 1234)
    assert host["user_namespace"] == {"inside": True,
                                      "uid_map": [" ".join(probe.stdout.split())]}
    # The answers still come from the filesystem (tmpfs has no reflink).
    assert doc["filesystems"][0]["capabilities"]["reflink"]["errno_name"] == "EOPNOTSUPP"
    # The Markdown a person pastes says it too.
    md = subprocess.run([*unshare, *COWPROBE, "report", str(tmpfs_dir), "--only", "reflink",
                         "--format", "markdown"], capture_output=True, text=True, check=True)
    context = md.stdout.splitlines()[2]
    assert "probing uid: 1234" in context
    assert f"user namespace: child ({' '.join(probe.stdout.split())})" in context


@pytest.mark.parametrize("filters", [1, 2])
def test_seccomp_filter(tmpfs_dir: Path, filters: int) -> None:
    wrap = [sys.executable, "-c", SECCOMP_EXEC, str(filters)]
    kernel = subprocess.run([*wrap, shutil.which("cat") or "/bin/cat", "/proc/self/status"],
                            capture_output=True, text=True, check=False)
    require(kernel.returncode == 0, f"cannot install a seccomp filter: {kernel.stderr.strip()}")
    status = dict(line.split(":\t", 1) for line in kernel.stdout.splitlines() if ":\t" in line)
    assert (status["Seccomp"].strip(), status["Seccomp_filters"].strip()) == ("2", str(filters))
    doc = report_json(tmpfs_dir, *wrap)
    assert doc["host"]["seccomp"] == {"mode": "filter", "filters": filters}
    plain = report_json(tmpfs_dir)
    assert plain["host"]["seccomp"] == {"mode": "disabled", "filters": 0}


def test_payload_and_repetitions_are_what_the_probes_did(btrfs_dir: Path) -> None:
    runs: list[str] = []
    rep = probe_capabilities(btrfs_dir, hook=lambda name, _ctx: runs.append(name))
    doc = to_document([rep])
    probe = doc["probe"]
    # Each capability was tried exactly `repetitions` times.
    assert probe["repetitions"] == PROBE_REPETITIONS
    assert {runs.count(c.name) for c in rep.capabilities} == {probe["repetitions"]}
    # The range clone moves one granule: its evidence names the size.
    evidence = " ".join(rep["clone_range"].evidence)
    assert f"{probe['granule_bytes']} bytes" in evidence
