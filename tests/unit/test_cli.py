"""Every `streamrec ...` command the README shows exists and has useful help."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streamrec.cli import app

README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_commands() -> list[list[str]]:
    commands = set()
    for line in README.read_text().splitlines():
        match = re.match(r"^(?:\$ )?streamrec ((?:[a-z][a-z-]*)(?: [a-z][a-z-]*)?)", line.strip())
        if match:
            commands.add(match.group(1))
    return [c.split() for c in sorted(commands)]


def test_readme_names_commands() -> None:
    assert len(_readme_commands()) >= 10


@pytest.mark.parametrize("words", _readme_commands(), ids=" ".join)
def test_readme_command_has_help(words: list[str]) -> None:
    result = CliRunner().invoke(app, [*words, "--help"])
    if result.exit_code != 0 and len(words) == 2:  # second word was an argument, not a command
        result = CliRunner().invoke(app, [words[0], "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_unknown_broker_data_dir_status_reports_not_running(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["kafka", "status", "--data-dir", str(tmp_path), "--json"])
    assert result.exit_code == 1
    assert '"running": false' in result.stdout
