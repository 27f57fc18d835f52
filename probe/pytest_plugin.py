"""cowprobe's pytest plugin (entry point ``pytest11``).

Gives tests real filesystems from the lab and fault-injecting fakefs mounts.
Where a prerequisite is missing the test is skipped with a reason naming it --
unless strict mode is on (``--cowprobe-strict`` or ``CI=true``), where a
missing prerequisite is a failure: a CI job whose filesystem tests all
skipped must not read as green.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

__all__ = ["require", "strict_mode"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cowprobe")
    group.addoption(
        "--cowprobe-strict",
        action="store_true",
        default=None,
        help="fail (instead of skip) tests whose filesystem prerequisites are missing; "
        "on by default when CI=true",
    )


_STRICT: bool = False


def pytest_configure(config: pytest.Config) -> None:
    global _STRICT
    opt = config.getoption("--cowprobe-strict")
    _STRICT = bool(opt) if opt is not None else os.environ.get("CI", "").lower() == "true"


def strict_mode() -> bool:
    return _STRICT


def require(ok: bool, reason: str) -> None:
    """Skip (or, in strict mode, fail) unless ``ok``; ``reason`` names what is missing."""
    if not ok:
        _missing(reason)


def _missing(reason: str) -> NoReturn:
    if _STRICT:
        pytest.fail(f"missing prerequisite (strict mode): {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def cowprobe_lab() -> Iterator[object]:
    """The whole lab (btrfs, XFS reflink on/off, ext4, tmpfs), built once per session."""
    from probe.lab import Lab, LabUnavailable

    try:
        lab = Lab()
        lab.__enter__()
    except LabUnavailable as err:
        _missing(str(err))
    try:
        yield lab
    finally:
        lab.__exit__(None, None, None)


def _lab_dir(lab: object, kind: str, tmp_name: str) -> Path:
    from probe.lab import Lab

    assert isinstance(lab, Lab)
    return lab.scratch_dir(kind, tmp_name)
