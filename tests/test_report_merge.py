"""`cowprobe report merge`: real reports from different lab filesystems,
each made by a whole `cowprobe report PATH --format json` process, joined
into one matrix -- Markdown with both as columns, JSON validated by its
schema, and an HTML page rendered by headless Chromium to a screenshot
whose pixels show the states' colours. Bad input is one line and exit 2.
The example workflow's merge job is parsed and its script run."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from probe.lab import Lab
from probe.pytest_plugin import require
from probe.report import load_schema

COWPROBE = [sys.executable, "-m", "probe.cli"]
ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "filesystems.yml"

#: The cell colours of probe/report/_html.py's stylesheet, as RGB.
CELL_RGB = {"supported": bytes.fromhex("c8f0d0"), "unsupported": bytes.fromhex("ffd0cc"),
            "could-not-tell": bytes.fromhex("ffe9a8")}


def cowprobe(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COWPROBE, *argv], capture_output=True, text=True, timeout=300,
                          check=False)


def make_report(path: Path, host: str, out: Path) -> dict[str, Any]:
    proc = cowprobe("report", str(path), "--format", "json", "--host", host)
    assert proc.returncode == 0, proc.stderr
    out.write_text(proc.stdout)
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


@pytest.fixture
def reports(btrfs_dir: Path, ext4_dir: Path, cowprobe_lab: Lab,
            tmp_path: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Three real reports: btrfs and ext4 "from two machines", and a
    read-only XFS (every answer "could not tell") from a third."""
    out = []
    for name, path in (("alpha", btrfs_dir), ("beta", ext4_dir),
                       ("gamma", cowprobe_lab.readonly_bind("xfs"))):
        f = tmp_path / f"{name}.json"
        out.append((f, make_report(path, name, f)))
    return out


def md_table(md: str, heading: str) -> list[list[str]]:
    lines = md.splitlines()
    start = lines.index(heading) + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
    return rows


def expected_cell(name: str, cap: dict[str, Any]) -> str:
    """What a cell must say, from the source report's own JSON."""
    tag = f" ({cap['errno_name']})" if cap["errno_name"] else ""
    if cap["status"] == "supported":
        return f"yes ({cap['value']} bytes)" if name == "max_name_length" else "yes"
    if cap["status"] == "unsupported":
        if tag:
            return f"no{tag}"
        return f"no ({cap['value']})" if isinstance(cap["value"], str) else "no (checked)"
    return f"could not tell{tag}"


def test_markdown_has_every_report_as_a_column(
        reports: list[tuple[Path, dict[str, Any]]]) -> None:
    proc = cowprobe("report", "merge", *(str(f) for f, _ in reports), "--format", "markdown")
    assert proc.returncode == 0, proc.stderr
    table = md_table(proc.stdout, "#### filesystems")
    assert table[0] == ["", "alpha · btrfs", "beta · ext4", "gamma · xfs"]
    width = len(table[0])
    assert all(len(r) == width for r in table)
    rows = {r[0]: r[1:] for r in table}
    for title in ("kernel", "probing uid", "user namespace", "seccomp", "fs options"):
        assert title in rows, title
    assert rows["kernel"][0].split()[1] == os.uname().release
    # Every capability cell is the state (and errno) its own report gave.
    caps = reports[0][1]["filesystems"][0]["capabilities"]
    for name, cap in caps.items():
        cells = rows[cap["title"]]
        for col, (_f, doc) in enumerate(reports):
            want = expected_cell(name, doc["filesystems"][0]["capabilities"][name])
            assert cells[col].split(" ", 1)[1] == want, (cap["title"], col, cells[col], want)
    assert rows["reflink (FICLONE)"] == ["✅ yes", "❌ no (EOPNOTSUPP)",
                                         "❔ could not tell (EROFS)"]
    assert "**gamma · xfs**: read-only filesystem" in proc.stdout


