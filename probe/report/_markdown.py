"""The report as Markdown sized for a pull-request comment: the matrix,
the pairs, and one line of "why" for everything that is not a plain yes
(full evidence stays in the JSON, which has no size limit)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..capabilities import CapabilityReport, PairReport, Status
from ._cells import matrix, pair_matrix
from ._document import context_line

if TYPE_CHECKING:
    from ._fleet import Fleet

__all__ = ["render_fleet_markdown", "render_markdown"]

_MARK = {"yes": "✅", "no": "❌", "could": "❔"}


def _cell(text: str) -> str:
    mark = _MARK.get(text.split(" ", maxsplit=1)[0]) if text else None
    text = text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")
    return f"{mark} {text}" if mark else text


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, marks: bool) -> list[str]:
    fmt = _cell if marks else (lambda s: s.replace("|", "\\|"))
    out = ["| " + " | ".join(h.replace("|", "\\|") for h in headers) + " |",
           "|" + "|".join(":---" if i == 0 else ":---:" for i in range(len(headers))) + "|"]
    for r in rows:
        if r[0].startswith("[") and not any(r[1:]):
            out.append("| **" + r[0].strip("[]") + "** |" + " |" * (len(r) - 1))
        else:
            out.append("| " + " | ".join([r[0], *(fmt(c) for c in r[1:])]) + " |")
    return out


def render_markdown(reports: Sequence[CapabilityReport], pairs: Sequence[PairReport] = (),
                    *, title: str = "cowprobe filesystem report",
                    context: str | None = None) -> str:
    """``context``: the line under the title (default: this process's
    kernel, uid, user namespace, seccomp -- the reports were made here)."""
    lines = [f"### {title}", "", context if context is not None else context_line(), ""]
    if reports:
        headers, rows = matrix(reports)
        lines += _table(headers, rows, marks=True)
        lines.append("")
    if pairs:
        headers, rows = pair_matrix(pairs)
        lines += ["#### Between directories", ""]
        lines += _table(headers, rows, marks=True)
        lines.append("")
    notes: list[str] = []
    everything: list[CapabilityReport | PairReport] = [*reports, *pairs]
    for rep in everything:
        label = rep.label or (rep.path if isinstance(rep, CapabilityReport)
                              else f"{rep.source} → {rep.dest}")
        if rep.limitation:
            notes.append(f"- **{label}**: {rep.limitation}")
            continue
        for cap in rep.capabilities:
            if cap.status is not Status.SUPPORTED and cap.reason:
                notes.append(f"- **{label}** · {cap.title}: {cap.reason}")
        if rep.leftover:
            notes.append(f"- **{label}**: ⚠️ {rep.leftover}")
    return "\n".join(lines + _details(notes))


def _details(notes: Sequence[str]) -> list[str]:
    if not notes:
        return []
    return ["<details><summary>Why not (one line each)</summary>", "", *notes, "",
            "</details>", ""]


def render_fleet_markdown(fleet: Fleet, *, title: str = "cowprobe support matrix") -> str:
    """The merged matrix (``cowprobe report merge``) for a job summary."""
    hosts = fleet.hosts()
    lines = [f"### {title}", "",
             f"{len(fleet.sources)} report(s) from {len(hosts)} host(s): {', '.join(hosts)}", ""]
    for table in fleet.tables:
        headers, rows = table.grid()
        lines += [f"#### {table.title}", "", *_table(headers, rows, marks=True), ""]
    notes = [f"- **{heading}**{f' · {what}' if what else ''}: {why}"
             for heading, what, why in fleet.notes()]
    return "\n".join(lines + _details(notes))
