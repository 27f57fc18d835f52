"""The per-mount daemon: ``python -m fakefs._daemon BACKING MOUNTPOINT ...``.

The only part of fakefs that imports pyfuse3 and trio. Layout: ``_nodes``
(nodes and their O_PATH handles), ``_gate`` (the fault gate around every
operation), ``_delivery`` (did a failure reach the caller's syscall),
``_base`` (shared state, reply attributes), the handlers by concern
(``_entries``, ``_files``, ``_dirs``), ``_ops`` (them combined),
``_control`` (the control socket), ``_main`` (the entry point).
"""

from ._main import main

__all__ = ["main"]
