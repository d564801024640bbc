"""The `arus` command: every action listed, each command's own --help, errors and exit codes."""

from __future__ import annotations

import importlib
import subprocess
import sys
import types

import pytest

from arus import cli
from arus.config import doc_examples


def test_help_lists_every_command_without_importing_spark() -> None:
    code = "import sys; from arus.cli import main; main(['--help']); print('pyspark' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for name, command in cli.COMMANDS.items():
        assert f"{name} {command.args}".rstrip() in out
        assert command.summary in out
    assert "examples:" in out
    assert out.rstrip().endswith("False")  # pyspark was not imported


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_each_command_has_its_own_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main([*name.split(), "--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: arus {name} ")


def test_a_group_without_its_action_lists_the_actions(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["produce"]) == 2
    assert "arus produce <iot|csv|api>" in capsys.readouterr().err
    assert cli.main(["bench", "--help"]) == 0
    assert "bench report" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["nope"], ["produce", "nope"]])
def test_an_unknown_command_exits_2_naming_it(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    assert f"unknown command {' '.join(argv)!r}" in capsys.readouterr().err


def fake_command(monkeypatch: pytest.MonkeyPatch, main: types.FunctionType) -> None:
    module = types.ModuleType("arus_fake_command")
    module.main = main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(cli.COMMANDS, "fake", cli.Command(module.__name__, "a test double"))


def test_the_module_gets_the_rest_and_its_exit_code_passes_through(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    def main(argv: list[str]) -> int:
        seen.append(argv)
        return 3

    fake_command(monkeypatch, main)  # type: ignore[arg-type]
    assert cli.main(["fake", "--x", "1"]) == 3
    assert seen == [["--x", "1"]]


def test_ctrl_c_exits_130_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def main(argv: list[str]) -> int:
        raise KeyboardInterrupt

    fake_command(monkeypatch, main)  # type: ignore[arg-type]
    assert cli.main(["fake"]) == 130
    assert "Traceback" not in capsys.readouterr().err


def test_a_command_whose_extra_is_missing_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.import_module

    def without_jupytext(name: str, package: str | None = None) -> object:
        if name == "arus.ops.notebooks":
            raise ModuleNotFoundError("No module named 'jupytext'", name="jupytext")
        return real(name, package)

    monkeypatch.setattr(cli.importlib, "import_module", without_jupytext)
    assert cli.main(["notebooks"]) == 2
    assert "pip install 'arus[notebooks]'" in capsys.readouterr().err


def test_a_command_given_no_examples_shows_its_docstrings_own() -> None:
    doc = "Title.\n\n    arus x --a 1    # first\n    arus x --b \\\n        --c\n    arus xy\n    python x"
    assert doc_examples("arus x", doc) == ("arus x --a 1    # first", "arus x --b \\\n      --c")
