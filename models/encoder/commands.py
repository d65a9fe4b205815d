"""CLI commands of streamrec.models, registered on the root app by `streamrec.cli`.

    streamrec train [--dataset PATH] [--out DIR] [--epochs N] [--device D] [--preset demo|reference]
    streamrec evaluate --checkpoint DIR [--exclude-history/--include-history]
    streamrec evaluate --ablations [--seeds 0,1,2,3,4] [--dataset PATH] [--no-reference]
                                   [--variants ids,+gaps]
    streamrec behaviour-world --out DIR [--users N] [--seed S] [--intent P] [--tastes P]
                              [--lists P] [--context P]
    streamrec coldstart [--dataset PATH] [--fraction 0.1]
    streamrec bench encoder [--checkpoint DIR] [--device D]

Every command takes ``--json`` (figures as one JSON object on stdout, progress on stderr).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from streamrec.console import JsonOption, err_console, get_settings, report
from streamrec.models.encoder.behaviour_world import WorldConfig

_DATASET = typer.Option(None, "--dataset", help="Dataset folder or file (default MovieLens-100K).")
_DEVICE = typer.Option(None, "--device", help="auto, cpu or cuda (default: encoder settings).")


def register(app: typer.Typer, bench: typer.Typer) -> None:
    """Add this package's commands to the root app and its `bench` group."""
    app.command("train")(train_cmd)
    app.command("evaluate")(evaluate_cmd)
    app.command("coldstart")(coldstart_cmd)
    app.command("behaviour-world")(behaviour_world_cmd)
    bench.command("encoder")(bench_encoder_cmd)


