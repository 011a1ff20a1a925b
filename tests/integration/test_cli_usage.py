"""Every command and sub-command of `formation`, found by walking the Typer tree (a new command is covered
without touching this file): `--help` exits 0 with its usage; an unknown option, a missing argument and a wrong
type each exit 2 with one `error:` line on stderr and nothing on stdout, before the command body runs.

In this process through `formation.cli.app.main` (what the entry point calls), plus a few runs of the installed
entry point in processes of their own (in CI, the fresh virtual environment `.ci/run` builds)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer.main

from formation.cli.app import _register, app, main

_register()
TREE = typer.main.get_command(app)


def _leaves(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every runnable command as (words after `formation`, its Click command), groups walked."""
    if hasattr(command, "list_commands"):
        for name in sorted(command.commands):
            yield from _leaves(command.commands[name], (*path, name))
    else:
        yield path, command


COMMANDS = dict(_leaves(TREE))
GROUPS = [(), *sorted({path[:i] for path in COMMANDS for i in range(1, len(path))})]


def _filler(param: Any) -> list[str]:
    """Words that satisfy a required parameter without meaning anything (the command body never runs)."""
    value = "1" if param.bare_type() in ("int", "float") else "x"
    return [param.opts[0], value] if param.param_type_name == "option" else [value]


def _required_words(command: Any, skip: str | None = None) -> list[str]:
    words: list[str] = []
    for param in command.params:
        if param.required and param.name != skip:
            words += _filler(param)
    return words


@dataclass(frozen=True)
class Ran:
    """One in-process run: exit code and what it printed."""

    code: int
    out: str
    err: str


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    monkeypatch.chdir(tmp_path)  # a command that ran by mistake would write here, not in the repository

    def call(*args: str) -> Ran:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return Ran(code, out, err)

    return call


def _one_error_line(ran: Ran, *words: str) -> None:
    lines = ran.err.splitlines()
    assert ran.code == 2, ran
    assert len(lines) == 1 and lines[0].startswith("error: "), ran.err
    assert ran.out == "", ran.out
    for word in words:
        assert word in lines[0], (word, lines[0])


def test_the_tree_has_every_documented_command() -> None:
    names = {" ".join(path) for path in COMMANDS}
    documented = {"demo", "sim serve", "recipe validate", "recipe show", "recipe list", "run launch", "run list"}
    documented |= {"run show", "run abort", "run resume", "grade", "export", "chamber hold"}
    assert documented <= names, documented - names


@pytest.mark.parametrize("path", [*GROUPS, *COMMANDS], ids=lambda p: " ".join(p) or "formation")
def test_help_exits_0_with_usage(run: Any, path: tuple[str, ...]) -> None:
    ran = run(*path, "--help")
    assert ran.code == 0, ran
    assert "Usage:" in ran.out and ran.err == "", ran


@pytest.mark.parametrize("path", GROUPS, ids=lambda p: " ".join(p) or "formation")
def test_an_unknown_command_is_one_line(run: Any, path: tuple[str, ...]) -> None:
    _one_error_line(run(*path, "no-such-command"), "no-such-command", "--help")


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_an_unknown_option_is_one_line(run: Any, path: tuple[str, ...]) -> None:
    command = COMMANDS[path]
    _one_error_line(run(*path, *_required_words(command), "--no-such-option"), "--no-such-option")


MISSING = [(path, p.name) for path, c in COMMANDS.items() for p in c.params if p.required]


@pytest.mark.parametrize(("path", "name"), MISSING, ids=[f"{' '.join(p)} {n}" for p, n in MISSING])
def test_a_missing_argument_is_one_line(run: Any, path: tuple[str, ...], name: str) -> None:
    command = COMMANDS[path]
    _one_error_line(run(*path, *_required_words(command, skip=name)), "Missing")


TYPED = [
    (path, p.name)
    for path, c in COMMANDS.items()
    for p in c.params
    if p.bare_type() in ("int", "float") and not getattr(p, "is_flag", False)
]


@pytest.mark.parametrize(("path", "name"), TYPED, ids=[f"{' '.join(p)} {n}" for p, n in TYPED])
@pytest.mark.parametrize("bad", ["abc", "1e999999"])
def test_a_wrong_type_is_one_line(run: Any, path: tuple[str, ...], name: str, bad: str) -> None:
    command = COMMANDS[path]
    param = next(p for p in command.params if p.name == name)
    words = [param.opts[0], bad] if param.param_type_name == "option" else [bad]
    rest = _required_words(command, skip=name)
    ran = run(*path, *(words + rest if param.param_type_name == "argument" else rest + words))
    assert ran.code == 2, ran
    lines = ran.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), ran.err


def test_the_typed_parameters_are_found() -> None:
    # The walk must see the numeric parameters, or the wrong-type test would pass by testing nothing.
    found = {(" ".join(path), name) for path, name in TYPED}
    assert {("run show", "job"), ("sim serve", "port"), ("demo", "scale"), ("chamber hold", "setpoint")} <= found


def _entry_point() -> str:
    script = shutil.which("formation", path=str(Path(sys.executable).parent)) or shutil.which("formation")
    if script is None:
        pytest.skip("the formation entry point is not installed (pip install -e .)")
    return script


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--help"], 0),
        (["run", "--help"], 0),
        (["bogus"], 2),
        (["run", "show", "abc"], 2),
        (["run", "show", "99999999999999999999999"], 2),
        (["sim", "serve", "--port", "abc"], 2),
        (["recipe", "validate"], 2),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else str(v),
)
def test_the_installed_entry_point(tmp_path: Path, args: list[str], code: int) -> None:
    proc = subprocess.run([_entry_point(), *args], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == code, proc
    assert "Traceback" not in proc.stderr
    if code == 0:
        assert "Usage:" in proc.stdout and proc.stderr == ""
    else:
        lines = proc.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written
