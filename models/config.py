"""Hyperparameters and settings of the models: encoder, training, policy, online learner."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class EncoderSettings(BaseModel):
    """Shape of the SASRec-style sequence encoder and where it runs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    hidden_size: int = Field(64, ge=8, description="Item and position embedding width.")
    layers: int = Field(2, ge=1, description="Transformer blocks.")
    heads: int = Field(2, ge=1, description="Attention heads; must divide hidden_size.")
    inner_size: int = Field(256, ge=1, description="Feed-forward width inside each block.")
    dropout: float = Field(0.2, ge=0.0, lt=1.0, description="Dropout on embeddings and blocks.")
    attn_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on attention weights.")
    max_len: int = Field(50, ge=2, description="Longest input sequence (most recent items kept).")
    # The three inputs below are off until an uncontended ablation shows their gain (issue 14).
    event_types: bool = Field(
        False, description="Each event token also embeds its event type (view, purchase, ...)."
    )
    time_gaps: bool = Field(
        False,
        description="Each event token also embeds its time gap to the previous event "
        "(log2 seconds, 24 buckets).",
    )
    summary_tokens: int = Field(
        0,
        ge=0,
        description="Long-term summary slices of the user state read as extra tokens before the "
        "recent events (each: its items averaged by decayed weight, plus its age); 0: none.",
    )
    event_values: bool = Field(
        False,
        description="Each event token also embeds its bucketed value (rating, dwell), read from "
        "the user state's recent events.",
    )
    context_fields: tuple[str, ...] = Field(
        (),
        description="Event context fields (e.g. device) hashed into each event token. The worker "
        "must keep them too (state.context_fields); it warns at load when it does not.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto picks CUDA when present, else the CPU."
    )
    checkpoint: Path | None = Field(None, description="Checkpoint folder the worker loads.")


class TrainSettings(BaseModel):
    """Offline training on a logged history."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    epochs: int = Field(200, ge=1, description="Most epochs; early stopping usually ends sooner.")
    batch_size: int = Field(64, ge=1, description="Sequences (windows or prefixes) per step.")
    lr: float = Field(2e-3, gt=0, description="AdamW learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    loss: Literal["ce", "sampled_softmax"] = Field(
        "ce", description="Full-softmax cross-entropy, or sampled softmax with logQ correction."
    )
    negatives: int = Field(256, ge=1, description="Negatives per step for sampled softmax.")
    scheme: Literal["window", "prefix"] = Field(
        "window",
        description="window: loss at every position of max_len chunks; prefix: RecBole's "
        "one example per prefix, loss at its last position.",
    )
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="Cross-entropy smoothing.")
    mask_history: bool = Field(
        True,
        description="Full softmax without the items each position has already seen (its "
        "target excepted): train as the model is ranked, with history excluded (ce only; off "
        "whenever state.repeatable_types lets slates show an item again).",
    )
    shuffle_ties: bool = Field(
        True,
        description="Each epoch, reorder the events of a training window that share a "
        "timestamp at random (window scheme): logs with coarse clocks hold them in an "
        "arbitrary order, which the model should not learn.",
    )
    time_budget_s: float | None = Field(
        240.0, gt=0, description="Stop after this many seconds, keeping the best epoch."
    )
    budget_clock: Literal["wall", "cpu"] = Field(
        "wall",
        description="What time_budget_s counts: wall seconds, or this process's CPU seconds (on "
        "a shared or paused machine, the CPU time a dedicated core would have taken, with one "
        "torch thread; with more threads CPU time runs faster than the wall clock).",
    )
    patience: int = Field(5, ge=1, description="Epochs without validation NDCG@10 gain to stop.")
    seed: int = Field(42, description="Random seed.")


class PolicySettings(BaseModel):
    """Reranking policy for the published slate."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    reranker: Literal["relevance", "mmr", "dpp", "stochastic"] = Field(
        "stochastic", description="How candidates become a slate."
    )
    diversity: float = Field(0.3, ge=0.0, le=1.0, description="Relevance/diversity trade-off.")
    temperature: float = Field(
        0.25, gt=0.0, description="Plackett-Luce temperature: logits are w.features / temperature."
    )
    max_weight_norm: float = Field(
        3.0,
        gt=0.0,
        description="The learner keeps ||w|| below this, so exploration never vanishes.",
    )
    state_half_life_s: float = Field(
        3_600.0,
        gt=0.0,
        description="Half-life of a click's weight in the critic's satiation features "
        "(models/policy/critic.py).",
    )


