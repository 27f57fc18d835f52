"""The public surface, pinned: each package's ``__all__`` against the
checked-in list in ``tests/public_api.txt``, every name resolving, and the
CLI and the Docker entrypoint using nothing but public names.

A change to the surface is a change to this list, made on purpose and seen
in review, never a side effect of moving code around.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PINNED = ROOT / "tests" / "public_api.txt"


def _pinned() -> dict[str, list[str]]:
    table: dict[str, list[str]] = {}
    for raw in PINNED.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            module, _, name = line.rpartition(":")
            table.setdefault(module, []).append(name)
    return table


PUBLIC = _pinned()


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_all_matches_the_pinned_list(module: str) -> None:
    mod = importlib.import_module(module)
    assert sorted(mod.__all__) == sorted(PUBLIC[module])


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_every_public_name_resolves(module: str) -> None:
    mod = importlib.import_module(module)
    missing = [n for n in mod.__all__ if getattr(mod, n, None) is None]
    assert missing == []


def _is_private(module: str) -> bool:
    return any(part.startswith("_") and part != "__main__" for part in module.split("."))


def _public_imports_only(path: Path, package: str, own: str | None = None) -> list[str]:
    """Imports of ours in ``path`` that reach past a public ``__all__``.

    ``package`` resolves relative imports; ``own`` is a package whose
    insides the file may use (the CLI's own helpers).
    """
    bad = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            parts = package.split(".")
            base = ".".join(parts[: len(parts) - (node.level - 1)])
            target = f"{base}.{node.module}" if node.module else base
        else:
            target = node.module or ""
        if not target.startswith(("probe", "fakefs")):
            continue
        if own and (target == own or target.startswith(own + ".")):
            continue
        if _is_private(target) and target not in _PLUMBING:
            bad.append(f"{path.name}: from {target} import ...")
            continue
        exported = set(importlib.import_module(target).__all__)
        bad += [
            f"{path.name}: {target}.{a.name}"
            for a in node.names
            if a.name not in exported
            and not a.name.startswith("__")
            and not importlib.util.find_spec(f"{target}.{a.name}")  # a public submodule
        ]
    return bad


# Process plumbing both console scripts share (fakefs's CLI cannot import
# cowprobe's): how a command's process ends, how wide its help is and how
# its types are declared without importing typing at run time, not library
# API.
_PLUMBING = frozenset({"probe._exit", "probe._helpwidth", "probe._records"})


def test_the_cli_uses_only_public_names() -> None:
    bad = []
    for path in sorted((ROOT / "probe" / "cli").glob("*.py")):
        bad += _public_imports_only(path, "probe.cli", own="probe.cli")
    assert bad == []


def test_the_docker_entrypoint_uses_only_public_names() -> None:
    assert _public_imports_only(ROOT / "docker" / "entrypoint.py", "") == []


def test_one_version_source() -> None:
    import tomllib
    from importlib.metadata import version

    import probe

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    # The version lives in probe/__init__.py alone; pyproject reads it from there.
    assert "version" not in project and "version" in project["dynamic"]
    assert version("cowprobe") == probe.__version__


def test_mypy_checks_the_oldest_supported_python() -> None:
    import tomllib

    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())
    oldest = conf["project"]["requires-python"].removeprefix(">=")
    assert conf["tool"]["mypy"]["python_version"] == oldest
    assert conf["tool"]["ruff"]["target-version"] == "py" + oldest.replace(".", "")
