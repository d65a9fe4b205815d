"""The index benchmark on a tiny catalog: figures present, exact recall 1, CLI JSON parseable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from streamrec.errors import ConfigError, DataError
from streamrec.index.bench import BenchConfig, run
from streamrec.index.commands import _parse_kinds, register
from streamrec.index.config import IndexSettings

SMALL = IndexSettings(nlist=16, nprobe=16, min_points_per_list=8, pq_m=4)


def test_run_reports_every_kind_with_exact_flat_as_reference(tmp_path: Path) -> None:
    vectors = np.random.default_rng(3).standard_normal((300, 8)).astype(np.float32)
    np.save(tmp_path / "items.npy", vectors)
    config = BenchConfig(items=2500, dim=8, queries=10, k=10, vectors=tmp_path / "items.npy")
    figures = run(config, SMALL, progress=lambda _msg: None)
    rows = {row["kind"]: row for row in figures["synthetic"]["results"]}
    assert list(rows) == ["flat", "ivf_flat", "hnsw", "ivf_pq"]
    assert rows["flat"]["recall"] == 1.0 and rows["flat"]["speedup"] == 1.0
    # nprobe == nlist makes IVF-Flat exhaustive, hence exact.
    assert rows["ivf_flat"]["recall"] == 1.0
    assert all(0.0 <= row["recall"] <= 1.0 and row["qps"] > 0 for row in rows.values())
    assert all(row["speedup_vs_numpy"] > 0 for row in rows.values())
    assert figures["file"]["items"] == 300
    assert figures["file"]["results"][0]["recall"] == 1.0


def test_cli_json_is_one_object_on_stdout() -> None:
    app, bench = typer.Typer(), typer.Typer()
    app.add_typer(bench, name="bench")

    @app.callback()
    def root() -> None:
        """Stand-in for streamrec's root callback."""

    register(app, bench)
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "index",
            "--items",
            "500",
            "--dim",
            "8",
            "--queries",
            "5",
            "--k",
            "5",
            "--kinds",
            "flat,hnsw",
            "--threads",
            "1",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert [row["kind"] for row in figures["synthetic"]["results"]] == ["flat", "hnsw"]


def test_bad_kinds_and_missing_vectors_are_reported() -> None:
    with pytest.raises(ConfigError, match="annoy"):
        _parse_kinds("flat,annoy")
    config = BenchConfig(items=50, dim=4, queries=2, k=2, kinds=("flat",), vectors=Path("/no.npy"))
    with pytest.raises(DataError, match="does not exist"):
        run(config, SMALL, progress=lambda _msg: None)
