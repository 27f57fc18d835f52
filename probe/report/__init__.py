"""Rendering capability reports: JSON (with its shipped, versioned JSON
Schema), Markdown for pull-request comments, rows for a terminal table,
and the fleet matrix that joins many machines' JSON reports (Markdown,
a self-contained HTML page, JSON).

Standard library only; the terminal table itself is drawn by the CLI.
"""

from ._cells import capability_cell, identity_rows, matrix, pair_matrix, short_size
from ._document import PROBE_REPETITIONS, SCHEMA_NAME, SCHEMA_VERSION, load_schema, to_document
from ._fleet import (
    MATRIX_SCHEMA_NAME,
    MATRIX_SCHEMA_VERSION,
    Fleet,
    ReportFileError,
    fleet_document,
    fleet_of,
    read_report,
)
from ._host import host_context
from ._html import render_html
from ._markdown import render_fleet_markdown, render_markdown

__all__ = [
    "MATRIX_SCHEMA_NAME",
    "MATRIX_SCHEMA_VERSION",
    "PROBE_REPETITIONS",
    "SCHEMA_NAME",
    "SCHEMA_VERSION",
    "Fleet",
    "ReportFileError",
    "capability_cell",
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
