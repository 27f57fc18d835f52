"""The report as rows and cells: shared by the terminal table and Markdown.

A cell's first word is its status ("yes", "no", "could not tell"), which
is what the terminal colours and what a reader scans for; the errno
follows in parentheses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from ..capabilities import Capability, CapabilityReport, Identity, PairReport, Status
from ._units import short_size

__all__ = [
    "capability_cell",
    "capability_order",
    "identity_rows",
    "matrix",
    "options_cell",
    "pair_matrix",
    "state_cell",
]


def state_cell(name: str, status: str, errno_name: str | None,
               value: int | str | None = None) -> str:
    """One answer as a cell. Takes the JSON's strings, not a Capability, so
    a merged report shows each machine's own errno name (macOS and Linux
    number ENOTSUP differently)."""
    if status == Status.SUPPORTED.value:
        if isinstance(value, int) and name == "max_name_length":
            return f"yes ({value} bytes)"
        return "yes"
    tag = f" ({errno_name})" if errno_name else ""
    if status == Status.UNSUPPORTED.value:
        # No errno: checking found it missing (a call "succeeded" and the
        # result was wrong), or a word for why there was nothing to try
        # (an overlayfs row on a filesystem that is none).
        if tag:
            return f"no{tag}"
        return f"no ({value})" if isinstance(value, str) else "no (checked)"
    return f"could not tell{tag}"


def capability_cell(cap: Capability | None) -> str:
    if cap is None:
        return "n/a"
    return state_cell(cap.name, cap.status.value, cap.errno_name, cap.value)


def _ellipsize(text: str, width: int) -> str:
    # Sources like a FUSE daemon's control-socket path would widen the
    # whole column; the full text is in the JSON.
    if len(text) <= width:
        return text
    keep = width - 1
    return text[: keep // 2] + "…" + text[-(keep - keep // 2):]


def options_cell(options: Sequence[str]) -> str:
    """Mount options minus "rw"/"ro"/"relatime", which are on nearly every
    mount (and "access" says rw/ro): what is left distinguishes this one.
    Used for the per-mount options and for the filesystem's own (super)
    options, where btrfs keeps compress=, XFS its log and quota settings."""
    shown = [o for o in options if o and o not in ("rw", "ro", "relatime")]
    return ",".join(shown) or "defaults"


def _fstype(ident: Identity) -> str:
    name = ident.fstype or "?"
    if ident.magic_name and ident.magic_name.split("/")[-1] not in name:
        name += f" [{ident.magic_name}]"
    return name


def identity_rows(reports: Sequence[CapabilityReport]) -> list[list[str]]:
    def col(fn: Callable[[Identity], str]) -> list[str]:
        return [fn(r.identity) if r.identity is not None else "—" for r in reports]

    return [
        ["filesystem", *col(_fstype)],
        ["device", *col(lambda i: f"{_ellipsize(i.source or '?', 24)} ({i.device})")],
        ["mount options", *col(lambda i: options_cell(i.mount_options))],
        ["fs options", *col(lambda i: options_cell(i.super_options))],
        ["block size", *col(lambda i: "?" if i.block_size is None else str(i.block_size))],
        ["size", *col(lambda i: short_size(i.total_bytes))],
        ["free", *col(lambda i: short_size(i.available_bytes))],
        # "rw"/"ro" rather than yes/no: a status colour on "read-only: no"
        # would paint a perfectly good mount red.
        ["access", *col(lambda i: "ro" if i.read_only else "rw")],
    ]


def capability_order(seen: Iterable[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """(name, title, group) once each, groups kept together in the order
    they first appear: reports probed with different ``--only`` lists (or
    by different cowprobe versions) still give one heading per group."""
    groups: dict[str, list[tuple[str, str, str]]] = {}
    for row in seen:
        members = groups.setdefault(row[2], [])
        if all(m[0] != row[0] for m in members):
            members.append(row)
    return [row for members in groups.values() for row in members]


def matrix(reports: Sequence[CapabilityReport], *,
           with_identity: bool = True) -> tuple[list[str], list[list[str]]]:
    """(headers, rows): one column per report, one row per capability,
    grouped, in the probe's order."""
    headers = ["", *(r.label or r.path for r in reports)]
    rows: list[list[str]] = identity_rows(reports) if with_identity else []
    order = capability_order((c.name, c.title, c.group) for r in reports for c in r.capabilities)
    rows += grouped_rows(order, len(reports),
                         lambda name: [capability_cell(r.get(name)) for r in reports])
    return headers, rows


def grouped_rows(order: Iterable[tuple[str, str, str]], width: int,
                 cells: Callable[[str], list[str]]) -> list[list[str]]:
    """One row per (name, title, group) of ``order`` -- its title, then
    ``cells(name)`` -- with a "[group]" row (``width`` empty cells) before
    each group: the shape of every capability table, one report or many."""
    rows: list[list[str]] = []
    group = None
    for name, title, grp in order:
        if grp != group:
            rows.append([f"[{grp}]", *([""] * width)])
            group = grp
        rows.append([title, *cells(name)])
    return rows


def pair_matrix(pairs: Sequence[PairReport]) -> tuple[list[str], list[list[str]]]:
    titles: list[tuple[str, str]] = []
    for p in pairs:
        for c in p.capabilities:
            if (c.name, c.title) not in titles:
                titles.append((c.name, c.title))
    headers = ["from → to", "filesystems", *(t for _n, t in titles)]
    rows = []
    for p in pairs:
        caps = {c.name: c for c in p.capabilities}
        rows.append([p.label or f"{p.source} → {p.dest}",
                     "same" if p.same_filesystem else "different",
                     *(capability_cell(caps.get(n)) for n, _t in titles)])
    return headers, rows