class LearnerSettings(BaseModel):
    """Online updates of the policy from rewards."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    attribution_window_s: float = Field(
        1_800.0, gt=0, description="Seconds after a slate during which responses count."
    )
    batch_size: int = Field(
        64,
        ge=1,
        description="Closed impressions (slates whose attribution window ended, clicked or not) "
        "per policy update.",
    )
    lr: float = Field(0.1, gt=0, description="Policy step size of the first update.")
    lr_decay_updates: float = Field(
        10.0,
        ge=0,
        description="Step-size annealing: update n uses lr / sqrt(1 + n / lr_decay_updates), "
        "so the policy settles once learned instead of random-walking on noisy gradients; "
        "0 keeps lr constant (for traffic whose optimum keeps moving).",
    )
    max_step: float = Field(0.2, gt=0, description="Largest parameter change (L2) per update.")
    weight_clip: float = Field(10.0, gt=0, description="Importance weights are clipped here.")
    rollback_drop: float = Field(
        0.2, ge=0, description="Relative reward drop that rolls the policy back."
    )
    credit_discount: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Discount of rewards further down the slate in a choice's reward-to-go.",
    )
    rollback_window: int = Field(
        128, ge=1, description="Impressions of earlier versions the rollback guard compares with."
    )
    rollback_min_impressions: int = Field(
        64, ge=1, description="Impressions a version needs before the rollback guard judges it."
    )
    reward_weights: dict[str, float] = Field(
        default_factory=lambda: {"click": 1.0, "add_to_cart": 2.0, "purchase": 5.0, "dwell": 0.5},
        description="Reward per response type (0 or more; a skip's penalty is skip_penalty).",
    )
    skip_penalty: float = Field(
        0.0,
        ge=0.0,
        allow_inf_nan=False,
        description="Reward taken from a slate when a user skips one of its items: a dwell on "
        "it shorter than state.min_dwell_ms (a track skipped after seconds). 0: a skip earns "
        "nothing, like an item not clicked.",
    )
    algorithm: Literal["reinforce", "actor_critic"] = Field(
        "reinforce",
        description="reinforce: credit each slate with its own reward; actor_critic: also with "
        "the critic's advantage of the user's next visits (models/policy/actor_critic.py).",
    )
    discount: float = Field(
        0.3, ge=0.0, le=1.0, description="Actor-critic: discount per later visit of the user."
    )
    horizon: int = Field(
        3, ge=1, description="Actor-critic: later visits in a slate's advantage (GAE truncation)."
    )
    gae_lambda: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Actor-critic: GAE lambda; 0 credits a slate with the critic's value of the "
        "next visit only (least variance), 1 with the later visits' observed rewards.",
    )
    critic_features: tuple[
        Literal["bias", "satiation", "concentration", "activity", "since_last_visit", "pool"], ...
    ] = Field(
        ("bias", "satiation", "concentration", "activity", "since_last_visit", "pool"),
        description="State features of the critic (models/policy/critic.py).",
    )
    critic_window: int = Field(
        4_096, ge=16, description="Actor-critic: recent visits the critic is refitted on."
    )
    critic_ridge: float = Field(1.0, ge=0.0, description="Ridge penalty of the critic's fit.")
    future_weight_clip: float = Field(
        2.0,
        gt=0.0,
        description="Actor-critic: importance-weight clip of the later-visit credit, whose "
        "slates were logged several policy versions ago (weight_clip is for fresh slates).",
    )
    state_baseline: bool = Field(
        True,
        description="Actor-critic: subtract the critic's expected reward-to-go of each slate "
        "position in the request's state (a baseline that lowers the gradient's variance).",
    )
    visit_timeout_s: float = Field(
        4 * 3_600.0,
        gt=0.0,
        description="A user not back within this many seconds ends their return (value 0).",
    )
    constrained: bool = Field(
        False,
        description="Maximise reward subject to intra-list diversity and coverage no lower than "
        "the relevance-only slates' (Lagrangian penalties learned online).",
    )
    constraint_lr: float = Field(
        20.0, gt=0.0, description="Step size of the Lagrange multipliers per update."
    )
    coverage_window: int = Field(
        500, ge=10, description="Impressions over which the constrained mode measures coverage."
    )
    coverage_target: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Share of each slate's items not shown in the last coverage_window "
        "impressions that the constrained mode keeps on average; None: that of the relevance-only "
        "slates of the same candidates (a reference that drifts with the policy). `streamrec "
        "report` sets it to the relevance-only policy's share, measured in the same seed's run "
        "over one bucket of impressions (its coverage_window too).",
    )
    mode: Literal["local", "shared"] = Field(
        "local",
        description="local: each worker learns from its own partitions' rewards; shared: workers "
        "publish closed impressions to the experience topic and serve the policy the one "
        "`streamrec learner` process announces on the control topic.",
    )
    ope_window: int = Field(
        512,
        ge=1,
        description="Learner process: latest impressions on which each new version's doubly "
        "robust estimate is computed before it is announced.",
    )
    reannounce_s: float = Field(
        60.0,
        gt=0,
        description="Learner process: seconds after which it announces the version it holds "
        "again when nothing new was learned, so a second learner for the group learns of it "
        "(workers skip a version they serve).",
    )
    metrics_port: int | None = Field(
        None,
        ge=1,
        le=65_535,
        description="Learner process: serve Prometheus metrics (experience records by "
        "outcome, updates, rollbacks, the version held) on this port; none when unset.",
    )

    @field_validator("reward_weights")
    @classmethod
    def _rewards_not_negative(cls, weights: dict[str, float]) -> dict[str, float]:
        # A negative weight reached the worker's reward counter, which only rises: the first
        # such response raised inside the ingest agent.
        bad = {k: v for k, v in weights.items() if not (math.isfinite(v) and v >= 0)}
        if bad or "skip" in weights:  # "skip" is the penalty's response type (policy/rewards.py)
            raise ValueError(
                f"reward weights must be finite and 0 or more, and none named skip, got "
                f"{bad or weights}; to penalise a skipped item set learner.skip_penalty (and "
                "state.min_dwell_ms, what counts as a skip)"
            )
        return weights
