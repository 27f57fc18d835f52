"""The fleet matrix as one self-contained HTML page: inline CSS, no script,
no font or image to fetch, so it reads the same from a CI artifact opened
offline as from a web server. Colour carries the state, and the text
carries it too (a colour-blind reader or a black-and-white print loses
nothing); each cell's reason is its tooltip and is listed below the table.
"""

from __future__ import annotations

from html import escape

from ._fleet import Fleet, Table

__all__ = ["render_html"]

#: status -> (CSS class, legend text)
_STATES = {
    "supported": ("yes", "yes: tried, and the result was verified"),
    "unsupported": ("no", "no (ERRNO): the kernel refused with this errno; "
                          "no (checked): no errno, but checking showed it missing or wrong "
                          "(a wrong \"success\"); no (not an overlay): an overlayfs row "
                          "on a filesystem that is none"),
    "could-not-tell": ("cnt", "could not tell (ERRNO): the probe could not ask "
                              "(read-only, a sandbox's EPERM, EIO)"),
    None: ("na", "n/a: that machine's report did not probe it"),
}

_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1b1f24; background: #fff; }
h1 { font-size: 1.4em; margin: 0 0 .3em; }
h2 { font-size: 1.1em; margin: 1.5em 0 .5em; }
p.meta { color: #57606a; margin: 0 0 1em; }
table { border-collapse: collapse; }
th, td { border: 1px solid #d0d7de; padding: 3px 8px; text-align: center; white-space: nowrap; }
th { background: #f6f8fa; }
th.row, td.row { text-align: left; font-weight: normal; }
thead th { vertical-align: bottom; }
thead th span { display: block; color: #57606a; font-weight: normal; }
tr.group th { background: #eaeef2; text-align: left; font-weight: bold; }
tr.ctx td { color: #424a53; background: #fbfcfd; font-size: .92em;
           white-space: normal; max-width: 22em; overflow-wrap: anywhere; }
td.yes { background: #c8f0d0; color: #0a3d17; }
td.no { background: #ffd0cc; color: #6b0f08; }
td.cnt { background: #ffe9a8; color: #5a4000; }
td.na { background: #eeeeee; color: #6e7781; }
ul.legend { list-style: none; padding: 0; margin: .5em 0 1em; }
ul.legend li { margin: 2px 0; }
ul.legend span { display: inline-block; width: 1.2em; height: 1em; margin-right: .5em;
                 border: 1px solid #d0d7de; vertical-align: middle; }
span.yes { background: #c8f0d0; } span.no { background: #ffd0cc; }
span.cnt { background: #ffe9a8; } span.na { background: #eeeeee; }
details { margin-top: 1em; } details li { white-space: normal; }
"""


def _legend() -> str:
    items = "".join(f'<li><span class="{cls}"></span>{escape(text)}</li>'
                    for cls, text in _STATES.values())
    return f'<ul class="legend">{items}</ul>'


def _heading(text: str) -> str:
    host, sep, fs = text.partition(" · ")
    if not sep:
        return f"<th>{escape(text)}</th>"
    return f"<th>{escape(host)}<span>{escape(fs)}</span></th>"


def _table(table: Table) -> list[str]:
    cols = table.columns
    out = [f"<h2>{escape(table.title)}</h2>", "<table>", "<thead><tr><th></th>",
           *(_heading(c.heading) for c in cols), "</tr></thead>", "<tbody>"]
    for title in table.context_titles():
        ctx = "".join(f"<td>{escape(dict(c.context).get(title, '—'))}</td>" for c in cols)
        out.append(f'<tr class="ctx"><th class="row">{escape(title)}</th>{ctx}</tr>')
    group = None
    for name, title, grp in table.rows:
        if grp != group:
            out.append(f'<tr class="group"><th colspan="{len(cols) + 1}">{escape(grp)}</th></tr>')
            group = grp
        cells: list[str] = []
        for c in cols:
            a = c.answers.get(name)
            cls = _STATES[a.status if a else None][0]
            tip = f' title="{escape(a.reason)}"' if a and a.reason else ""
            cells.append(f'<td class="{cls}"{tip}>{escape(a.text if a else "n/a")}</td>')
        out.append(f'<tr><th class="row">{escape(title)}</th>{"".join(cells)}</tr>')
    out += ["</tbody>", "</table>"]
    return out


def _reasons(fleet: Fleet) -> list[str]:
    lines = [f"<li><b>{escape(heading)}</b>{f' · {escape(what)}' if what else ''}: "
             f"{escape(why)}</li>" for heading, what, why in fleet.notes()]
    if not lines:
        return []
    return ["<details><summary>Why not (one line each)</summary><ul>", *lines, "</ul></details>"]


def render_html(fleet: Fleet, *, title: str = "cowprobe support matrix") -> str:
    hosts = fleet.hosts()
    meta = (f"{len(fleet.sources)} report(s) from {len(hosts)} host(s): "
            + ", ".join(escape(h) for h in hosts))
    body = [f"<h1>{escape(title)}</h1>", f'<p class="meta">{meta}</p>', _legend()]
    for table in fleet.tables:
        body += _table(table)
    body += _reasons(fleet)
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        # No request may leave the page: nothing external to load, and the
        # policy says so to a browser that would try.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "style-src 'unsafe-inline'\">",
        f"<title>{escape(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head><body>", *body, "</body></html>", "",
    ])
