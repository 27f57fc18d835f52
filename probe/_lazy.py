"""Public names loaded on first use (PEP 562 module ``__getattr__``).

A package's ``__init__`` lists each public name with the submodule that
defines it, and calls ``lazy_exports(globals(), TABLE)``, which installs the
module's ``__getattr__`` and ``__dir__`` -- at run time only, so type
checkers keep seeing the real imports (a visible module ``__getattr__``
would make every misspelt name type-check as Any):
``import probe`` or ``import fakefs`` then costs almost nothing, and each
command pays only for the parts it touches (a whole `cowprobe materialize`
of 200 files is dominated by start-up).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from ._records import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(namespace: dict[str, Any], table: Mapping[str, str]) -> None:
    """Resolve ``table``'s names (name -> relative module, e.g. ``"._copy"``)
    on first use in the package whose globals are ``namespace``."""
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value  # later look-ups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(namespace.get("__all__", ())))

    namespace["__getattr__"] = __getattr__
    namespace["__dir__"] = __dir__
