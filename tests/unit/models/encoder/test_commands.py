"""The train / evaluate / bench encoder commands end to end on a tiny dataset (CliRunner)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from streamrec.models.encoder.commands import register


def _app() -> typer.Typer:
    app, bench = typer.Typer(), typer.Typer()
    app.add_typer(bench, name="bench")
    register(app, bench)
    return app


def _tiny_movielens(folder: Path) -> Path:
    folder.mkdir()
    rows = [f"{u}\t{(u + t) % 15 + 1}\t4\t{1000 + t}" for u in range(1, 31) for t in range(8)]
    (folder / "u.data").write_text("\n".join(rows) + "\n")
    return folder


@pytest.fixture
def tiny_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STREAMREC_DATA__CACHE_DIR", str(tmp_path / "cache"))
    for key, value in {
        "HIDDEN_SIZE": "16",
        "INNER_SIZE": "32",
        "MAX_LEN": "8",
        "DEVICE": "cpu",
    }.items():
        monkeypatch.setenv(f"STREAMREC_ENCODER__{key}", value)
    monkeypatch.setenv("STREAMREC_TRAIN__EPOCHS", "3")
    return _tiny_movielens(tmp_path / "tiny")


def test_train_evaluate_bench(tiny_env: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "ck"
    args = ["train", "--dataset", str(tiny_env), "--out", str(out), "--no-text", "--no-progress"]
    res = runner.invoke(_app(), [*args, "--json"])
    assert res.exit_code == 0, res.output
    trained = json.loads(res.stdout)
    assert trained["checkpoint"] == str(out) and trained["epochs_run"] <= 3
    assert set(trained["test"]["history_excluded"]) == {"model", "popularity"}
    new_items = trained["test"]["new_items"]  # no user repeats an item here: the same figures
    assert new_items["users"] == 30 and new_items["repeat_targets"] == 0
    assert new_items["model"] == trained["test"]["history_excluded"]["model"]

    cmd = ["evaluate", "--checkpoint", str(out), "--dataset", str(tiny_env), "--include-history"]
    res = runner.invoke(_app(), [*cmd, "--json"])
    assert res.exit_code == 0, res.output
    figures = json.loads(res.stdout)
    assert figures["history"] == "included"
    assert figures["model"] == trained["test"]["history_included"]["model"]  # same checkpoint

    bench = ["bench", "encoder", "--checkpoint", str(out), "--batch-sizes", "1,4"]
    res = runner.invoke(_app(), [*bench, "--seconds", "0.05", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)["throughput"]
    assert {(r["precision"], r["batch"]) for r in rows} == {
        ("fp32", 1),
        ("fp32", 4),
        ("int8", 1),
        ("int8", 4),
    }
    assert all(r["user_vectors_per_s"] > 0 for r in rows)


def test_evaluate_missing_checkpoint_fails_clearly(tiny_env: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(_app(), ["evaluate", "--checkpoint", str(tmp_path / "none")])
    assert res.exit_code != 0
    assert "does not exist (check the path)" in str(res.exception)


def test_behaviour_world_takes_each_signal_strength_as_a_probability(tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["behaviour-world", "--users", "20", "--seed", "3"]
    strengths = ["--intent", "0.5", "--tastes", "0", "--lists", "0.25", "--context", "1"]
    written = runner.invoke(_app(), [*base, "--out", str(tmp_path / "a"), *strengths, "--json"])
    assert written.exit_code == 0, written.output
    default = runner.invoke(_app(), [*base, "--out", str(tmp_path / "b"), "--json"])
    assert default.exit_code == 0, default.output
    # the strengths reached the generator: the same seed gives another world
    assert (tmp_path / "a/behaviour.inter").read_text() != (
        tmp_path / "b/behaviour.inter"
    ).read_text()
    for flag in ("--intent", "--tastes", "--lists", "--context"):
        refused = runner.invoke(_app(), [*base, "--out", str(tmp_path / "c"), flag, "1.5"])
        assert refused.exit_code == 2  # a usage error: out of [0, 1]


def test_train_scores_new_items_apart_from_repeat_targets(tiny_env: Path, tmp_path: Path) -> None:
    # Every odd user had two items only, so their last event repeats the item before it (the
    # split's targets are a user's last two new items only when there are three or more).
    rows = [
        f"{u}\t{(u + min(t, 1 if u % 2 else 7)) % 15 + 1}\t4\t{1000 + t}"
        for u in range(1, 31)
        for t in range(8)
    ]
    (tiny_env / "u.data").write_text("\n".join(rows) + "\n")
    args = ["train", "--dataset", str(tiny_env), "--out", str(tmp_path / "ck"), "--no-text"]
    res = CliRunner().invoke(_app(), [*args, "--no-progress", "--json"])
    assert res.exit_code == 0, res.output
    new_items = json.loads(res.stdout)["test"]["new_items"]
    assert new_items["users"] == 15 and new_items["repeat_targets"] == 15
    assert set(new_items["model"]) >= {"hr@10", "ndcg@10"}
