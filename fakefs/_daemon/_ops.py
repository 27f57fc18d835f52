"""The pyfuse3 Operations of a fakefs mount: the handler groups combined."""

from __future__ import annotations

from ._base import ROOT
from ._dirs import DirOps
from ._entries import EntryOps
from ._files import FileOps

__all__ = ["ROOT", "FakeOps"]


class FakeOps(EntryOps, FileOps, DirOps):
    """A passthrough over the backing directory, every operation behind the
    fault gate and every backing access relative to an O_PATH handle."""
