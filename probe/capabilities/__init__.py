"""The filesystem capability probe: what a directory's filesystem really
does, measured by trying it (reflinks, links, xattrs, fallocate, names,
renameat2, locks, ...), each answer three-way -- supported, unsupported
(with the errno or the lie caught), or could not tell -- with its evidence.

Standard library only.
"""

from ._api import probe_capabilities, probe_pair, validate_directory
from ._context import ProbeContext
from ._data import GRANULE as PROBE_GRANULE
from ._identity import MAGIC_NAMES
from ._model import Capability, CapabilityReport, Identity, PairReport, ProbePathError, Status
from ._probe import (
    CAPABILITY_NAMES,
    PRIVATE_PREFIX,
    Hook,
    capability_specs,
    resolve_names,
    unavailable_pair,
    unavailable_report,
)

__all__ = [
    "CAPABILITY_NAMES",
    "MAGIC_NAMES",
    "PRIVATE_PREFIX",
    "PROBE_GRANULE",
    "Capability",
    "CapabilityReport",
    "Hook",
    "Identity",
    "PairReport",
    "ProbeContext",
    "ProbePathError",
    "Status",
    "capability_specs",
    "probe_capabilities",
    "probe_pair",
    "resolve_names",
    "unavailable_pair",
    "unavailable_report",
    "validate_directory",
]
