"""``streamrec trainer``: keeps the encoder learning from the stream; swaps only a better one in.

A process of its own (consumer group ``<prefix>trainer`` on ``events``; it also reads the whole
``items`` topic for the catalog). It keeps the last ``trainer.window_events`` events in memory
(on start it rewinds each partition so the window fills from what Kafka still holds). Events are
new when they are younger than the newest event the served model was trained on (its checkpoint
records it; a checkpoint without it makes every event new), so a trainer started beside a model
that already learned the window idles instead of relearning it. Every ``trainer.every_events``
new events, or ``trainer.every_s`` seconds when fewer came, one cycle:

1. take the served model to be what the workers serve: the newest model announced on
   ``control`` whose checkpoint loads. Usually that is the trainer's own last candidate; after a
   ``streamrec publish-model`` it is the published one (once, the trainer kept its own and
   announced candidates fine-tuned from it over the published model);
2. hold out the newest ``trainer.holdout_events`` events of the window;
3. train a candidate on the rest (the encoder pipeline on RecBole files of the window,
   ``trainer.time_budget_s`` at most), starting from the served model's weights, with the
   shape and inputs its checkpoint records (models/encoder/warm_start.py says why), so items
   that appeared since the served model was trained get learned vectors instead of their
   cold-start text vectors; when no epoch beats the served weights on the window's
   validation there is no candidate, and the cycle ends;
4. score the candidate and the served model on the held-out events: for each whose user has an
   earlier event in the window, NDCG@10 of its item given the user's items before it, seen
   items excluded (the quality bench's protocol, offline);
5. announce the candidate on ``control`` (every worker hot-swaps, stream/control.py) only when
   it does not regress: its NDCG@10 at least the served one's times ``1 - trainer.tolerance``;
6. keep the newest ``trainer.keep_checkpoints`` checkpoint folders, delete older ones.

The model never sees a held-out event before it is scored, and every event a served model
trained on came before the model was announced: nothing is scored by a model that saw it.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from streamrec.errors import StreamrecError
from streamrec.stream.config import TrainerSettings
from streamrec.stream.contract import Event, Item

log = logging.getLogger(__name__)
# window, catalog, out, the served checkpoint to start from (None: from scratch) -> the
# candidate's checkpoint, or None when training found nothing better than the start
TrainFn = Callable[[Sequence[Event], Sequence[Item], Path, Path | None], Path | None]
# checkpoint, history, held out -> NDCG@10, or None when no held-out event could be scored
ScoreFn = Callable[[Path, Sequence[Event], Sequence[Event]], float | None]
AnnounceFn = Callable[[Path], Awaitable[str]]  # checkpoint -> the version announced
HorizonFn = Callable[[Path], int | None]  # checkpoint -> its newest training event time (ms)
# served model -> the newest announced model that loads, if any
NewestFn = Callable[[Path | None], Awaitable[Path | None]]


def no_horizon(checkpoint: Path) -> int | None:
    """Every event is new (for parts that do not record what a model was trained on)."""
    return None


async def nothing_announced(served: Path | None) -> Path | None:
    """No model announced (for parts that do not read the control topic)."""
    return None


# A cycle's outcome (the label of streamrec_trainer_cycles_total) and what its log line says.
OUTCOMES = {
    "announced": "announced",
    "no_candidate": "no candidate: no epoch beat the served weights on the window's validation",
    "nothing_ranked": "no held-out event could be scored, or the candidate ranked none in its "
    "top 10: not announced",
    "regressed": "the candidate regressed on the held-out events: dropped",
    "failed": "failed: served model kept",
}


@dataclass
class CycleResult:
    """What one training cycle did (also the trainer's log line and /stats of the process)."""

    trained_on: int
    held_out: int
    candidate_ndcg: float | None  # None: no candidate (nothing beat the served weights)
    served_ndcg: float | None
    announced: str | None
    seconds: float
    outcome: str = "announced"  # a key of OUTCOMES
    ended: float = field(default_factory=time.monotonic)


@dataclass
class ContinualTrainer:
    """The cycle (module docstring); ``train``, ``score`` and ``announce`` are its parts."""

    settings: TrainerSettings
    train: TrainFn
    score: ScoreFn
    announce: AnnounceFn
    folder: Path
    window: deque[Event] = field(init=False)
    catalog: dict[str, Item] = field(default_factory=dict)
    served: Path | None = None
    horizon_of: HorizonFn = no_horizon
    newest: NewestFn = nothing_announced
    since_cycle: int = 0
    history: deque[CycleResult] = field(default_factory=lambda: deque(maxlen=100))
    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    events_read: int = 0  # events taken into the window, re-sent ones included
    polled_at: float = field(default_factory=time.monotonic)  # the read loop's last poll
    horizon: int | None = field(init=False)
    ids: set[str] = field(init=False)  # event ids in the window: a re-sent event is not new

    def __post_init__(self) -> None:
        self.window = deque(maxlen=self.settings.window_events)
        self.ids = set()
        self.horizon = self._horizon(self.served)
        if self.horizon is not None:  # said, so an operator whose trainer idles sees why
            log.info(
                "the served model was trained on events up to %s: older events are context "
                "only and do not count towards a cycle",
                datetime.fromtimestamp(self.horizon / 1000, UTC).isoformat(),
            )

    def _horizon(self, checkpoint: Path | None) -> int | None:
        """The newest event time ``checkpoint`` learned, at most now: one event stamped up to
        a day ahead (the contract allows for clock skew) must not make every later one old."""
        trained = self.horizon_of(checkpoint) if checkpoint is not None else None
        return None if trained is None else min(trained, int(time.time() * 1000))

    def add(self, event: Event) -> None:
        """Take an event into the window; a re-sent one (its id is in the window) is dropped,
        as the worker drops it: twice in the held-out part it would score as a seen item."""
        self.events_read += 1
        if event.event_id in self.ids:
            return
        if len(self.window) == self.window.maxlen:
            self.ids.discard(self.window[0].event_id)
        self.window.append(event)
        self.ids.add(event.event_id)
        if self.horizon is None or event.ts > self.horizon:
            self.since_cycle += 1

    def due(self, seconds_since_cycle: float) -> bool:
        """A cycle is due after enough new events, or after enough time with some."""
        s = self.settings
        enough = len(self.window) > s.holdout_events
        timed = seconds_since_cycle >= s.every_s and self.since_cycle > 0
        return enough and (self.since_cycle >= s.every_events or timed)

    async def cycle(self) -> CycleResult:
        """Train, score, maybe announce (module docstring); blocking parts in a thread. A
        cycle that fails anywhere (the window's data, torch, a full disk, the broker at
        announce time) is logged and the served model kept: the trainer outlives it."""
        started = time.perf_counter()
        events = list(self.window)
        cut = len(events) - self.settings.holdout_events
        train, held = events[:cut], events[cut:]
        self.since_cycle = 0
        out = self.folder / f"candidate-{int(time.time() * 1000)}"
        try:
            ours, theirs, announced, outcome = await self._attempt(train, held, out)
        except StreamrecError as exc:
            log.error("training cycle failed, served model kept: %s", exc)
            ours = theirs = announced = None
            outcome = "failed"
        except Exception:
            log.exception("training cycle failed, served model kept")
            ours = theirs = announced = None
            outcome = "failed"
        if announced is None:
            shutil.rmtree(out, ignore_errors=True)
        self._prune()
        seconds = time.perf_counter() - started
        result = CycleResult(len(train), len(held), ours, theirs, announced, seconds, outcome)
        return self._record(result)

    async def _attempt(
        self, train: list[Event], held: list[Event], out: Path
    ) -> tuple[float | None, float | None, str | None, str]:
        """(candidate's score, served model's score, the version announced or None, why)."""
        await self._follow_control()
        catalog = list(self.catalog.values())
        candidate = await asyncio.to_thread(self.train, train, catalog, out, self.served)
        if candidate is None:
            # Announcing the served weights again would only churn the workers; and items the
            # served model lacks would lose their cold-start text vectors to untrained rows.
            return None, None, None, "no_candidate"
        ours = await asyncio.to_thread(self.score, candidate, train, held)
        theirs = await self._served_score(train, held)
        if not ours:
            # no held-out event could be scored, or the candidate ranked none of them in its top
            # 10 (a tie at 0 with the served model is no evidence either)
            return ours, theirs, None, "nothing_ranked"
        if theirs is not None and ours < theirs * (1.0 - self.settings.tolerance):
            return ours, theirs, None, "regressed"
        announced = await self.announce(candidate)
        self.served = candidate
        self.horizon = self._horizon(candidate)
        return ours, theirs, announced, "announced"

    async def _follow_control(self) -> None:
        """Serve (judge against, fine-tune from) the newest model announced on ``control``
        when it is not the one served now: one announced by someone else since."""
        try:
            announced = await self.newest(self.served)
        except Exception as exc:  # the control topic unreadable: this cycle keeps its model
            log.warning("cannot read the announced models, keeping %s: %r", self.served, exc)
            return
        served = self.served.resolve() if self.served is not None else None
        if announced is None or announced.resolve() == served:
            return  # nothing announced loads (keep what is served), or it is ours
        log.info(
            "serving model %s announced on control, not by this trainer: judging and "
            "fine-tuning it instead of %s",
            announced,
            self.served,
        )
        self.served = announced
        self.horizon = self._horizon(announced)

    async def _served_score(self, train: list[Event], held: list[Event]) -> float | None:
        """The served model's score; None without one, or when it cannot be read any more
        (a candidate that can beats it)."""
        if self.served is None:
            return None
        try:
            return await asyncio.to_thread(self.score, self.served, train, held)
        except StreamrecError as exc:
            log.warning("cannot score the served model %s: %s", self.served, exc)
            return None

    def _record(self, result: CycleResult) -> CycleResult:
        self.history.append(result)
        self.outcomes[result.outcome] += 1
        log.info(
            "training cycle: %s (trained on %d events, held out %d; held-out NDCG@10 candidate "
            "%s, served %s; %.1f s)",
            OUTCOMES[result.outcome],
            result.trained_on,
            result.held_out,
            _figure(result.candidate_ndcg),
            _figure(result.served_ndcg),
            result.seconds,
        )
        return result

    def _prune(self) -> None:
        """Keep the newest checkpoints (the served one always among them)."""
        folders = sorted(self.folder.glob("candidate-*"), key=lambda p: p.name)
        served = self.served.resolve() if self.served is not None else None
        for old in folders[: -self.settings.keep_checkpoints]:
            if served is None or (old.resolve() != served and old.resolve() not in served.parents):
                shutil.rmtree(old, ignore_errors=True)


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
