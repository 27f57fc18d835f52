"""cowprobe's reflink library: clone files copy-on-write where the filesystem
can, know exactly why when it cannot, and copy safely either way.

Only the standard library is needed to import this package.
"""

from ._copy import CopyResult, ReflinkUnavailableError, clone_or_copy, clonefile_or_copy
from ._outcome import ReflinkOutcome, ReflinkResult, errno_name
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
    "materialize",
    "mirror",
    "probe_capabilities",
    "probe_pair",
    "probe_reflink",
    "reflink",
    "try_reflink",
]

__version__ = "0.1.0"
