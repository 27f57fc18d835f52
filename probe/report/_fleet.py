"""Many machines' reports as one matrix: rows are capabilities, columns are
host and filesystem, each cell the state with its errno.

A report is per machine, but the people who need support data (a package
manager's maintainers, a CI platform) hold reports from many: the CI
system's own matrix runs the probes, and this joins their JSON documents.
It reads the documents only -- never the local machine -- so an errno
name is the reporting host's (macOS and Linux number ENOTSUP differently).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..capabilities import Status
from ._cells import capability_order, grouped_rows, options_cell, state_cell
from ._document import SCHEMA_NAME, SCHEMA_VERSION, utc_now
from ._host import describe_context

__all__ = [
    "MATRIX_SCHEMA_NAME",
    "MATRIX_SCHEMA_VERSION",
    "Answer",
    "Column",
    "Fleet",
    "ReportFileError",
    "Table",
    "fleet_document",
    "fleet_of",
    "read_report",
]

_STATES = frozenset(s.value for s in Status)


class ReportFileError(ValueError):
    """A file given to merge is not a readable report of this schema version."""


@dataclass(frozen=True)
class Answer:
    """One cell: a capability's state on one column, as that host said it."""

    name: str
    status: str
    errno: int | None
    errno_name: str | None
    reason: str | None
    value: int | str | None

    @property
    def text(self) -> str:
        return state_cell(self.name, self.status, self.errno_name, self.value)


@dataclass(frozen=True)
class Column:
    heading: str
    host: str
    #: The filesystem's label in its report (a lab kind, or PATH as given).
    filesystem: str
    path: str
    source: str
    #: Context rows, in order: (title, text) -- kernel, uid, options, ...
    context: tuple[tuple[str, str], ...]
    answers: Mapping[str, Answer]
    limitation: str | None


@dataclass(frozen=True)
class Table:
    title: str
    columns: tuple[Column, ...]
    #: (name, title, group) per capability row, grouped.
    rows: tuple[tuple[str, str, str], ...]

    def context_titles(self) -> list[str]:
        titles: list[str] = []
        for col in self.columns:
            titles += [t for t, _ in col.context if t not in titles]
        return titles

    def grid(self) -> tuple[list[str], list[list[str]]]:
        """(headers, rows) shaped like ``matrix()``'s: context rows, then a
        "[group]" row before each group's capabilities; "n/a" where a
        column's report did not probe that capability."""
        headers = ["", *(c.heading for c in self.columns)]
        rows = [[t, *(dict(c.context).get(t, "—") for c in self.columns)]
                for t in self.context_titles()]
        rows += grouped_rows(self.rows, len(self.columns), lambda name: [
            a.text if (a := c.answers.get(name)) else "n/a" for c in self.columns])
        return headers, rows


@dataclass(frozen=True)
class Fleet:
    tables: tuple[Table, ...]
    sources: tuple[tuple[str, Mapping[str, Any]], ...]

    def hosts(self) -> list[str]:
        return sorted({c.host for t in self.tables for c in t.columns})

    def notes(self) -> list[tuple[str, str | None, str]]:
        """(column heading, capability title or None, why): one per column
        that could not be probed, and one per answer that is not a yes."""
        out: list[tuple[str, str | None, str]] = []
        for table in self.tables:
            titles = {name: title for name, title, _g in table.rows}
            for c in table.columns:
                if c.limitation:
                    out.append((c.heading, None, c.limitation))
                    continue
                out += [(c.heading, titles.get(n, n), a.reason) for n, a in c.answers.items()
                        if a.status != Status.SUPPORTED.value and a.reason]
        return out


