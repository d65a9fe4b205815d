"""Every `streamrec ...` command the README shows exists and has useful help."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from streamrec.cli import app, main

README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_commands() -> list[list[str]]:
    commands = set()
    # On a line of its own (a code block) or inline in backticks.
    pattern = re.compile(r"(?:^|`|\$ )streamrec ((?:[a-z][a-z-]*)(?: [a-z][a-z-]*)?)")
    for line in README.read_text().splitlines():
        commands.update(m.group(1) for m in pattern.finditer(line.strip()))
    return [c.split() for c in sorted(commands)]


def _command_path(words: list[str]) -> list[str]:
    """The words that name a command: a group's subcommand, or a command and its argument."""
    commands: dict[str, Any] = getattr(typer.main.get_command(app), "commands", {})
    first = commands.get(words[0])
    assert first is not None, f"README names `streamrec {words[0]}`, which does not exist"
    return words if hasattr(first, "commands") else words[:1]  # a group has subcommands


def test_readme_names_the_main_commands() -> None:
    named = {" ".join(_command_path(words)) for words in _readme_commands()}
    assert {"demo", "worker", "train", "evaluate", "replay", "bench pipeline"} <= named


@pytest.mark.parametrize("words", _readme_commands(), ids=" ".join)
def test_readme_command_has_help(words: list[str]) -> None:
    result = CliRunner().invoke(app, [*_command_path(words), "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_unknown_broker_data_dir_status_reports_not_running(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["kafka", "status", "--data-dir", str(tmp_path), "--json"])
    assert result.exit_code == 1
    assert '"running": false' in result.stdout


def _main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run the console entry point as a shell would; its one-line error (exit code 2)."""
    monkeypatch.setattr("sys.argv", ["streamrec", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines  # however long: not wrapped at the 80 columns of no terminal
    return lines[0]


def test_an_unreachable_broker_is_one_line_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STREAMREC_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1")
    said = _main(monkeypatch, capsys, "topics", "list")
    assert "error: KafkaConnectionError" in said and "is the broker up?" in said
    assert "Traceback" not in said


def test_bad_settings_and_devices_are_one_line_errors(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("STREAMREC_SERVING__MODE", "bogus")
    assert "error: invalid settings: serving.mode" in _main(monkeypatch, capsys, "topics", "list")
    monkeypatch.delenv("STREAMREC_SERVING__MODE")
    said = _main(monkeypatch, capsys, "train", "--device", "tpu", "--out", str(tmp_path))
    assert "error: unknown device 'tpu'" in said


def test_ablations_refuse_a_checkpoint_they_would_ignore(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["evaluate", "--ablations", "--checkpoint", str(tmp_path)])
    assert result.exit_code == 2 and "leave out --checkpoint" in " ".join(result.output.split())
