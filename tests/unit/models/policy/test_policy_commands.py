"""`ope`, `report` and `bench rerank` through Typer's CliRunner on a tiny app."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import typer
from typer.testing import CliRunner

from streamrec.models.policy.commands import register
from streamrec.models.policy.ope import log_record
from streamrec.models.policy.slate import unit_rows


def _app() -> typer.Typer:
    app = typer.Typer()
    bench = typer.Typer()

    @app.callback()
    def root() -> None:
        """Test root."""

    app.add_typer(bench, name="bench")
    register(app, bench)
    return app


def _log(path: Path) -> None:
    rng = np.random.default_rng(0)
    with path.open("w") as fh:
        for i in range(50):
            feats = rng.normal(size=(4, 5))
            ids = ["a", "b", "c", "d"]
            vecs = unit_rows(rng.normal(size=(4, 3)))
            rec = log_record(
                f"r{i}", "u", "pl-0", 0.0, ids, feats, vecs, ["b", "a"], [0.3, 0.5], [1.0, 0.0]
            )
            fh.write(json.dumps(rec) + "\n")


def test_ope_prints_json_estimates(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    _log(log)
    result = CliRunner().invoke(_app(), ["ope", str(log), "--weights", "1,0,0,0,0", "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["slates"] == 50
    assert figures["ips"]["low"] <= figures["ips"]["value"] <= figures["ips"]["high"]


def test_ope_needs_exactly_one_target(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    _log(log)
    result = CliRunner().invoke(_app(), ["ope", str(log)])
    assert result.exit_code == 2


def test_report_writes_table_and_plot(tmp_path: Path) -> None:
    out = tmp_path / "rep"
    args = ["report", "--seeds", "2", "--steps", "120", "--out", str(out), "--ope-log", "--json",
            "--grid-steps", "40", "--grid-top", "1"]  # fmt: skip
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    names = {"relevance", "reinforce", "actor-critic", "constrained", "mmr-0.6", "dpp-0.95"}
    assert set(summary["policies"]) >= names
    assert len(summary["grid_search"]) == 27
    assert sum(n.startswith("w-") for n in summary["policies"]) == 1
    assert set(summary["frontier"]) <= set(summary["policies"])
    assert set(summary["paired"]["actor-critic"]) >= {"relevance", "reinforce", "best_mmr"}
    assert (out / "ope-log.jsonl").stat().st_size > 0
    learned = summary["policies"]["actor-critic"]["reward_per_1k"]
    assert learned["low"] <= learned["mean"] <= learned["high"]
    for name in ("summary.md", "summary.json", "metrics.png", "series.json", "frontier.png"):
        assert (out / name).stat().st_size > 0
    assert "| actor-critic |" in (out / "summary.md").read_text()


def test_bench_rerank_reports_latency() -> None:
    args = ["bench", "rerank", "--requests", "5", "--candidates", "20", "--json"]
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["dpp-0.5"]["p99_ms"] > 0
