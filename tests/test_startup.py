"""Start-up stays cheap: `import probe` and `cowprobe --help` load only what
they use (issue 15 §2). Checked by what a fresh interpreter has in
sys.modules, not by timing it."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import probe
from probe import cli

# Heavy or optional parts no start-up path may pull in by accident.
_HEAVY = ("probe.lab", "probe.conformance", "probe.capabilities", "rich", "fakefs", "subprocess")


def _modules_after(code: str) -> set[str]:
    # Listed by repr, not json: whether json was loaded is itself checked.
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys; print(sorted(sys.modules))"],
        check=True, capture_output=True, text=True,
    ).stdout.splitlines()[-1]
    return set(ast.literal_eval(out))


def _heavy(mods: set[str]) -> list[str]:
    return sorted(m for m in mods if m.split(".")[0] in _HEAVY or m.startswith(_HEAVY))


def test_import_probe_loads_no_subsystem() -> None:
    mods = _modules_after("import probe")
    assert _heavy(mods) == []
    assert {m for m in mods if m.startswith("probe.")} == {"probe._lazy", "probe._records"}
    # typing is ~3 ms, and typing.NamedTuple compiles a ForwardRef per field
    # (probe._records): only type checkers need it.
    assert "typing" not in mods


def test_import_fakefs_loads_no_part_of_it() -> None:
    mods = _modules_after("import fakefs")
    assert {m for m in mods if m.startswith(("probe.", "fakefs."))} == {
        "probe._lazy", "probe._records"}
    assert "subprocess" not in mods and "dataclasses" not in mods


def test_fakefs_run_without_a_mount_loads_no_fuse_client() -> None:
    # `fakefs run -- CMD` under syscall rules only: its start-up is paid by
    # every run, and the FUSE client and the mount table are not needed.
    mods = _modules_after(
        "import contextlib, io\nfrom fakefs.cli import main\n"
        "with contextlib.redirect_stderr(io.StringIO()):\n"
        "    assert main(['run', '--fault', 'fsync:no-such-name:EIO', '--', 'true']) == 0"
    )
    assert "fakefs._syscall._spawn" in mods
    assert "shutil" not in mods  # argparse's help formatter would load it (probe._helpwidth)
    assert "random" not in mods  # ~2 ms, for p= rules only (fakefs._rules.schedule)
    loaded = sorted(m for m in mods if m.startswith(("fakefs._client", "fakefs._mounts",
                                                     "fakefs._daemon", "probe._mounttable")))
    assert loaded == []


def test_materialize_into_a_pipe_loads_neither_rich_nor_shutil_nor_json(tmp_path: Path) -> None:
    # rich draws only on a terminal; a run whose output goes to a pipe or a
    # log gets plain text and does not pay rich's import.
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"a")
    mods = _modules_after_cli(["materialize", "--no-progress", str(src), str(tmp_path / "wt")])
    assert (tmp_path / "wt" / "a").read_bytes() == b"a"
    assert _heavy(mods) == []
    # Neither is needed for a run that prints no JSON: argparse's own help
    # formatter would load shutil (probe._helpwidth), and json is for --json.
    assert "shutil" not in mods and "json" not in mods
    # dataclasses (with inspect, ast, dis, tokenize) is ~12 ms, and each
    # @dataclass class ~1 ms more: the types on this path are NamedTuples
    # and slotted classes instead.
    assert "dataclasses" not in mods
    assert "typing" not in mods  # see test_import_probe_loads_no_subsystem


def test_clone_into_a_pipe_loads_no_dataclasses(tmp_path: Path) -> None:
    (tmp_path / "src").write_bytes(b"a")
    mods = _modules_after_cli(["clone", str(tmp_path / "src"), str(tmp_path / "dst")])
    assert (tmp_path / "dst").read_bytes() == b"a"
    assert _heavy(mods) == []
    assert "dataclasses" not in mods and "json" not in mods


def test_the_file_api_loads_no_dataclasses(tmp_path: Path) -> None:
    # What a library caller of the clone and materialize functions pays.
    src, wt = tmp_path / "src", tmp_path / "wt"
    src.mkdir()
    (src / "a").write_bytes(b"a")
    mods = _modules_after(
        "import probe\n"
        f"probe.clone_or_copy({str(src / 'a')!r}, {str(tmp_path / 'b')!r})\n"
        f"probe.try_reflink({str(src / 'a')!r}, {str(tmp_path / 'c')!r})\n"
        f"assert probe.materialize([({str(src / 'a')!r}, {str(wt / 'a')!r})]).ok\n"
        f"assert probe.mirror({str(src)!r}, [{str(tmp_path / 'wt2')!r}]).ok"
    )
    assert (wt / "a").read_bytes() == (tmp_path / "wt2" / "a").read_bytes() == b"a"
    assert _heavy(mods) == []
    assert "dataclasses" not in mods


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


def test_tables_are_rich_on_a_terminal_and_plain_elsewhere() -> None:
    import io
    import os

    from probe.cli._render import print_table

    rows = [["cloned", "10"], ["failed", "0"]]
    plain = io.StringIO()
    print_table("materialize", ["", "count"], rows, file=plain)
    # Aligned columns, one row per line, nothing drawn.
    assert plain.getvalue().splitlines() == ["materialize", "        count", "------  -----",
                                             "cloned  10", "failed  0"]
    # A long cell continues under its own column, the row still on one line.
    wide = io.StringIO()
    print_table(None, ["name", "value", "x"], [["opts", "a" * 70, "1"]], file=wide)
    assert wide.getvalue().splitlines() == [
        "name  value" + " " * 67 + "x", "----  " + "-" * 70 + "  -",
        "opts  " + "a" * 70 + "  1"]  # never folded: one row per line
    leader, follower = os.openpty()
    with os.fdopen(follower, "w", encoding="utf-8") as tty:
        print_table("materialize", ["", "count"], rows, file=tty)
    with os.fdopen(leader, "rb") as f:
        drawn = os.read(f.fileno(), 65536).decode()
    assert "│" in drawn and "cloned" in drawn


def test_console_scripts_flush_and_run_exit_handlers(tmp_path: Path) -> None:
    # entry() leaves with os._exit (no interpreter teardown): what a user
    # sees must not change -- every line of output arrives, the exit status
    # is main()'s, and atexit handlers (the lab's safety net) still run.
    marker = tmp_path / "atexit-ran"
    for module, argv, status in (("probe.cli", ["check", "--list"], 0),
                                 ("fakefs.cli", ["run", "--fault", "fsync:x:EIO", "--",
                                                 sys.executable, "-c", "raise SystemExit(3)"], 3)):
        marker.unlink(missing_ok=True)
        code = (f"import atexit, pathlib, sys\n"
                f"atexit.register(lambda: pathlib.Path({str(marker)!r}).write_text('ran'))\n"
                f"from {module} import entry\nsys.argv = ['x', *{argv!r}]\nentry()")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=False, timeout=60)
        assert out.returncode == status, out.stderr
        assert marker.read_text() == "ran"
        if module == "probe.cli":
            assert "reflink" in out.stdout and out.stdout.endswith("\n")
        else:
            assert json.loads(out.stderr.splitlines()[-1])["syscall_rules"]
