"""Per-run state of the cowprobe plugin: strict mode and the labs built so far.

Its own module so the fixtures and the hooks share it without importing
each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import pytest

from probe.lab import Lab, LabUnavailable

__all__ = ["require", "strict_mode"]

#: set by pytest_configure (``--cowprobe-strict`` or CI=true)
STRICT: bool = False

#: the lanes whose FICLONE clones (an overlay's upper files clone where its
#: upper filesystem does: README's overlay table)
REFLINK_KINDS: tuple[str, ...] = ("btrfs", "xfs", "overlay-xfs", "overlay-btrfs")




class _Session:
    """Per-run state: the per-kind labs built so far and the tmp-fs redirect."""

    def __init__(self) -> None:
        self.labs: dict[str, Lab] = {}
        self.lab_errors: dict[str, str] = {}
        self.tmp_fs: str | None = None
        self.tmp_dir: Path | None = None
        self.saved_env: dict[str, str | None] = {}
        self.saved_tempdir: str | None = None
        self.saved_strict = False
        self.sizes: dict[str, int] = {}

    def lab_for(self, kind: str) -> Lab:
        """A lab holding ``kind``, built on first use; one per kind, so a
        missing mkfs.xfs never costs the btrfs tests."""
        if kind in self.labs:
            return self.labs[kind]
        if kind in self.lab_errors:
            _missing(self.lab_errors[kind])
        lab = Lab(kinds=(kind,), sizes_mb=self.sizes)
        try:
            lab.start()
        except LabUnavailable as err:
            self.lab_errors[kind] = f"cannot build a {kind} lab filesystem: {err}"
            _missing(self.lab_errors[kind])
        self.labs[kind] = lab
        return lab

    def close(self) -> None:
        errors = []
        for lab in self.labs.values():
            try:
                lab.close()
            except Exception as err:  # report every lab's teardown, not just the first
                errors.append(str(err))
        self.labs.clear()
        if errors:
            raise RuntimeError("cowprobe lab teardown: " + "; ".join(errors))


_SESSION_KEY = pytest.StashKey[_Session]()


def _session(config: pytest.Config) -> _Session:
    return config.stash.setdefault(_SESSION_KEY, _Session())


def strict_mode() -> bool:
    return STRICT


def require(ok: bool, reason: str) -> None:
    """Skip (or, in strict mode, fail) unless ``ok``; ``reason`` names what is missing."""
    if not ok:
        _missing(reason)


def _missing(reason: str) -> NoReturn:
    if STRICT:
        pytest.fail(f"missing prerequisite (strict mode): {reason}", pytrace=False)
    pytest.skip(reason)
