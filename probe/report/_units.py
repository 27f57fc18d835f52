"""Sizes for people (reports and command summaries): one formatter, and
no import beyond it, so a command printing one size loads nothing else."""

from __future__ import annotations

__all__ = ["short_size"]


def short_size(n: int | None) -> str:
    if n is None:
        return "?"  # statvfs failed: could not tell (Identity.unreadable says why)
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover - loop always returns
