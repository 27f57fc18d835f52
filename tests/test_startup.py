"""Start-up stays cheap: `import probe` and `cowprobe --help` load only what
they use (issue 15 §2). Checked by what a fresh interpreter has in
sys.modules, not by timing it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import probe
from probe import cli

# Heavy or optional parts no start-up path may pull in by accident.
_HEAVY = ("probe.lab", "probe.conformance", "probe.capabilities", "rich", "fakefs", "subprocess")


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport json, sys; print(json.dumps(sorted(sys.modules)))"],
        check=True, capture_output=True, text=True,
    ).stdout.splitlines()[-1]
    return set(json.loads(out))


def _heavy(mods: set[str]) -> list[str]:
    return sorted(m for m in mods if m.split(".")[0] in _HEAVY or m.startswith(_HEAVY))


def test_import_probe_loads_no_subsystem() -> None:
    mods = _modules_after("import probe")
    assert _heavy(mods) == []
    assert not any(m.startswith("probe.") for m in mods), sorted(mods)


def _modules_after_cli(argv: list[str]) -> set[str]:
    return _modules_after(
        "import contextlib, io\nfrom probe.cli import main\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        f"    main({argv!r})"
    )


def test_help_imports_no_subcommand() -> None:
    mods = _modules_after_cli(["--help"])
    assert _heavy(mods) == []
    assert not any(m.startswith("probe.cli.") for m in mods), sorted(mods)


def test_materialize_does_not_load_the_lab_or_conformance() -> None:
    mods = _modules_after_cli(["materialize", "--help"])
    assert "probe.cli.materialize" in mods
    assert [m for m in _heavy(mods) if m.startswith(("probe.lab", "probe.conformance"))] == []


@pytest.mark.parametrize("name", probe.__all__)
def test_every_public_name_loads(name: str) -> None:
    # Lazy loading must not change what the names are: each resolves, and to
    # the object its defining module exports.
    value = getattr(probe, name)
    module = sys.modules[f"probe{probe._LAZY[name]}"]
    assert value is getattr(module, name)


def test_materialize_is_the_function_whatever_was_imported_first() -> None:
    # probe.materialize is a subpackage and the function it exports; importing
    # the subpackage's internals first must not leave the module bound.
    mods = subprocess.run(
        [sys.executable, "-c",
         "import probe.materialize._report\nfrom probe import materialize\nimport probe\n"
         "print(callable(materialize), callable(probe.materialize))"],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    assert mods == ["True", "True"]


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = probe.no_such_name  # type: ignore[attr-defined]


def test_lazy_help_matches_each_subcommand() -> None:
    # The help listed without importing a subcommand is the help that
    # subcommand registers.
    full = cli.build_parser("*")
    lazy = cli.build_parser(None)

    def helps(parser: object) -> dict[str, str | None]:
        action = next(a for a in parser._subparsers._group_actions)  # type: ignore[attr-defined]
        return {c.dest: c.help for c in action._choices_actions}

    assert helps(lazy) == helps(full)
    assert set(helps(full)) == set(cli._SUBCOMMANDS)


@pytest.mark.parametrize("argv", [["--version"], ["clone", "--help"], ["lab", "--help"]])
def test_cli_still_parses(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 0
    assert "cowprobe" in capsys.readouterr().out


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["no-such-command"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