def test_json_matrix_validates(reports: list[tuple[Path, dict[str, Any]]]) -> None:
    proc = cowprobe("report", "merge", *(str(f) for f, _ in reports), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    schema = load_schema("matrix")
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(doc)
    table = doc["tables"][0]
    assert [c["host"] for c in table["columns"]] == ["alpha", "beta", "gamma"]
    reflink = next(r for r in table["rows"] if r["name"] == "reflink")
    assert [c["status"] for c in reflink["cells"]] == [
        d["filesystems"][0]["capabilities"]["reflink"]["status"] for _f, d in reports]
    assert reflink["cells"][1]["errno_name"] == "EOPNOTSUPP"


def test_same_host_and_filesystem_twice_get_distinct_columns(
        reports: list[tuple[Path, dict[str, Any]]], tmp_path: Path) -> None:
    first = reports[0][0]
    again = tmp_path / "again.json"
    shutil.copy(first, again)
    proc = cowprobe("report", "merge", str(first), str(again), "--format", "markdown")
    assert proc.returncode == 0, proc.stderr
    header = md_table(proc.stdout, "#### filesystems")[0]
    assert header == ["", "alpha · btrfs [alpha.json]", "alpha · btrfs [again.json]"]


def read_png(path: Path) -> tuple[int, int, list[bytes]]:
    """(width, height, RGB rows) of an 8-bit RGB/RGBA PNG, with the stdlib."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, ihdr = 8, bytearray(), None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
    assert ihdr is not None
    width, height, depth, colour = ihdr[:4]
    assert depth == 8 and colour in (2, 6), ihdr
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(bytes(idat))
    stride = width * bpp
    prev = bytearray(stride)
    rows = []
    for y in range(height):
        kind = raw[y * (stride + 1)]
        cur = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):  # undo the PNG row filter (RFC 2083 §6)
            a = cur[i - bpp] if i >= bpp else 0
            b = prev[i]
            if kind == 1:
                cur[i] = (cur[i] + a) & 255
            elif kind == 2:
                cur[i] = (cur[i] + b) & 255
            elif kind == 3:
                cur[i] = (cur[i] + ((a + b) >> 1)) & 255
            elif kind == 4:
                c = prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                cur[i] = (cur[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(b"".join(bytes(cur[i:i + 3]) for i in range(0, stride, bpp)))
        prev = cur
    return width, height, rows


def screenshot(html: Path, png: Path, size: tuple[int, int], profile: Path) -> None:
    chromium = shutil.which("chromium")
    require(chromium is not None, "Debian's chromium package (headless) is needed "
                                  "to render the HTML matrix")
    assert chromium is not None
    proc = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={profile}", f"--screenshot={png}",
         f"--window-size={size[0]},{size[1]}", html.as_uri()],
        capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_html_renders_in_chromium(reports: list[tuple[Path, dict[str, Any]]],
                                  tmp_path: Path) -> None:
    proc = cowprobe("report", "merge", *(str(f) for f, _ in reports), "--format", "html")
    assert proc.returncode == 0, proc.stderr
    page = proc.stdout
    # Self-contained: nothing to fetch, no script.
    for needle in ("<script", "src=", "href=", "url(", "@import", "http://", "https://"):
        assert needle not in page.lower(), needle
    for heading in ("alpha", "beta", "gamma"):
        assert f"<th>{heading}<span>" in page
    html = tmp_path / "matrix.html"
    html.write_text(page, encoding="utf-8")
    png = tmp_path / "matrix.png"
    size = (1000, 900)
    screenshot(html, png, size, tmp_path / "chromium-profile")
    width, height, rows = read_png(png)
    assert (width, height) == size
    pixels = Counter(px for row in rows for px in (row[i:i + 3] for i in range(0, len(row), 3)))
    assert len(pixels) > 50  # text, borders, cells: not a blank page
    # Each state's colour covers far more than its legend swatch (~300 px):
    # the cells themselves are painted (btrfs yes, ext4 no, read-only xfs
    # could not tell, all in the cloning rows at the top of the table).
    for state, rgb in CELL_RGB.items():
        assert pixels[rgb] > 3000, (state, pixels[rgb])


@pytest.mark.parametrize(("content", "message"), [
    (None, "no such file"),
    ("{not json", "not JSON"),
    ('{"hello": 1}', "not a cowprobe report"),
    ('[1, 2]', "not a cowprobe report"),
    ('{"schema": "cowprobe-report", "schema_version": 1}', "report schema version 1"),
    ('{"schema": "cowprobe-report", "schema_version": 2}', "not a valid version-2 report"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, content: str | None,
                                         message: str) -> None:
    f = tmp_path / "r.json"
    if content is not None:
        f.write_text(content)
    proc = cowprobe("report", "merge", str(f), "--format", "html")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"cowprobe report: {f}: ") and message in proc.stderr


def test_a_truncated_report_is_bad_input(reports: list[tuple[Path, dict[str, Any]]],
                                         tmp_path: Path) -> None:
    doc = json.loads(reports[0][0].read_text())
    del doc["filesystems"][0]["capabilities"]["reflink"]["status"]
    f = tmp_path / "cut.json"
    f.write_text(json.dumps(doc))
    proc = cowprobe("report", "merge", str(reports[1][0]), str(f))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith(f"cowprobe report: {f}: not a valid version-2 report")


@pytest.mark.parametrize("argv", [["merge"], ["merge", "x.json", "--lab"],
                                  ["merge", "x.json", "--only", "reflink"]])
def test_merge_usage_errors(argv: list[str]) -> None:
    proc = cowprobe("report", *argv)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("cowprobe report: ") and "Traceback" not in proc.stderr


def test_workflow_merges_its_matrix_jobs(reports: list[tuple[Path, dict[str, Any]]],
                                         tmp_path: Path) -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    jobs = workflow["jobs"]
    merge = jobs["support-matrix"]
    matrix_jobs = [name for name, job in jobs.items() if "matrix" in job.get("strategy", {})]
    assert sorted(merge["needs"]) == sorted(matrix_jobs)
    assert merge["if"] == "always()"
    # Every matrix job writes the report.json the merge job reads.
    for name in matrix_jobs:
        assert any("--format json" in s.get("run", "") and "report.json" in s.get("run", "")
                   for s in jobs[name]["steps"]), name
    # Run the merge step's script on two artifacts laid out as
    # download-artifact lays them out (reports/<artifact name>/).
    step = next(s for s in merge["steps"] if s.get("name") == "Merge the reports")
    for f, doc in reports[:2]:
        d = tmp_path / "reports" / f"tests-{doc['host']['name']}"
        d.mkdir(parents=True)
        shutil.copy(f, d / "report.json")
    summary = tmp_path / "summary.md"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shim = bindir / "cowprobe"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m probe.cli "$@"\n')
    shim.chmod(0o755)
    env = {**os.environ, "GITHUB_STEP_SUMMARY": str(summary),
           "PATH": f"{bindir}:{os.environ['PATH']}"}
    proc = subprocess.run(["bash", "-e", "-c", step["run"]], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    header = md_table(summary.read_text(), "#### filesystems")[0]
    assert header == ["", "alpha · btrfs", "beta · ext4"]
    assert "<table>" in (tmp_path / "support-matrix.html").read_text()
    jsonschema.validate(json.loads((tmp_path / "support-matrix.json").read_text()),
                        load_schema("matrix"))


def test_one_report_as_html(btrfs_dir: Path) -> None:
    proc = cowprobe("report", str(btrfs_dir), "--format", "html", "--host", "solo")
    assert proc.returncode == 0, proc.stderr
    assert "<th>solo<span>btrfs</span></th>" in proc.stdout
    assert '<td class="yes">yes</td>' in proc.stdout



def test_pairs_are_their_own_table_and_table_is_the_default(
        btrfs_dir: Path, xfs_dir: Path, tmp_path: Path) -> None:
    proc = cowprobe("report", "--pair", str(btrfs_dir), str(xfs_dir), "--format", "json",
                    "--host", "delta")
    assert proc.returncode == 0, proc.stderr
    f = tmp_path / "pair.json"
    f.write_text(proc.stdout)
    md = cowprobe("report", "merge", str(f), "--format", "markdown").stdout
    assert "#### filesystems" not in md  # this report probed no single directory
    pairs = md_table(md, "#### between directories")
    assert pairs[0] == ["", f"delta · {btrfs_dir} → {xfs_dir}"]
    rows = {r[0]: r[1:] for r in pairs}
    assert rows["filesystems"] == ["different"]
    assert rows["reflink"] == ["❌ no (EXDEV)"]
    table = cowprobe("report", "merge", str(f))
    assert table.returncode == 0 and "between directories" in table.stdout
    assert "no (EXDEV)" in table.stdout
