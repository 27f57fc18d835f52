"""`cowprobe report`: JSON validated against the shipped schema, Markdown
that renders as a table, the terminal table, bad input, and `--lab`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from probe.capabilities import CAPABILITY_NAMES, probe_capabilities, probe_pair, unavailable_report
from probe.cli import EXIT_OK, EXIT_USAGE, main
from probe.lab import KINDS, LANES, Lab
from probe.report import SCHEMA_VERSION, load_schema, render_markdown, to_document


def validate(doc: Any) -> None:
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(doc)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_schema_is_shipped_as_package_data() -> None:
    text = resources.files("probe").joinpath("report.schema.json").read_text()
    schema = json.loads(text)
    assert schema["properties"]["schema_version"]["const"] == SCHEMA_VERSION
    assert schema["$schema"].endswith("2020-12/schema")
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    assert '"*.json"' in pyproject.read_text()


def test_json_of_the_lab_validates(lab: Lab) -> None:
    reports = [probe_capabilities(lab.scratch_dir(k, "json"), label=k) for k in KINDS]
    reports.append(unavailable_report("(none)", "fakefs is not available: test", label="fake"))
    pairs = [probe_pair(lab.scratch_dir("btrfs", "a"), lab.scratch_dir("xfs", "b"))]
    doc = to_document(reports, pairs)
    validate(json.loads(json.dumps(doc)))
    fs = {f["label"]: f for f in doc["filesystems"]}
    assert fs["btrfs"]["capabilities"]["reflink"]["status"] == "supported"
    ext4 = fs["ext4"]["capabilities"]["reflink"]
    assert (ext4["status"], ext4["errno_name"]) == ("unsupported", "EOPNOTSUPP")
    assert fs["fake"]["identity"] is None
    assert set(fs["fake"]["capabilities"]) == set(CAPABILITY_NAMES)
    assert doc["pairs"][0]["capabilities"]["reflink"]["errno_name"] == "EXDEV"


def test_schema_rejects_what_it_must(lab: Lab) -> None:
    doc = to_document([probe_capabilities(lab.scratch_dir("btrfs", "bad"), only=["reflink"])])
    validate(doc)
    mutations: list[Callable[[dict[str, Any]], object]] = [
        lambda d: d.update(schema_version=1),
        lambda d: d["filesystems"][0]["capabilities"]["reflink"].update(status="maybe"),
        lambda d: d["filesystems"][0]["capabilities"]["reflink"].pop("evidence"),
        lambda d: d["filesystems"][0]["capabilities"]["reflink"].update(
            status="could-not-tell", reason=None),
        lambda d: d["filesystems"][0]["identity"].update(device="sda"),
    ]
    for mutate in mutations:
        bad = json.loads(json.dumps(doc))
        mutate(bad)
        with pytest.raises(jsonschema.ValidationError):
            validate(bad)


def test_cli_json(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = lab.scratch_dir("btrfs", "cli"), lab.scratch_dir("tmpfs", "cli")
    code, out, _err = run_cli(capsys, "report", str(a), str(b), "--pair", str(a), str(b),
                              "--format", "json")
    assert code == EXIT_OK
    doc = json.loads(out)
    validate(doc)
    assert [f["path"] for f in doc["filesystems"]] == [str(a), str(b)]
    assert doc["pairs"][0]["capabilities"]["reflink"]["errno_name"] == "EXDEV"
    assert os.listdir(a) == [] and os.listdir(b) == []


def _md_tables(md: str) -> list[list[list[str]]]:
    tables: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*md.splitlines(), ""]:
        if line.startswith("|"):
            cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
            current.append([c.strip() for c in cells])
        elif current:
            tables.append(current)
            current = []
    return tables


def test_markdown_renders(lab: Lab) -> None:
    reports = [probe_capabilities(lab.scratch_dir(k, "md"), label=k) for k in ("btrfs", "ext4")]
    reports.append(probe_capabilities(lab.readonly_bind("xfs"), label="xfs ro"))
    pairs = [probe_pair(lab.scratch_dir("btrfs", "a"), lab.scratch_dir("xfs", "b"),
                        label="btrfs → xfs")]
    md = render_markdown(reports, pairs)
    assert md.startswith("### ")
    tables = _md_tables(md)
    assert len(tables) == 2
    for table in tables:
        width = len(table[0])
        assert all(len(row) == width for row in table), table
        assert set(table[1][1]) <= set(":-")  # the delimiter row
    main = {row[0]: row[1:] for row in tables[0]}
    assert main[""] == ["btrfs", "ext4", "xfs ro"]
    assert main["reflink (FICLONE)"] == ["✅ yes", "❌ no (EOPNOTSUPP)",
                                         "❔ could not tell (EROFS)"]
    assert tables[1][2][0] == "btrfs → xfs" and "❌ no (EXDEV)" in tables[1][2]
    # One line of why for what is not a yes, folded away.
    assert "<details>" in md and "</details>" in md
    assert "**ext4** · reflink (FICLONE): FICLONE answered EOPNOTSUPP" in md
    assert "**xfs ro**: read-only filesystem" in md
    assert len(md) < 65536  # a GitHub comment's limit


def test_table(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = lab.scratch_dir("btrfs", "tbl"), lab.scratch_dir("ext4", "tbl")
    code, out, _err = run_cli(capsys, "report", str(a), str(b), "-v")
    assert code == EXIT_OK
    row = next(line for line in out.splitlines() if "reflink (FICLONE)" in line)
    assert re.search(r"yes\W+no \(EOPNOTSUPP\)", row), row
    assert "max name length" in out and "255 bytes" in out
    # --verbose: every answer's evidence, the call and what came back.
    assert "FICLONE clone-2 <- src-1 (reflink_at) -> unsupported EOPNOTSUPP" in out


@pytest.mark.parametrize("argv", [
    ["report"],
    ["report", "/nonexistent/cowprobe"],
    ["report", "/etc/hostname"],
    ["report", ".", "--only", "reflink,nosuch"],
    ["report", ".", "--pair", ".", "/nonexistent/cowprobe"],
])
def test_bad_input_is_a_usage_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, err = run_cli(capsys, *argv)
    assert code == EXIT_USAGE
    assert out == ""
    assert err.startswith("cowprobe report: ")
    assert "Traceback" not in err


def test_bad_path_later_in_the_list_writes_nothing(lab: Lab,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    d = lab.scratch_dir("btrfs", "first")
    code, _out, err = run_cli(capsys, "report", str(d), str(d / "missing"))
    assert code == EXIT_USAGE and "no such directory" in err
    assert os.listdir(d) == []


def our_lab_mounts() -> set[str]:
    # Only this process's labs: other engineers mount and unmount their own
    # things on this machine at the same time.
    mine = f"/cowprobe-lab-{os.getpid()}-"
    return {line.split(" ")[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if mine in line.split(" ")[4]}


def test_report_lab_end_to_end(capsys: pytest.CaptureFixture[str]) -> None:
    before = our_lab_mounts()
    code, out, _err = run_cli(capsys, "report", "--lab", "--format", "json")
    assert code == EXIT_OK
    doc = json.loads(out)
    validate(doc)
    labels = [f["label"] for f in doc["filesystems"]]
    assert labels == [*LANES, "fakefs (FUSE)"]
    caps = {f["label"]: f["capabilities"] for f in doc["filesystems"]}
    for kind, want in {"btrfs": "supported", "xfs": "supported", "xfs-noreflink": "unsupported",
                       "ext4": "unsupported", "tmpfs": "unsupported"}.items():
        assert caps[kind]["reflink"]["status"] == want
    fuse = caps["fakefs (FUSE)"]["reflink"]
    # fakefs mounted: the kernel says EOPNOTSUPP for FUSE; not mountable
    # here: a could-not-tell column with the reason, never a crash.
    assert (fuse["status"], fuse["errno_name"]) == ("unsupported", "EOPNOTSUPP") or (
        fuse["status"] == "could-not-tell" and "fakefs" in fuse["reason"])
    pairs = {p["label"]: p["capabilities"]["reflink"]["status"] for p in doc["pairs"]}
    assert pairs["btrfs → btrfs (bind mount)"] == "supported"
    assert pairs["btrfs → xfs"] == "unsupported"
    # The lab (and the fakefs mount on it) is gone again.
    assert our_lab_mounts() == before


#: Runs one subcommand in-process with only its own module registered and
#: prints the modules it loaded: what `cowprobe report PATH --format json`
#: and `cowprobe check` cost at start-up is what they import.
IMPORTS = r"""
import argparse, importlib, io, contextlib, json, sys
mod = importlib.import_module("probe.cli." + sys.argv[1])
parser = argparse.ArgumentParser()
mod.register(parser.add_subparsers())
args = parser.parse_args(sys.argv[1:])
with contextlib.redirect_stdout(io.StringIO()):
    args.func(args)
