"""Rendering capability reports: JSON (with its shipped, versioned JSON
Schema), Markdown for pull-request comments, and rows for a terminal table.

Standard library only; the terminal table itself is drawn by the CLI.
"""

from ._cells import capability_cell, identity_rows, matrix, pair_matrix, short_size
from ._document import SCHEMA_NAME, SCHEMA_VERSION, load_schema, to_document
from ._markdown import render_markdown

__all__ = [
    "SCHEMA_NAME",
    "SCHEMA_VERSION",
    "capability_cell",
    "identity_rows",
    "load_schema",
    "matrix",
    "pair_matrix",
    "render_markdown",
    "short_size",
    "to_document",
]
