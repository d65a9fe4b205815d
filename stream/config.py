"""Settings of the streaming worker: state tables and the serving path."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from streamrec.stream.contract import Event, EventType


class SeenSetSettings(BaseModel):
    """Sizing of one bounded per-user membership set (``stream/seen.py``); the defaults are
    those of the seen items."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    exact_limit: int = Field(
        256,
        ge=0,
        description="Values kept verbatim (no false positives) before the set turns into Bloom "
        "filters; below capacity.",
    )
    capacity: int = Field(
        2_000,
        ge=1,
        description="New values one Bloom generation holds at its design rate. Two generations "
        "are kept: the last capacity new values are always remembered, those older than "
        "2 x capacity new values are forgotten.",
    )
    fp_rate: float = Field(
        0.01,
        gt=0,
        lt=1,
        description="Largest probability that a value never added reads as a member once the "
        "set is a Bloom filter (each of the two generations is sized for half of it).",
    )

    @model_validator(mode="after")
    def _exact_below_capacity(self) -> SeenSetSettings:
        if self.exact_limit >= self.capacity:
            raise ValueError(
                f"exact_limit ({self.exact_limit}) must be below capacity ({self.capacity}): "
                "the exact values all go into the first Bloom generation"
            )
        return self


class SeenIdsSettings(SeenSetSettings):
    """Sizing of the per-user set of applied event ids: a false positive drops a genuine event,
    so the default rate is far lower than for items."""

    fp_rate: float = Field(
        1e-6,
        gt=0,
        lt=1,
        description="Largest probability that a new event id reads as applied (and its event is "
        "dropped) once the set is a Bloom filter (each of the two generations is sized for half "
        "of it).",
    )


class StateSettings(BaseModel):
    """Per-user state, deduplication, item statistics and the table store."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    store_url: str = Field(
        "rocksdb://", description="Faust table store: rocksdb:// in production, memory:// in tests."
    )
    data_dir: Path = Field(
        Path("./.streamrec-worker"),
        description="Worker data folder (RocksDB lives here). One folder per worker process.",
    )
    recent_length: int = Field(50, ge=1, le=1000, description="Events kept verbatim per user.")
    seen_event_ids: SeenIdsSettings = Field(
        default_factory=SeenIdsSettings,
        description="Event ids applied per user, so a producer re-sending a long history is "
        "dropped: exact up to 256 ids, then Bloom filters that remember the last 2,000 to "
        "4,000 ids with at most 1e-6 false positives. A false positive drops a genuine event, "
        "hence the low rate (10 KB of base64 per generation).",
    )
    seen_items: SeenSetSettings = Field(
        default_factory=SeenSetSettings,
        description="Items each user interacted with, never recommended to them again: exact up "
        "to 256 items, then Bloom filters that remember the last 2,000 to 4,000 items with at "
        "most 1% false positives (an unseen item wrongly skipped: one lost candidate; "
        "3.7 KB of base64 per generation).",
    )
    repeatable_types: frozenset[EventType] = Field(
        frozenset(),
        description="Event types that do not mark their item as seen, so it can be recommended "
        "again. Empty by default: any interaction with a movie or product means the user knows "
        "it. Domains with repeat consumption list the repeating types, e.g. ['purchase'] for "
        "groceries or ['view', 'dwell'] where re-showing browsed items helps.",
    )
    context_fields: tuple[str, ...] = Field(
        (),
        description="Event context fields (e.g. device) kept with each recent event, for an "
        "encoder trained with them (``encoder.context_fields``). Event values are always kept.",
    )
    summary_slice_s: int = Field(
        86_400, ge=1, description="Width in seconds of one long-term summary time slice."
    )
    summary_slices: int = Field(8, ge=1, description="Long-term summary slices kept per user.")
    summary_items: int = Field(32, ge=1, description="Items kept per long-term summary slice.")
    decay_half_life_s: float = Field(
        30 * 86_400.0, gt=0, description="Half-life of event weights in the long-term summary."
    )
    trending_half_life_s: float = Field(
        3_600.0, gt=0, description="Half-life of trending counts (event time)."
    )
    trending_size: int = Field(
        200, ge=1, description="Items kept in each partition's trending list."
    )
    flush_interval_ms: float = Field(
        500.0,
        gt=0,
        description="How often buffered writes to user_state, trending and covisit go to the "
        "store and changelog (each offset commit and hand-over flushes first as well).",
    )
    cache_entries: int = Field(
        20_000,
        ge=1,
        description="Decoded user states kept in memory (the write-behind cache); states not "
        "yet flushed are always kept.",
    )
    rocksdb_write_buffer_mb: int = Field(
        8,
        ge=1,
        description="RocksDB memtable size per table and owned partition, at most two of them "
        "(faust's default: 64 MiB, three of them, about 1.5 GiB for 2 tables x 4 partitions "
        "once written enough). Larger: fewer, bigger flushes to disk.",
    )
    rocksdb_block_cache_mb: int = Field(
        16,
        ge=1,
        description="RocksDB block cache per table and owned partition (faust's default: "
        "2 GiB each, so reads of a growing table grow the worker without a bound). Hot users "
        "are served from the write-behind cache anyway.",
    )
    item_stats_snapshot_s: float = Field(
        60.0,
        gt=0,
        description="How often each worker saves its item-statistics replica and the "
        "item-updates positions it has read (a restart replays only what came after).",
    )
    covisit_window: int = Field(
        3,
        ge=1,
        description="How many of the user's previous distinct items (other than its own) an "
        "event co-visits with; a burst of events on one item counts as one.",
    )
    covisit_top_k: int = Field(50, ge=1, description="Neighbours kept per item (bounded).")
    event_type_weights: dict[str, float] = Field(
        default_factory=lambda: {
            "view": 1.0,
            "click": 2.0,
            "dwell": 1.5,
            "add_to_cart": 4.0,
            "purchase": 8.0,
            "rating": 3.0,
        },
        description="Weight each event type adds to user and item statistics.",
    )
    min_dwell_ms: int = Field(
        0,
        ge=0,
        le=86_400_000,
        description="A dwell with a shorter dwell_ms is a skip (a track played for seconds): it "
        "adds nothing to item statistics, earns its slate no reward (learner.skip_penalty can "
        "make it cost one) and marks its item seen even when dwell is repeatable. 0: every dwell "
        "counts as interest.",
    )

    def is_skip(self, event: Event) -> bool:
        """A dwell shorter than ``min_dwell_ms`` (one without ``dwell_ms`` is not judged)."""
        short = event.dwell_ms is not None and event.dwell_ms < self.min_dwell_ms
        return event.type == "dwell" and short

    def marks_seen(self, event: Event) -> bool:
        """Whether ``event`` puts its item in the user's seen set: no slate shows it again."""
        return event.type not in self.repeatable_types or self.is_skip(event)

    def weight_of(self, event: Event) -> float:
        """What ``event`` adds to the item statistics (``event_type_weights``; a skip 0)."""
        return 0.0 if self.is_skip(event) else self.event_type_weights.get(event.type, 1.0)

    def rocksdb_options(self) -> dict[str, int]:
        """``options`` for faust's RocksDB store of each table (RocksDBOptions keywords)."""
        mib = 1024 * 1024
        return {
            "write_buffer_size": self.rocksdb_write_buffer_mb * mib,
            "max_write_buffer_number": 2,
            "block_cache_size": self.rocksdb_block_cache_mb * mib,
        }


