"""The JSON form of a report, and the JSON Schema it follows.

The schema ships with the package (``probe/report.schema.json``) so a
consumer can validate what it parses; ``SCHEMA_VERSION`` is raised whenever
a field is renamed or removed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from functools import cache
from typing import Any

from ..capabilities import PROBE_GRANULE, Capability, CapabilityReport, Identity, PairReport
from ._host import describe_context, host_context

__all__ = [
    "PROBE_REPETITIONS",
    "SCHEMA_NAME",
    "SCHEMA_VERSION",
    "context_line",
    "load_schema",
    "probe_parameters",
    "to_document",
    "utc_now",
]

SCHEMA_NAME = "cowprobe-report"
#: 2: ``host`` gained the probing process's context (name, ids, user
#: namespace, seccomp) and the document a ``probe`` object (payload sizes,
#: repetitions); both required, so a version-1 reader's
#: ``additionalProperties: false`` rejects a version-2 document.
SCHEMA_VERSION = 2

#: How often each capability is tried per report: once. The runner
#: (capabilities._probe) trusts one verified answer and never retries, so
#: a flaky filesystem shows as "could not tell", not as a majority vote.
PROBE_REPETITIONS = 1


def utc_now() -> str:
    """Now, UTC, ISO 8601 with microseconds (the schemas' generated_at)."""
    # time, not datetime: the same text, and one import fewer (~3 ms) on
    # every `cowprobe report --format json`.
    now = time.time_ns()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now // 1_000_000_000))
    return f"{stamp}.{now // 1000 % 1_000_000:06d}Z"


@cache
def _schema_text(name: str) -> str:
    from importlib import resources  # only when a schema is asked for, not per report

    return resources.files("probe").joinpath(name).read_text(encoding="utf-8")


def load_schema(name: str = "report") -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of ``to_document``'s output, or with
    ``name="matrix"`` of ``cowprobe report merge --format json``'s."""
    schema: dict[str, Any] = json.loads(_schema_text(f"{name}.schema.json"))
    return schema


def _capability(cap: Capability) -> dict[str, Any]:
    return {
        "title": cap.title,
        "group": cap.group,
        "status": cap.status.value,
        "errno": cap.errno,
        "errno_name": cap.errno_name,
        "reason": cap.reason,
        "evidence": list(cap.evidence),
        "seconds": round(cap.seconds, 6),
        "value": cap.value,
    }


def _identity(ident: Identity | None) -> dict[str, Any] | None:
    if ident is None:
        return None
    return {
        "fstype": ident.fstype,
        "magic": f"{ident.magic:#x}" if ident.magic is not None else None,
        "magic_name": ident.magic_name,
        "mount_point": ident.mount_point,
        "mount_options": list(ident.mount_options),
        "super_options": list(ident.super_options),
        "source": ident.source,
        "device": ident.device,
        "block_size": ident.block_size,
        "fragment_size": ident.fragment_size,
        "total_bytes": ident.total_bytes,
        "free_bytes": ident.free_bytes,
        "available_bytes": ident.available_bytes,
        "name_max": ident.name_max,
        "read_only": ident.read_only,
        # Why any of the fields above is null ("statvfs: EACCES ..."); empty
        # when the identity is complete.
        "unreadable": list(ident.unreadable),
    }


def _filesystem(rep: CapabilityReport) -> dict[str, Any]:
    return {
        "label": rep.label or rep.path,
        "path": rep.path,
        "real_path": rep.real_path,
        "identity": _identity(rep.identity),
        "limitation": rep.limitation,
        "leftover": rep.leftover,
        "seconds": round(rep.seconds, 6),
        "capabilities": {c.name: _capability(c) for c in rep.capabilities},
    }


def _pair(rep: PairReport) -> dict[str, Any]:
    return {
        "label": rep.label or f"{rep.source} -> {rep.dest}",
        "source": rep.source,
        "dest": rep.dest,
        "same_filesystem": rep.same_filesystem,
        "limitation": rep.limitation,
        "leftover": rep.leftover,
        "seconds": round(rep.seconds, 6),
        "capabilities": {c.name: _capability(c) for c in rep.capabilities},
    }


def probe_parameters() -> dict[str, int]:
    return {"granule_bytes": PROBE_GRANULE, "repetitions": PROBE_REPETITIONS}


def context_line(host_name: str | None = None) -> str:
    """This process's probing context in one line, for the table and the
    Markdown of a report made here and now."""
    from .. import __version__

    rows = describe_context(host_context(host_name), probe_parameters(), __version__)
    return " · ".join(f"{title}: {text}" for title, text in rows)


def to_document(reports: Sequence[CapabilityReport], pairs: Sequence[PairReport] = (),
                *, host_name: str | None = None) -> dict[str, Any]:
    """The report as JSON-ready data. ``host_name`` names the machine for
    `cowprobe report merge` (default: its hostname)."""
    from .. import __version__

    return {
        "schema": SCHEMA_NAME,
        "schema_version": SCHEMA_VERSION,
        "cowprobe_version": __version__,
        "generated_at": utc_now(),
        "host": host_context(host_name),
        "probe": probe_parameters(),
        "filesystems": [_filesystem(r) for r in reports],
        "pairs": [_pair(p) for p in pairs],
    }