print(json.dumps(sorted(sys.modules)))
"""


@pytest.mark.parametrize("argv", [["report", "{d}", "--format", "json"],
                                  ["report", "{d}", "--format", "markdown"],
                                  ["check", "{d}", "--require", "reflink"]])
def test_subcommand_imports_only_what_it_uses(tmpfs_dir: Path, argv: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-c", IMPORTS, *(a.format(d=tmpfs_dir) for a in argv)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    loaded = set(json.loads(proc.stdout))
    assert "probe.capabilities" in loaded  # it did probe
    # (probe.cli._render may load: it imports rich only to draw on a terminal.)
    unneeded = {m for m in loaded if m.split(".")[0] in ("rich", "fakefs")
                or m.startswith(("probe.lab", "probe.conformance", "probe.report._fleet",
                                 "probe.report._html"))}
    assert not unneeded, sorted(unneeded)


_TERMINATED_MID_PROBE = """
import os, signal, sys
import probe.cli.report as report
real = report.probe_capabilities
def probing(*args, **kw):
    os.kill(os.getpid(), signal.SIGTERM)  # a CI job cancelled mid-probe
    return real(*args, **kw)
report.probe_capabilities = probing
from probe.cli import main
sys.exit(main(["report", sys.argv[1], "--format", "json"]))
"""


def test_sigterm_mid_probe_is_143_and_leaves_no_probe_dir(tmpfs_dir: Path) -> None:
    # One rule for every subcommand (probe.cli._signals): SIGTERM is
    # 128+15 with one line, never 130 "interrupted" as a Ctrl-C would be.
    out = subprocess.run([sys.executable, "-c", _TERMINATED_MID_PROBE, str(tmpfs_dir)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 128 + 15, out.stderr
    assert out.stderr.strip().splitlines()[-1] == "cowprobe: terminated (SIGTERM)"
    assert out.stdout == ""
    assert [p.name for p in tmpfs_dir.iterdir() if p.name.startswith(".cowprobe")] == []
