"""The ablation table and the generated multi-behaviour world (small and seeded)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from streamrec.models.encoder.ablations import _table, ablation_variants
from streamrec.models.encoder.behaviour_world import WorldConfig, write_world
from streamrec.models.encoder.commands import register

SMALL = WorldConfig(users=20, topics=2, families=2, family_size=8, min_events=6, max_events=12)


def test_variants_are_cumulative_and_context_only_when_the_log_has_it() -> None:
    without = ablation_variants(4, ())
    assert [label for label, _ in without] == ["ids", "+types/values", "+gaps", "+summary"]
    with_ctx = dict(ablation_variants(4, ("device",)))
    assert with_ctx["ids"].describe() == "ids"
    assert with_ctx["+summary"].describe() == "ids+types+values+gaps+summary4"
    assert with_ctx["+context"].context_fields == ("device",)


def test_table_gives_mean_sd_and_the_ratio_to_the_reference() -> None:
    def run(variant: str, ndcg: float) -> dict[str, object]:
        return {"variant": variant, "hr@10": 0.2, "ndcg@10": ndcg, "mrr@10": 0.1, "seconds": 1.0}

    runs = [run("ids", 0.10), run("ids", 0.14), run("SASRec reference", 0.10)]
    rows = {r["variant"]: r for r in _table(runs, ["ids", "SASRec reference"], reference=True)}
    assert rows["ids"]["ndcg@10"] == "0.1200 ± 0.0283"
    assert rows["ids"]["ndcg@10 / reference"] == 1.2
    assert rows["SASRec reference"]["ndcg@10 / reference"] == 1.0


@pytest.fixture
def tiny_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMREC_DATA__CACHE_DIR", str(tmp_path / "cache"))
    for key, value in {"HIDDEN_SIZE": "16", "INNER_SIZE": "32", "MAX_LEN": "8"}.items():
        monkeypatch.setenv(f"STREAMREC_ENCODER__{key}", value)


def test_ablations_command_trains_every_variant_and_seed(
    tiny_settings: None, tmp_path: Path
) -> None:
    app, bench = typer.Typer(), typer.Typer()
    app.add_typer(bench, name="bench")
    register(app, bench)
    inter = write_world(tmp_path / "world", SMALL)
    args = ["evaluate", "--ablations", "--dataset", str(inter), "--seeds", "0,1", "--json"]
    res = CliRunner().invoke(app, [*args, "--no-reference", "--epochs", "1", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    figures = json.loads(res.stdout)
    labels = ["ids", "+types/values", "+gaps", "+summary", "+context"]
    assert [row["variant"] for row in figures["table"]] == labels
    assert len(figures["runs"]) == 2 * len(labels)
    assert all(run["epochs"] == 1 and run["stopped"] == "epochs" for run in figures["runs"])
    assert all(run["load_1min"] >= 0 for run in figures["runs"])


def test_ablations_command_runs_only_the_variants_asked_for(
    tiny_settings: None, tmp_path: Path
) -> None:
    app, bench = typer.Typer(), typer.Typer()
    app.add_typer(bench, name="bench")
    register(app, bench)
    inter = str(write_world(tmp_path / "world", SMALL))
    args = ["evaluate", "--ablations", "--dataset", inter, "--seeds", "0", "--epochs", "1"]
    res = CliRunner().invoke(app, [*args, "--device", "cpu", "--json", "--variants", "+gaps,ids"])
    assert res.exit_code == 0, res.output
    figures = json.loads(res.stdout)
    assert [row["variant"] for row in figures["table"]] == ["ids", "+gaps"]
    res = CliRunner().invoke(app, [*args, "--no-reference", "--variants", "SASRec reference"])
    assert res.exit_code != 0
    assert "unknown variants ['SASRec reference']" in res.output
