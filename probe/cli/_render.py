"""Terminal output for every subcommand: rich where installed, plain text
otherwise. One place, so each subcommand only says *what* to show."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

from probe._records import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, Protocol

__all__ = [
    "collapse_failures",
    "emit_json",
    "markdown_table",
    "print_table",
    "progress",
    "status_style",
]


def _rich_on(stream: Any, *, forced: bool | None = None) -> bool:
    """Draw with rich on ``stream``? On a terminal (unless ``forced`` says
    otherwise either way), and only if the ``cli`` extra is installed.

    Everything else (a pipe, a file, a CI log) gets plain aligned text, as
    git and ls do: stable lines for grep, no box glyphs, nothing folded at
    rich's assumed 80 columns -- and no import of rich, which costs 60-80 ms,
    a tenth of a whole `cowprobe materialize` of 10,000 files.
    """
    if forced is None:
        try:
            forced = bool(stream.isatty())
        except (AttributeError, ValueError):  # no isatty, or a closed stream
            forced = False
    if not forced:
        return False
    try:  # the library itself never imports rich
        import rich  # noqa: F401
    except ImportError:  # pragma: no cover - exercised only without the extra
        return False
    return True


_STYLES = {
    "pass": "green",
    "yes": "green",
    "supported": "green",
    "cloned": "green",
    "ok": "green",
    "fail": "bold red",
    "no": "red",
    "unsupported": "yellow",
    "error": "bold red",
    "n/a": "dim",
    # status_style() looks at the first word only: "could not tell ..."
    # cells are found under "could".
    "could": "magenta",
    "copied": "cyan",
    "vanished": "magenta",
}


def status_style(word: str) -> str:
    return _STYLES.get(word.split(" ", maxsplit=1)[0].lower(), "")


#: what a plain-text cell shows for a character that would break its line
#: or its column: C escapes, as `ls -b` writes names (the backslash too, so
#: the escaped text reads back as exactly one name)
_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _plain(cell: str) -> str:
    if cell.isprintable() and "\\" not in cell:
        return cell  # nearly every cell: no per-character work
    return "".join(ch if ch.isprintable() and ch != "\\" else _escape(ch) for ch in cell)


def _escape(ch: str) -> str:
    if ch in _ESCAPES:
        return _ESCAPES[ch]
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # a name's byte that is not UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def print_table(
    title: str | None,
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    file: Any = None,
    colour_cells: bool = True,
) -> None:
    """A table for people: rich on a terminal (cells whose first word is a
    known status word get its colour), plain aligned columns elsewhere."""
    out = file or sys.stdout
    rows = [list(r) for r in rows]
    if _rich_on(out):
        import rich.console
        import rich.markup
        import rich.table

        console = rich.console.Console(file=out, highlight=False)
        table = rich.table.Table(title=title, show_lines=False)
        for h in headers:
            table.add_column(h, overflow="fold")
        for r in rows:
            cells = [
                f"[{s}]{rich.markup.escape(c)}[/]"
                if colour_cells and (s := status_style(c))
                else rich.markup.escape(c)
                for c in r
            ]
            table.add_row(*cells)
        console.print(table)
        return
    # One row per line, every cell whole, never folded: a script reads a
    # row with one line read and finds a path on it unbroken. A control
    # character (a newline in a file name above all) is escaped, so it
    # cannot end a row early or pass for one.
    grid = [[_plain(c) for c in r] for r in [list(headers), *rows]]
    widths = [max(len(r[i]) for r in grid) for i in range(len(headers))]
    if title:
        print(_plain(title), file=out)
    for n, row in enumerate(grid):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), file=out)
        if n == 0:
            print("  ".join("-" * w for w in widths), file=out)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table (for CI summaries and issue comments)."""

    def cell(text: str) -> str:
        # A pipe would end the cell and a newline the row.
        return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", "<br>")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def collapse_failures(failures: Iterable[Sequence[str]]) -> list[str]:
    """One line per distinct failure: ``(status, path, errno, text)`` rows
    that differ only in the file name within one directory collapse into
    one line with a count (one unwritable worktree parent printed 20,101
    lines). Order of first appearance is kept."""
    groups: dict[tuple[str, str, str, str], list[str]] = {}
    for status, path, err, text in failures:
        key = (status, os.path.dirname(path), err, text)
        groups.setdefault(key, []).append(path)
    lines = []
    for (status, parent, err, text), paths in groups.items():
        if len(paths) == 1:
            where = paths[0]
        else:
            where = f"{os.path.join(parent, '*')} ({len(paths)} entries, first {paths[0]})"
        lines.append(f"{status}: {where}: {err} {text}".rstrip())
    return lines


def emit_json(document: Any, *, file: Any = None) -> None:
    import json  # here: most runs print no JSON, and start-up is timed

    # One write of the whole text: json.dump writes each token on its own
    # (1,500 writes for one report, through the guarded stdout).
    (file or sys.stdout).write(json.dumps(document, indent=2) + "\n")


if TYPE_CHECKING:
    # A type only: defining a Protocol at run time would import typing.
    class Progress(Protocol):
        def advance(self, n: int = 1, *, label: str | None = None) -> None: ...


class _Silent:
    def advance(self, n: int = 1, *, label: str | None = None) -> None:
        pass


@contextmanager
def progress(
    description: str, total: int | None, *, enabled: bool | None = None
) -> Iterator[Progress]:
    """A progress bar on stderr when it is a terminal (or ``enabled``)."""
    if not _rich_on(sys.stderr, forced=enabled):
        yield _Silent()
        return
    import rich.console
    import rich.progress

    with rich.progress.Progress(
        rich.progress.TextColumn("{task.description}"),
        rich.progress.BarColumn(),
        rich.progress.MofNCompleteColumn(),
        rich.progress.TimeElapsedColumn(),
        rich.progress.TextColumn("{task.fields[label]}"),
        console=rich.console.Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=total, label="")

        class _Bar:
            def advance(self, n: int = 1, *, label: str | None = None) -> None:
                bar.update(task, advance=n, label=label or "")

        yield _Bar()
