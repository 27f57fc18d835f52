"""Violations found in modules this suite may not fix (their authors were
still editing them): matched here so the run stays readable, reported in
full (file, line, schedule, proposed fix) in the torture report, and counted
separately in the summary. A test with only known violations is an xfail;
an unknown one fails. Remove an entry once its fix lands (the xfail then
turns into a pass)."""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["KNOWN", "split_known"]

KNOWN: tuple[tuple[str, re.Pattern[str], str], ...] = ()


def split_known(problems: Sequence[str]) -> tuple[list[str], list[str]]:
    """(unknown, known) violations."""
    unknown: list[str] = []
    known: list[str] = []
    for p in problems:
        hit = any(p.startswith(w) and rx.search(p) for w, rx, _ in KNOWN)
        (known if hit else unknown).append(p)
    return unknown, known
