"""Fixtures shared across the test modules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _files import write_file
from _kernel_view import immutable

from probe.lab import Lab


@pytest.fixture
def lab(cowprobe_lab: Lab) -> Lab:
    """The session's real-filesystem lab (the plugin's ``cowprobe_lab``)."""
    return cowprobe_lab


@pytest.fixture
def immutable_dir(lab: Lab) -> Iterator[Path]:
    """A btrfs directory holding ``dst`` (b"old bytes"), made immutable
    (``chattr +i``) for the test: every change in it is EPERM, even for root."""
    d = lab.scratch_dir("btrfs", "immutable")
    write_file(d / "dst", b"old bytes")
    with immutable(d):
        yield d