def train_cmd(
    ctx: typer.Context,
    dataset: Path | None = _DATASET,
    out: Path | None = typer.Option(
        None, "--out", help="Checkpoint folder (default <cache>/models/<version>)."
    ),
    epochs: int | None = typer.Option(
        None, "--epochs", min=1, help="Most epochs (default: preset)."
    ),
    device: str | None = _DEVICE,
    preset: str = typer.Option(
        "demo", "--preset", help="demo (our settings) or reference (RecBole SASRec)."
    ),
    text: bool = typer.Option(True, "--text/--no-text", help="Fit the cold-start text projection."),
    time_budget: float | None = typer.Option(
        None, "--time-budget", min=1, help="Stop after this many seconds (default: preset)."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar on stderr."),
    as_json: bool = JsonOption,
) -> None:
    """Train the sequence encoder, evaluate it with a popularity baseline, save a checkpoint."""
    from streamrec.models.encoder.pipeline import run_training

    settings = get_settings(ctx)
    figures = run_training(
        settings,
        dataset=dataset,
        out=out,
        epochs=epochs,
        device=device,
        preset=_preset(preset),
        fit_text=text,
        progress=progress,
        time_budget_s=time_budget,
    )
    report("streamrec train", figures, as_json)


def evaluate_cmd(
    ctx: typer.Context,
    checkpoint: Path | None = typer.Option(
        None, "--checkpoint", help="Checkpoint folder from `train` (not with --ablations)."
    ),
    dataset: Path | None = _DATASET,
    exclude_history: bool = typer.Option(
        True,
        "--exclude-history/--include-history",
        help="Remove each user's input items from the ranking (RecBole's convention).",
    ),
    device: str | None = _DEVICE,
    ablations: bool = typer.Option(
        False,
        "--ablations",
        help="Train and test the input variants (ids, +types/values, +gaps, +summary, "
        "+context) and the SASRec reference on the same split and seeds.",
    ),
    seeds: str = typer.Option("0,1,2,3,4", "--seeds", help="Ablation seeds, comma-separated."),
    reference: bool = typer.Option(
        True, "--reference/--no-reference", help="Ablations: also train the reference preset."
    ),
    variants: str | None = typer.Option(
        None, "--variants", help="Ablations: only these rows, comma-separated (e.g. ids,+context)."
    ),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="Ablations: most epochs."),
    time_budget: float | None = typer.Option(
        None, "--time-budget", min=1, help="Ablations: seconds per model (default: settings)."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Leave-one-out test metrics@10 (full ranking) of a checkpoint beside popularity, or the
    input ablation table (mean ± sd over seeds)."""
    settings = get_settings(ctx)
    if ablations and checkpoint is not None:
        raise typer.BadParameter("--ablations trains its own models; leave out --checkpoint")
    if ablations:
        from streamrec.models.encoder.ablations import run_ablations

        seed_list = _seed_list(seeds)
        only = [v.strip() for v in variants.split(",") if v.strip()] if variants else None
        try:
            figures = run_ablations(
                settings, dataset, seed_list, device, reference, epochs, time_budget, only=only
            )
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--variants") from None
        report("streamrec evaluate --ablations", figures, as_json)
        return
    if checkpoint is None:
        raise typer.BadParameter("give --checkpoint DIR, or --ablations to train the variants")
    from streamrec.models.encoder.pipeline import run_evaluation

    figures = run_evaluation(settings, checkpoint, dataset, exclude_history, device)
    report("streamrec evaluate", figures, as_json)


def _strength(default: float, flag: str, signal: str) -> float:
    """A world signal's strength option: the probability that ``signal`` holds."""
    option: float = typer.Option(default, flag, min=0, max=1, help=f"P({signal}).")
    return option


def behaviour_world_cmd(
    out: Path = typer.Option(..., "--out", help="Folder for behaviour.inter / behaviour.item."),
    users: int = typer.Option(WorldConfig.users, "--users", min=1, help="Users to generate."),
    seed: int = typer.Option(WorldConfig.seed, "--seed", help="Random seed."),
    intent: float = _strength(WorldConfig.intent_strength, "--intent", "an accessory after a cart"),
    tastes: float = _strength(
        WorldConfig.taste_strength, "--tastes", "a lifelong taste after a return's landing"
    ),
    lists: float = _strength(
        WorldConfig.list_strength, "--lists", "the same family after a view reached from a listing"
    ),
    context: float = _strength(
        WorldConfig.context_strength, "--context", "the device decides the walk's turn"
    ),
    as_json: bool = JsonOption,
) -> None:
    """Write the generated multi-behaviour dataset (types, gaps, tastes, device carry signal)."""
    from streamrec.models.encoder.behaviour_world import write_world

    config = WorldConfig(
        users=users,
        seed=seed,
        intent_strength=intent,
        taste_strength=tastes,
        list_strength=lists,
        context_strength=context,
    )
    inter = write_world(out, config)
    lines = inter.read_text(encoding="utf-8").count("\n") - 1
    report("streamrec behaviour-world", {"interactions": str(inter), "events": lines}, as_json)


def coldstart_cmd(
    ctx: typer.Context,
    dataset: Path | None = _DATASET,
    fraction: float = typer.Option(0.1, "--fraction", min=0.01, max=0.5, help="Items held out."),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="Most encoder epochs."),
    device: str | None = _DEVICE,
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar on stderr."),
    as_json: bool = JsonOption,
) -> None:
    """Hold items out of training and score them through the text projection."""
    from streamrec.models.encoder.pipeline import run_cold_start

    settings = get_settings(ctx)
    figures = run_cold_start(settings, dataset, fraction, epochs, device, progress)
    report("streamrec coldstart", figures, as_json)


def bench_encoder_cmd(
    ctx: typer.Context,
    checkpoint: Path | None = typer.Option(
        None, "--checkpoint", help="Checkpoint to measure (default: newest under <cache>/models)."
    ),
    device: str | None = _DEVICE,
    batch_sizes: str = typer.Option("1,32,256,1024", "--batch-sizes", help="Comma-separated."),
    int8: bool = typer.Option(True, "--int8/--no-int8", help="Also measure int8 on the CPU."),
    seconds: float = typer.Option(1.0, "--seconds", min=0.01, help="Measuring time per row."),
    as_json: bool = JsonOption,
) -> None:
    """User vectors per second by batch size and device; int8 vs fp32 on the CPU."""
    from streamrec.models.encoder.benchmark import run_bench

    settings = get_settings(ctx)
    sizes = [int(s) for s in batch_sizes.split(",") if s.strip()]
    err_console.print("measuring encoder throughput (sequences of max_len items)...")
    figures = run_bench(settings, checkpoint, device, sizes, int8, seconds)
    report("streamrec bench encoder", figures, as_json)


def _preset(name: str) -> Literal["demo", "reference"]:
    if name not in ("demo", "reference"):
        raise typer.BadParameter(f"--preset must be demo or reference, got {name!r}")
    return "demo" if name == "demo" else "reference"


def _seed_list(seeds: str) -> list[int]:
    """``--seeds 0,1,2`` as integers; a usage error otherwise."""
    try:
        return [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise typer.BadParameter(
            f"{seeds!r}: comma-separated integers", param_hint="--seeds"
        ) from None
