"""Typed records without importing ``typing`` at run time.

``import typing`` is ~3 ms of a CLI run on this project's 2-core CI machine
(it brings its own helpers and compiles nothing we use), and
``typing.NamedTuple`` compiles a ``ForwardRef`` for every field of every
record under ``from __future__ import annotations`` -- together ~4 ms of a
``cowprobe materialize`` whose whole job, for 200 files, takes 6 ms in GNU
cp. Type checkers see the real ``typing.NamedTuple`` (``TYPE_CHECKING`` is
true for them by name); the interpreter gets the same class made by
``collections.namedtuple``, the way ``typing`` itself makes it: fields from
the annotations in order, trailing defaults, methods and docstring copied,
namedtuple's own attributes protected.

Modules import ``TYPE_CHECKING`` from here too and keep their
annotation-only names (``Any``, ``NoReturn``, ``Protocol`` classes) under it.
"""

from __future__ import annotations

import collections

TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import NamedTuple
else:
    # What typing refuses in a NamedTuple body, for the same reason: each
    # would silently break the tuple that collections.namedtuple built.
    _PROHIBITED = frozenset(
        {"__new__", "__init__", "__slots__", "__getnewargs__", "_fields",
         "_field_defaults", "_make", "_replace", "_asdict", "_source"}
    )
    _SPECIAL = frozenset({"__module__", "__name__", "__qualname__", "__annotations__"})

    class _RecordMeta(type):
        def __new__(mcls, typename, bases, ns):
            if not bases:  # NamedTuple itself, below
                return super().__new__(mcls, typename, bases, ns)
            if bases != (NamedTuple,):
                raise TypeError("can only inherit from NamedTuple")
            fields = list(ns.get("__annotations__", {}))
            defaults = []
            for name in fields:
                if name in ns:
                    defaults.append(ns[name])
                elif defaults:
                    raise TypeError(f"non-default field {name} follows a default field")
            record = collections.namedtuple(
                typename, fields, defaults=defaults, module=ns["__module__"]
            )
            record.__qualname__ = ns.get("__qualname__", typename)
            record.__annotations__ = dict(ns.get("__annotations__", {}))
            for key, value in ns.items():
                if key in _PROHIBITED:
                    raise AttributeError(f"cannot overwrite NamedTuple attribute {key}")
                if key not in _SPECIAL and key not in fields:
                    setattr(record, key, value)
            return record

    class NamedTuple(metaclass=_RecordMeta):
        """Base of a typed record (see the module docstring)."""

__all__ = ["TYPE_CHECKING", "NamedTuple"]