def read_report(path: str | Path) -> dict[str, Any]:
    """The JSON document in ``path`` if it is a report of this schema version;
    otherwise ReportFileError with one line saying what is wrong."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReportFileError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        why = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise ReportFileError(f"{path}: cannot read: {why}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise ReportFileError(f"{path}: not JSON ({err.msg} at line {err.lineno}): "
                              "not a cowprobe report") from None
    except RecursionError:
        # Valid JSON nested deeper than the decoder's recursion: no report
        # is (they are a few levels deep), and "[" * 100000 must not crash.
        raise ReportFileError(f"{path}: JSON nested too deeply: not a cowprobe report") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA_NAME:
        raise ReportFileError(f"{path}: not a cowprobe report (no \"schema\": \"{SCHEMA_NAME}\"; "
                              "make one with `cowprobe report PATH --format json`)")
    version = doc.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ReportFileError(f"{path}: report schema version {version!r}, this cowprobe merges "
                              f"version {SCHEMA_VERSION} (re-run the report with this cowprobe)")
    return doc


def _host_rows(doc: Mapping[str, Any]) -> list[tuple[str, str]]:
    return describe_context(doc["host"], doc["probe"], str(doc["cowprobe_version"]))


def _fs_rows(fs: Mapping[str, Any]) -> list[tuple[str, str]]:
    ident = fs["identity"]
    if ident is None:
        return [("filesystem", "—")]
    return [
        ("filesystem", ident["fstype"] or ident["magic_name"] or "?"),
        ("fs options", options_cell(ident["super_options"])),
        ("mount options", options_cell(ident["mount_options"])),
        ("access", "ro" if ident["read_only"] else "rw"),
    ]


def _answers(caps: Mapping[str, Any]) -> dict[str, Answer]:
    out = {}
    for name, c in caps.items():
        if c["status"] not in _STATES:
            raise ValueError(f"capability {name!r} has status {c['status']!r}")
        out[name] = Answer(name, c["status"], c["errno"], c["errno_name"], c["reason"],
                           c["value"])
    return out


def _columns(source: str, doc: Mapping[str, Any], kind: str,
             host_rows: Sequence[tuple[str, str]]) -> list[Column]:
    host = doc["host"]
    cols = []
    for entry in doc[kind]:
        if kind == "pairs":
            path = f"{entry['source']} → {entry['dest']}"
            fs_rows = [("filesystems", "same" if entry["same_filesystem"] else "different")]
            name = entry["label"]
        else:
            path = entry["path"]
            fs_rows = _fs_rows(entry)
            # A label that is just PATH says nothing on another machine
            # (CI's $TMPDIR); the filesystem type does.
            name = fs_rows[0][1] if entry["label"] == path else entry["label"]
        cols.append(Column(heading=f"{host['name']} · {name}", host=str(host["name"]),
                           filesystem=str(entry["label"]), path=str(path), source=source,
                           context=(*fs_rows, *host_rows),
                           answers=_answers(entry["capabilities"]),
                           limitation=entry["limitation"]))
    return cols


def _disambiguate(cols: list[Column]) -> list[Column]:
    """Headings are unique: two CI jobs on the same host name and
    filesystem get their file's name, then their path, appended."""
    out = list(cols)
    for extra in (lambda c: Path(c.source).name, lambda c: c.path):
        seen: dict[str, int] = {}
        for c in out:
            seen[c.heading] = seen.get(c.heading, 0) + 1
        out = [replace(c, heading=f"{c.heading} [{extra(c)}]") if seen[c.heading] > 1 else c
               for c in out]
    return out


def _rows(doc: Mapping[str, Any], kind: str) -> list[tuple[str, str, str]]:
    return [(name, str(c["title"]), str(c["group"]))
            for entry in doc[kind] for name, c in entry["capabilities"].items()]


def fleet_of(documents: Sequence[tuple[str, Mapping[str, Any]]]) -> Fleet:
    """The matrix of ``(source name, report document)`` pairs, in order.

    Raises ReportFileError naming the source whose document lacks a field
    the schema requires (read_report has already checked the version).
    """
    host_rows = []
    for source, doc in documents:
        try:
            host_rows.append(_host_rows(doc))
            if not all(isinstance(doc[k], list) for k in ("filesystems", "pairs")):
                raise TypeError("filesystems and pairs must be lists")
            str(doc["generated_at"])
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ReportFileError(f"{source}: not a valid version-{SCHEMA_VERSION} report "
                                  f"({type(err).__name__}: {err})") from None
    tables = []
    for kind, title in (("filesystems", "filesystems"), ("pairs", "between directories")):
        cols: list[Column] = []
        rows: list[tuple[str, str, str]] = []
        for (source, doc), context in zip(documents, host_rows, strict=True):
            try:
                cols += _columns(source, doc, kind, context)
                rows += _rows(doc, kind)
            except (KeyError, TypeError, ValueError, AttributeError) as err:
                raise ReportFileError(f"{source}: not a valid version-{SCHEMA_VERSION} report "
                                      f"({type(err).__name__}: {err})") from None
        tables.append(Table(title, tuple(_disambiguate(cols)), tuple(capability_order(rows))))
    # A table nobody reported into is left out (reports of --pair only have
    # no filesystem columns); one stays, so a matrix always has a table.
    return Fleet(tuple(t for t in tables if t.columns) or tuple(tables[:1]), tuple(documents))


MATRIX_SCHEMA_NAME = "cowprobe-matrix"
MATRIX_SCHEMA_VERSION = 1


def _answer_json(a: Answer | None) -> dict[str, Any] | None:
    if a is None:
        return None
    return {"status": a.status, "errno": a.errno, "errno_name": a.errno_name,
            "reason": a.reason, "text": a.text}


def fleet_document(fleet: Fleet) -> dict[str, Any]:
    """The merged matrix as JSON (``probe/matrix.schema.json``)."""
    from .. import __version__

    return {
        "schema": MATRIX_SCHEMA_NAME,
        "schema_version": MATRIX_SCHEMA_VERSION,
        "cowprobe_version": __version__,
        "generated_at": utc_now(),
        "sources": [{"file": src, "host": doc["host"]["name"],
                     "generated_at": doc["generated_at"],
                     "cowprobe_version": doc["cowprobe_version"]} for src, doc in fleet.sources],
        "tables": [{
            "title": t.title,
            "columns": [{"heading": c.heading, "host": c.host, "filesystem": c.filesystem,
                         "path": c.path, "source": c.source, "limitation": c.limitation,
                         "context": dict(c.context)} for c in t.columns],
            "rows": [{"name": name, "title": title, "group": group,
                      "cells": [_answer_json(c.answers.get(name)) for c in t.columns]}
                     for name, title, group in t.rows],
        } for t in fleet.tables],
    }
