"""cowprobe's reflink library: clone files copy-on-write where the filesystem
can, know exactly why when it cannot, and copy safely either way.

Only the standard library is needed to import this package.

The public names are loaded on first use (PEP 562 module ``__getattr__``):
``import probe`` alone costs almost nothing, so a command that needs only the
materializer never pays for the capability probe, and ``cowprobe --help``
stays well under 100 ms. ``probe.X`` and ``from probe import X`` work as
before; type checkers see the real imports below.
"""

from __future__ import annotations

import sys
import types

from ._lazy import lazy_exports
from ._records import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

    from ._copy import (
        CopyResult,
        ReflinkUnavailableError,
        clone_or_copy,
        clonefile_or_copy,
    )
    from ._outcome import ReflinkOutcome, ReflinkResult, errno_name, leftovers
    from ._platform import SpecialFileError
    from ._reflink import reflink, try_reflink
    from ._support import filesystem_supports_reflink, probe_reflink
    from .capabilities import (
        Capability,
        CapabilityReport,
        PairReport,
        ProbePathError,
        Status,
        probe_capabilities,
        probe_pair,
    )
    from .materialize import (
        EntryResult,
        JobResult,
        JobStatus,
        MaterializeReport,
        MirrorReport,
        PairStats,
        materialize,
        mirror,
    )

# public name -> the submodule that defines it. One line per name, so an
# export added on another branch merges as one added line.
_LAZY = {
    "Capability": ".capabilities",
    "CapabilityReport": ".capabilities",
    "CopyResult": "._copy",
    "EntryResult": ".materialize",
    "JobResult": ".materialize",
    "JobStatus": ".materialize",
    "MaterializeReport": ".materialize",
    "MirrorReport": ".materialize",
    "PairReport": ".capabilities",
    "PairStats": ".materialize",
    "ProbePathError": ".capabilities",
    "ReflinkOutcome": "._outcome",
    "ReflinkResult": "._outcome",
    "ReflinkUnavailableError": "._copy",
    "SpecialFileError": "._platform",
    "Status": ".capabilities",
    "clone_or_copy": "._copy",
    "clonefile_or_copy": "._copy",
    "errno_name": "._outcome",
    "filesystem_supports_reflink": "._support",
    "leftovers": "._outcome",
    "materialize": ".materialize",
    "mirror": ".materialize",
    "probe_capabilities": ".capabilities",
    "probe_pair": ".capabilities",
    "probe_reflink": "._support",
    "reflink": "._reflink",
    "try_reflink": "._reflink",
}

__all__ = [
    "Capability",
    "CapabilityReport",
    "CopyResult",
    "EntryResult",
    "JobResult",
    "JobStatus",
    "MaterializeReport",
    "MirrorReport",
    "PairReport",
    "PairStats",
    "ProbePathError",
    "ReflinkOutcome",
    "ReflinkResult",
    "ReflinkUnavailableError",
    "SpecialFileError",
    "Status",
    "clone_or_copy",
    "clonefile_or_copy",
    "errno_name",
    "filesystem_supports_reflink",
    "leftovers",
    "materialize",
    "mirror",
    "probe_capabilities",
    "probe_pair",
    "probe_reflink",
    "reflink",
    "try_reflink",
]

__version__ = "0.1.0"

lazy_exports(globals(), _LAZY)

if not TYPE_CHECKING:

    class _Package(types.ModuleType):
        def __setattr__(self, name: str, value: Any) -> None:
            # ``probe.materialize`` is both a subpackage and the function it
            # exports. Importing the subpackage (``import probe.materialize._report``)
            # makes the import system bind the *module* here; the eager
            # ``from .materialize import materialize`` used to overwrite that,
            # and the lazy loading must too, or ``from probe import materialize``
            # would depend on import order.
            if isinstance(value, types.ModuleType) and _LAZY.get(name) == f".{name}":
                value = getattr(value, name)
            super().__setattr__(name, value)

    sys.modules[__name__].__class__ = _Package
