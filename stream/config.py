"""Settings of the streaming worker: state tables and the serving path."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class StateSettings(BaseModel):
    """Per-user state, deduplication, item statistics and the table store."""

    model_config = ConfigDict(frozen=True)

    store_url: str = Field(
        "rocksdb://", description="Faust table store: rocksdb:// in production, memory:// in tests."
    )
    data_dir: Path = Field(
        Path("./.streamrec-worker"),
        description="Worker data folder (RocksDB lives here). One folder per worker process.",
    )
    recent_length: int = Field(50, ge=1, le=1000, description="Events kept verbatim per user.")
    dedupe_window: int = Field(
        128, ge=1, description="Recent event ids remembered per user to drop producer duplicates."
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
        description="Decoded values kept in memory per cached table (user_state, trending, "
        "covisit); values not yet flushed are always kept.",
    )
    covisit_window: int = Field(
        3, ge=1, description="How many previous items of the user an event co-visits with."
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


class ServingSettings(BaseModel):
    """The recommendation path inside the worker."""

    model_config = ConfigDict(frozen=True)

    slate_size: int = Field(10, ge=1, le=200, description="Items per published slate.")
    candidates: int = Field(100, ge=1, description="Candidates retrieved before reranking.")
    batch_size: int = Field(256, ge=1, description="Most dirty users encoded in one call.")
    max_wait_ms: float = Field(
        5.0, ge=0, description="Longest a dirty user waits for its batch to fill (milliseconds)."
    )
    mode: Literal["heuristic", "model"] = Field(
        "heuristic", description="heuristic: trending + co-visitation; model: encoder + FAISS."
    )
    web_port: int = Field(6066, ge=1, le=65535, description="Worker web server (/metrics, pull).")
    web_bind: str = Field(
        "127.0.0.1",
        description="Address the worker web server listens on; 0.0.0.0 in containers so "
        "Prometheus and the published port can reach /metrics.",
    )