class FusionSettings(BaseModel):
    """Fusion weights of the candidate sources, learned from users' next events
    (stream/fusion.py)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    learned: bool = Field(
        True, description="Fit the weights on the stream; false: every source weighs 1.0."
    )
    depth: int = Field(
        50, ge=1, description="How deep in each source's list a next event is looked for."
    )
    half_life: float = Field(
        5_000.0, gt=0, description="Observations (next events) after which a gain counts half."
    )
    warmup: int = Field(
        200, ge=1, description="Observations before the weights leave their equal start."
    )
    floor: float = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description="Lowest gain relative to the best source's a source keeps (before the power).",
    )
    sharpness: tuple[Annotated[float, Field(ge=0.0)], ...] = Field(
        (0.0, 1.0, 2.0, 3.0, 4.0, 6.0),
        min_length=1,
        description="Powers tried on the relative gains; the one whose fused slates would have "
        "ranked users' next items best is served (0: plain reciprocal rank fusion).",
    )
    users: int = Field(
        100_000, ge=1, description="Users whose last slate's source lists are kept (LRU)."
    )


class RankerSettings(BaseModel):
    """The model path's candidate ranking (stream/ranker.py)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: Literal["rrf", "learned"] = Field(
        "learned",
        description="rrf: the sources fused by weighted reciprocal rank (stream/fusion.py); "
        "learned: a linear model over the encoder's dot product, co-visitation and trending "
        "scores and each source's rank, fitted on users' next events.",
    )
    learned: bool = Field(True, description="Fit the weights on the stream; false: keep START.")
    recent_items: int = Field(
        10, ge=1, description="The user's newest items the similarity features compare with."
    )
    learning_rate: float = Field(
        0.05, gt=0, description="Step of one next event's gradient on the ranker's weights."
    )
    users: int = Field(
        20_000,
        ge=1,
        description="Users whose last candidates' features are kept for their next event (LRU; "
        "about 3 KB each).",
    )


