"""The layout rules of HACKING.md, checked on the source tree itself.

Static, from the AST: an import inside a function counts as much as one at
the top (a lazy import is still a dependency), and so does
``importlib.import_module("name")`` with a constant name.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("probe", "fakefs")
# probe's integration layer: the only modules of probe allowed to import fakefs.
INTEGRATION = ("probe.pytest_plugin", "probe.conformance", "probe.cli")
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {
        _module_name(p): p
        for pkg in PACKAGES
        for p in sorted((ROOT / pkg).rglob("*.py"))
        if "__pycache__" not in p.parts
    }


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The most specific module of ours that ``name`` denotes, if any."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imported_names(mod: str, path: Path) -> Iterator[str]:
    is_pkg = path.name == "__init__.py"
    package = mod if is_pkg else mod.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts)
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            # `from pkg import sub` imports the submodule when there is one.
            for alias in node.names:
                yield f"{base}.{alias.name}"
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in ("import_module", "find_spec")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.args[0].value


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for mod, path in MODULES.items():
        edges = {_resolve(n) for n in _imported_names(mod, path)}
        graph[mod] = {e for e in edges if e is not None and e != mod}
    return graph


GRAPH = _graph()


def _external_imports(mod: str) -> set[str]:
    return {n.partition(".")[0] for n in _imported_names(mod, MODULES[mod])}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_lazy_imports() -> None:
    # The checker itself: the plugin imports fakefs only inside functions, and
    # the graph must still hold that edge, or every rule below passes vacuously.
    assert any(e.startswith("fakefs") for e in GRAPH["probe.pytest_plugin._fixtures"])
    assert "probe._outcome" in GRAPH["probe._reflink"]


def test_no_import_cycles() -> None:
    assert _cycles(GRAPH) == []


def test_probe_core_never_imports_fakefs() -> None:
    offenders = {
        mod: sorted(e for e in edges if e.startswith("fakefs"))
        for mod, edges in GRAPH.items()
        if mod.startswith("probe")
        and not any(mod == i or mod.startswith(i + ".") for i in INTEGRATION)
    }
    assert {m: e for m, e in offenders.items() if e} == {}


def test_fakefs_uses_only_probes_core() -> None:
    offenders = {
        mod: sorted(e for e in edges if any(e == i or e.startswith(i + ".") for i in INTEGRATION))
        for mod, edges in GRAPH.items()
        if mod.startswith("fakefs")
    }
    assert {m: e for m, e in offenders.items() if e} == {}


def test_fakefs_imports_no_pytest() -> None:
    assert [m for m in MODULES if m.startswith("fakefs") and "pytest" in _external_imports(m)] == []


def test_library_code_imports_only_the_standard_library() -> None:
    allowed_outside_stdlib = {"probe", "fakefs"}
    import sys

    stdlib = set(sys.stdlib_module_names)
    offenders = {}
    for mod in MODULES:
        if not mod.startswith("probe") or any(
            mod == i or mod.startswith(i + ".") for i in INTEGRATION
        ):
            continue
        extra = _external_imports(mod) - stdlib - allowed_outside_stdlib - {""}
        if extra:
            offenders[mod] = sorted(extra)
    assert offenders == {}


@pytest.mark.parametrize("top", ["probe", "fakefs", "docker"])
def test_no_module_over_400_lines(top: str) -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in sorted((ROOT / top).rglob("*.py"))
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_one_module_reads_mountinfo() -> None:
    readers = sorted(
        str(p.relative_to(ROOT))
        for top in ("probe", "fakefs", "docker")
        for p in (ROOT / top).rglob("*.py")
        if "/proc/self/mountinfo" in p.read_text() or '"mountinfo"' in p.read_text()
    )
    assert len(readers) == 1, readers


def test_nothing_else_switches_on_the_platform() -> None:
    switching = sorted(
        str(p.relative_to(ROOT))
        for top in ("probe", "fakefs")
        for p in (ROOT / top).rglob("*.py")
        if "sys.platform" in p.read_text()
    )
    assert switching == ["probe/_platform.py"]


# What a hook or fixture gets from pytest; an attribute of these whose name
# starts with "_" is pytest's private API, free to change in any release.
_PYTEST_OBJECTS = {"config", "item", "request", "session", "metafunc", "node", "parser",
                   "terminalreporter", "call", "factory"}


def _private_pytest_uses(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [
                a.name for a in node.names]
            found += [f"import {n}" for n in names if n.split(".")[0] == "_pytest"]
        elif (isinstance(node, ast.Attribute) and node.attr.startswith("_")
              and not node.attr.startswith("__")):
            owner = node.value
            name = owner.id if isinstance(owner, ast.Name) else (
                owner.attr if isinstance(owner, ast.Attribute) else "")
            if name in _PYTEST_OBJECTS:
                found.append(f"{name}.{node.attr} (line {node.lineno})")
    return found


def test_the_plugin_uses_only_public_pytest_api() -> None:
    offenders = {m: uses for m, p in MODULES.items() if m.startswith("probe.pytest_plugin")
                 if (uses := _private_pytest_uses(ast.parse(p.read_text())))}
    assert offenders == {}
    # The check itself sees what it looks for.
    seen = _private_pytest_uses(ast.parse("item.config._tmp_path_factory\nimport _pytest.x"))
    assert sorted(seen) == ["config._tmp_path_factory (line 1)", "import _pytest.x"]
