"""Who probed, and inside what: the context a report's answers depend on.

The same filesystem answers differently to different callers: FICLONE is
EPERM under an idmapped mount or a seccomp filter, a user namespace's root
is not the host's root, an older kernel says EXDEV where a newer clones.
A support report read on another machine is only meaningful with these
next to it. Every field is read from the kernel (procfs, uname, the
process's own ids); a field that cannot be read is None, never guessed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ._units import short_size

__all__ = ["describe_context", "host_context", "seccomp_state", "user_namespace"]

#: /proc/self/status "Seccomp:" values (kernel's SECCOMP_MODE_*).
_SECCOMP_MODES = {"0": "disabled", "1": "strict", "2": "filter"}

#: The initial user namespace maps every id to itself; any other map means
#: the process runs in a child namespace (rootless containers, unshare -U).
_IDENTITY_MAP = ("0", "0", "4294967295")


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def user_namespace(uid_map: str | None = None) -> dict[str, Any]:
    """``{"inside": bool | None, "uid_map": [...]}`` from /proc/self/uid_map;
    ``inside`` is None where there is no procfs to ask."""
    text = _read("/proc/self/uid_map") if uid_map is None else uid_map
    if text is None:
        return {"inside": None, "uid_map": []}
    lines = [" ".join(line.split()) for line in text.splitlines() if line.strip()]
    identity = len(lines) == 1 and tuple(lines[0].split()) == _IDENTITY_MAP
    return {"inside": not identity, "uid_map": lines}


def seccomp_state(status: str | None = None) -> dict[str, Any]:
    """``{"mode": "disabled"|"strict"|"filter"|None, "filters": int | None}``
    from /proc/self/status (Seccomp_filters exists since Linux 5.9)."""
    text = _read("/proc/self/status") if status is None else status
    fields: dict[str, str] = {}
    for line in (text or "").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    filters = fields.get("Seccomp_filters")
    return {
        "mode": _SECCOMP_MODES.get(fields.get("Seccomp", "")),
        "filters": int(filters) if filters is not None and filters.isdigit() else None,
    }


def host_context(name: str | None = None) -> dict[str, Any]:
    """The ``host`` object of a report document (schema version 2)."""
    # os.uname, not the platform module: the same answers (platform.system()
    # and node() are uname's sysname and nodename) without its import cost
    # on every `cowprobe report`.
    uname = os.uname()
    return {
        # The column heading of `cowprobe report merge`; the hostname unless
        # the caller names the machine (CI runners have random hostnames).
        "name": name or uname.nodename or "?",
        "hostname": uname.nodename,
        "system": uname.sysname,
        "kernel": uname.release,
        "kernel_version": uname.version,
        "machine": uname.machine,
        "uid": os.getuid(),
        "euid": os.geteuid(),
        "gid": os.getgid(),
        "user_namespace": user_namespace(),
        "seccomp": seccomp_state(),
    }


def _ids(host: Mapping[str, Any]) -> str:
    uid, euid = host["uid"], host["euid"]
    return str(uid) if uid == euid else f"{uid} (euid {euid})"


def _userns(host: Mapping[str, Any]) -> str:
    ns = host["user_namespace"]
    if ns["inside"] is None:
        return "?"
    # "child"/"initial", not yes/no: renderers colour a cell by its first
    # word, and this is context, not an answer.
    return f"child ({'; '.join(ns['uid_map'])})" if ns["inside"] else "initial"


def _seccomp(host: Mapping[str, Any]) -> str:
    sc = host["seccomp"]
    mode = sc["mode"] or "?"
    return f"{mode} ({sc['filters']})" if mode == "filter" and sc["filters"] else mode


def describe_context(host: Mapping[str, Any], probe: Mapping[str, Any],
                     version: str) -> list[tuple[str, str]]:
    """(title, text) rows for people, from a document's ``host`` and
    ``probe`` objects: the matrix's context rows, the report's context line."""
    return [
        ("kernel", f"{host['system']} {host['kernel']} {host['machine']}"),
        ("cowprobe", version),
        ("probing uid", _ids(host)),
        ("user namespace", _userns(host)),
        ("seccomp", _seccomp(host)),
        ("probe payload", f"{short_size(probe['granule_bytes'])} granules, "
                          f"{probe['repetitions']} try each"),
    ]
