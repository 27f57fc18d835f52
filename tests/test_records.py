"""probe._records.NamedTuple behaves as typing.NamedTuple does at run time,
without importing typing (the start-up cost tests/test_startup.py pins)."""

from __future__ import annotations

import pickle
import subprocess
import sys
import typing

import pytest

from probe import ReflinkOutcome, ReflinkResult
from probe._records import NamedTuple


class Point(NamedTuple):
    """A point."""

    x: int
    y: int = 0
    label: str = "p"

    def norm1(self) -> int:
        return abs(self.x) + abs(self.y)


class TypingPoint(typing.NamedTuple):
    x: int
    y: int = 0
    label: str = "p"


def test_a_record_is_the_tuple_typing_would_make() -> None:
    p = Point(3, -4)
    assert p == (3, -4, "p") == TypingPoint(3, -4)
    assert Point._fields == TypingPoint._fields == ("x", "y", "label")
    assert Point._field_defaults == TypingPoint._field_defaults == {"y": 0, "label": "p"}
    assert p._replace(label="q") == (3, -4, "q")
    assert p._asdict() == {"x": 3, "y": -4, "label": "p"}
    assert Point._make([1, 2, "z"]).norm1() == 3
    assert p.norm1() == 7
    assert Point.__doc__ == "A point."
    assert Point.__mro__ == (Point, tuple, object)
    assert Point.__qualname__ == "Point" and Point.__module__ == __name__
    assert list(Point.__annotations__) == ["x", "y", "label"]
    assert repr(p) == "Point(x=3, y=-4, label='p')"
    with pytest.raises(AttributeError):
        p.x = 1  # type: ignore[misc]


def test_records_pickle_by_name_as_the_library_types_do() -> None:
    # Results cross process boundaries (multiprocessing, pytest-xdist).
    assert pickle.loads(pickle.dumps(Point(1))) == Point(1)  # noqa: S301 (our own bytes)
    result = ReflinkResult(ReflinkOutcome.UNSUPPORTED, 95)
    again = pickle.loads(pickle.dumps(result))  # noqa: S301
    assert type(again) is ReflinkResult and again == result and again.errno_name == "EOPNOTSUPP"


def test_what_typing_refuses_is_refused() -> None:
    with pytest.raises(TypeError, match="non-default field"):

        class Bad(NamedTuple):
            a: int = 1
            b: int  # type: ignore[misc]

    with pytest.raises(AttributeError, match="_replace"):

        class Worse(NamedTuple):
            a: int

            def _replace(self) -> None:  # type: ignore[misc]
                pass


def test_the_library_types_are_made_without_typing() -> None:
    code = ("import sys, probe._copy, probe.materialize, probe.materialize._procs\n"
            "print('typing' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout.strip()
    assert out == "False"
