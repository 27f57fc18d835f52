"""Rendering capability reports: JSON (with its shipped, versioned JSON
Schema), Markdown for pull-request comments, rows for a terminal table,
and the fleet matrix that joins many machines' JSON reports (Markdown,
a self-contained HTML page, JSON).

Standard library only; the terminal table itself is drawn by the CLI.
Every public name is imported on first use: a plain `cowprobe report`
never needs the fleet matrix or the HTML page, `cowprobe materialize`
only the size formatter, and start-up is most of their time.
"""

from __future__ import annotations

from .._lazy import lazy_exports
from .._records import TYPE_CHECKING

if TYPE_CHECKING:
    from ._cells import capability_cell, identity_rows, matrix, pair_matrix
    from ._document import (
        PROBE_REPETITIONS,
        SCHEMA_NAME,
        SCHEMA_VERSION,
        context_line,
        load_schema,
        to_document,
    )
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
    from ._units import short_size

# Every name on first use: `cowprobe materialize` prints sizes with
# short_size and must not load the capability probe for it.
_LAZY = {
    "MATRIX_SCHEMA_NAME": "._fleet",
    "MATRIX_SCHEMA_VERSION": "._fleet",
    "PROBE_REPETITIONS": "._document",
    "SCHEMA_NAME": "._document",
    "SCHEMA_VERSION": "._document",
    "Fleet": "._fleet",
    "ReportFileError": "._fleet",
    "capability_cell": "._cells",
    "context_line": "._document",
    "fleet_document": "._fleet",
    "fleet_of": "._fleet",
    "host_context": "._host",
    "identity_rows": "._cells",
    "load_schema": "._document",
    "matrix": "._cells",
    "pair_matrix": "._cells",
    "read_report": "._fleet",
    "render_fleet_markdown": "._markdown",
    "render_html": "._html",
    "render_markdown": "._markdown",
    "short_size": "._units",
    "to_document": "._document",
}


lazy_exports(globals(), _LAZY)


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
