"""Rendering capability reports: JSON (with its shipped, versioned JSON
Schema), Markdown for pull-request comments, rows for a terminal table,
and the fleet matrix that joins many machines' JSON reports (Markdown,
a self-contained HTML page, JSON).

Standard library only; the terminal table itself is drawn by the CLI.
The fleet matrix and the HTML page are imported on first use: a plain
`cowprobe report` never needs them, and start-up is most of its time.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._cells import capability_cell, identity_rows, matrix, pair_matrix, short_size
from ._document import (
    PROBE_REPETITIONS,
    SCHEMA_NAME,
    SCHEMA_VERSION,
    context_line,
    load_schema,
    to_document,
)
from ._host import host_context
from ._markdown import render_fleet_markdown, render_markdown

if TYPE_CHECKING:
    from ._fleet import (
        MATRIX_SCHEMA_NAME,
        MATRIX_SCHEMA_VERSION,
        Fleet,
        ReportFileError,
        fleet_document,
        fleet_of,
        read_report,
    )
    from ._html import render_html

_LAZY = {
    "MATRIX_SCHEMA_NAME": "_fleet",
    "MATRIX_SCHEMA_VERSION": "_fleet",
    "Fleet": "_fleet",
    "ReportFileError": "_fleet",
    "fleet_document": "_fleet",
    "fleet_of": "_fleet",
    "read_report": "_fleet",
    "render_html": "_html",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "MATRIX_SCHEMA_NAME",
    "MATRIX_SCHEMA_VERSION",
    "PROBE_REPETITIONS",
    "SCHEMA_NAME",
    "SCHEMA_VERSION",
    "Fleet",
    "ReportFileError",
    "capability_cell",
    "context_line",
    "fleet_document",
    "fleet_of",
    "host_context",
    "identity_rows",
    "load_schema",
    "matrix",
    "pair_matrix",
    "read_report",
    "render_fleet_markdown",
    "render_html",
    "render_markdown",
    "short_size",
    "to_document",
]
