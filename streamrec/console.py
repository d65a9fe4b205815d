"""What every CLI command shares: the settings in the Typer context and figure reports.

Every command that reports figures prints a readable table, or with ``--json`` the same
figures as one JSON object on stdout (and nothing else on stdout).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from streamrec.settings import Settings, load_settings

# Progress bars and logs go to stderr so that --json output on stdout stays parseable.
err_console = Console(stderr=True)
out_console = Console()

JsonOption = typer.Option(False, "--json", help="Print the figures as one JSON object on stdout.")


def get_settings(ctx: typer.Context) -> Settings:
    """Settings built once by the root callback (``--config`` plus environment)."""
    root = ctx.find_root()
    if not isinstance(root.obj, Settings):
        root.obj = load_settings(None)
    return root.obj


def init_settings(ctx: typer.Context, config: Path | None) -> None:
    """Called by the root callback: load the YAML config (if any) once."""
    ctx.obj = load_settings(config)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy and torch scalars
        return value.item()
    return value


def report(title: str, figures: Mapping[str, Any], as_json: bool) -> None:
    """Print ``figures`` as a two-column table, or as JSON when ``as_json``.

    Nested mappings become rows ``section.key``; lists of mappings become their own tables.
    """
    if as_json:
        sys.stdout.write(json.dumps(_jsonable(figures), indent=2, sort_keys=False) + "\n")
        return
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("figure")
    table.add_column("value", justify="right")
    subtables: list[tuple[str, list[Mapping[str, Any]]]] = []
    for key, value in _flatten(figures):
        if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            subtables.append((key, value))
            continue
        table.add_row(key, _fmt(value))
    out_console.print(table)
    for key, rows in subtables:
        print_rows(f"{title}: {key}", rows)


def print_rows(title: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """Print a list of same-shaped records as a table."""
    table = Table(title=title, show_header=True, header_style="bold")
    columns = list(dict.fromkeys(k for row in rows for k in row))
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*(_fmt(row.get(col, "")) for col in columns))
    out_console.print(table)


def _flatten(figures: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in figures.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            rows.extend(_flatten(value, f"{name}."))
        else:
            rows.append((name, value))
    return rows


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