class TrainerSettings(BaseModel):
    """The continual trainer (``streamrec trainer``, stream/trainer.py)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    window_events: int = Field(
        50_000, ge=100, description="Most recent events kept and trained on."
    )
    holdout_events: int = Field(
        2_000, ge=10, description="Newest events of the window held out to judge a candidate."
    )
    every_events: int = Field(
        10_000, ge=1, description="New events after which a training cycle runs."
    )
    every_s: float = Field(
        300.0, gt=0, description="Seconds after which a cycle runs with fewer new events."
    )
    time_budget_s: float = Field(120.0, gt=0, description="Most seconds one training may take.")
    epochs: int | None = Field(
        None, ge=1, description="Most epochs per training (None: the training settings')."
    )
    tolerance: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="A candidate is announced when its held-out NDCG@10 is at least the served "
        "model's times (1 - tolerance).",
    )
    keep_checkpoints: int = Field(3, ge=1, description="Newest candidate folders kept on disk.")
    metrics_port: int | None = Field(
        None,
        ge=1,
        le=65_535,
        description="Serve Prometheus metrics (cycles by outcome, events read, the read loop's "
        "and the last cycle's age, held-out NDCG@10) on this port; none when unset.",
    )
    folder: Path | None = Field(
        None, description="Where candidates are written (default <cache>/trainer)."
    )

    @model_validator(mode="after")
    def _holdout_inside_window(self) -> TrainerSettings:
        if self.holdout_events >= self.window_events:
            raise ValueError(
                f"trainer.holdout_events ({self.holdout_events}) must be below "
                f"trainer.window_events ({self.window_events}): the rest is what a cycle trains on"
            )
        return self


class ServingSettings(BaseModel):
    """The recommendation path inside the worker."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    slate_size: int = Field(10, ge=1, le=200, description="Items per published slate.")
    candidates: int = Field(100, ge=1, description="Candidates retrieved before reranking.")
    batch_size: int = Field(256, ge=1, description="Most dirty users encoded in one call.")
    max_wait_ms: float = Field(
        5.0, ge=0, description="Longest a dirty user waits for its batch to fill (milliseconds)."
    )
    mode: Literal["heuristic", "model"] = Field(
        "heuristic", description="heuristic: trending + co-visitation; model: encoder + FAISS."
    )
    catalog_only: bool | Literal["auto"] = Field(
        "auto",
        description="Recommend only items with an active record on the items topic: true, "
        "always; auto, once the topic lists any item (a deployment without a catalog still gets "
        "slates); false, never, so slates may hold any item events or a model name (an article "
        "not published yet, an id a catalog record was refused for), which a frontend without "
        "that item's record cannot show.",
    )
    catalog_fill: int = Field(
        1_000,
        ge=0,
        description="A heuristic slate its sources leave short (a fresh deployment before any "
        "traffic, a user who has seen every candidate) is filled from this many newest catalog "
        "items (by created_at), unseen and servable ones only; 0: slates stay short.",
    )
    model_threads: int = Field(
        1,
        ge=1,
        description="Threads torch may use for the encoder in a worker. The event loop and "
        "faust's consumer thread share the process, and torch's waiting threads spin: give "
        "it more only on a host with cores to spare.",
    )
    model_process: bool = Field(
        True,
        description="Run the model path (encoder, FAISS, fusion, policy) in a child process, so "
        "it does not share the event loop's interpreter lock; false keeps it in a thread of "
        "the worker (one process fewer, for hosts with one core).",
    )
    covisit_history: int = Field(
        10,
        ge=1,
        description="The user's most recent distinct items whose co-visitation neighbours are "
        "candidates (each weighs covisit_decay times the next newer one).",
    )
    covisit_decay: float = Field(
        0.8,
        gt=0,
        le=1,
        description="How much each of the user's recent items counts against the next newer one "
        "in co-visitation candidates (1: all alike). Offline (bench quality --offline): 0.8 "
        "is best on ML-100K, 1.0 on a shop whose users view, click and buy in bursts.",
    )
    fusion: FusionSettings = Field(
        default_factory=FusionSettings, description="Learned weights of the candidate sources."
    )
    ranker: RankerSettings = Field(
        default_factory=RankerSettings, description="How the model path ranks its candidates."
    )
    learned_snapshot_s: float = Field(
        30.0,
        gt=0,
        description="How often the fusion learner's and the learned ranker's fitted figures are "
        "saved to <data_dir>/serving_learned.json (and at stop), which a restart continues from.",
    )
    web_port: int = Field(6066, ge=1, le=65535, description="Worker web server (/metrics, pull).")
    web_bind: str = Field(
        "127.0.0.1",
        description="Address the worker web server listens on; 0.0.0.0 in containers so "
        "Prometheus and the published port can reach /metrics.",
    )
    web_token: SecretStr | None = Field(
        None,
        description="Bearer token that /recommendations/{user_id} and /stats require "
        "(header 'Authorization: Bearer <token>'); they expose users' slates and figures. "
        "None: open, for a web server only the local machine reaches. /metrics stays open.",
    )
