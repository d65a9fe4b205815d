"""What the worker's slate building has learned on the stream, kept across restarts.

The fusion learner's decayed gains and chosen power (stream/fusion.py) and the model path's
learned ranker weights (stream/ranker.py, fitted in the model process) are learned from users'
next events. Held in memory only, a restarted worker served equal fusion weights for its first
``fusion.warmup`` next events and the ranker's start weights until it had relearned them. Every
``serving.learned_snapshot_s`` seconds, and when the worker stops, both are written to
``<data_dir>/serving_learned.json`` (atomically), and a starting worker continues from that
file: a kill -9 loses at most one interval of learning. A file that cannot be read is logged and
the worker starts afresh; it never stops a worker. Each worker keeps its own file, as it keeps
its own item-statistics snapshot.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from streamrec.stream.fusion import FusionLearner
from streamrec.stream.ranker import ranker_state
from streamrec.stream.snapshot_file import write_json_atomic

FORMAT = 1
log = logging.getLogger(__name__)

RankerFigures = Callable[[], Mapping[str, object] | None]
RankerRestore = Callable[[Mapping[str, float], int], None]


class ServingMemory:
    """Saves and restores the learned serving figures (see module docstring)."""

    def __init__(
        self,
        path: Path,
        fusion: FusionLearner,
        ranker: tuple[RankerFigures, RankerRestore] | None,
        interval_s: float,
    ) -> None:
        self.path = path
        self.fusion = fusion
        self.ranker = ranker  # None on the heuristic path, which has no ranker
        self.interval_s = interval_s

    def load(self) -> None:
        """Continue from the saved figures, if there is a usable file."""
        if not self.path.is_file():
            return
        try:
            saved = json.loads(self.path.read_text(encoding="utf-8"))
            if saved.get("format") != FORMAT:
                raise ValueError(f"format {saved.get('format')!r}, not {FORMAT}")
            self.fusion.restore(saved["fusion"])
            ranker = ranker_state(saved.get("ranker"))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.error("learned serving figures %s unusable, learning afresh: %s", self.path, exc)
            return
        if ranker is not None and self.ranker is not None:
            self.ranker[1](*ranker)
        log.info(
            "continuing the fusion learner (%d next events) and %s from %s",
            self.fusion.observations,
            "the learned ranker" if ranker is not None else "no ranker",
            self.path,
        )

    def snapshot(self) -> dict[str, Any]:
        """What the file holds: the fusion learner's figures and the ranker's, if any."""
        ranker = self.ranker[0]() if self.ranker is not None else None
        return {"format": FORMAT, "fusion": self.fusion.snapshot(), "ranker": ranker}

    def save(self) -> None:
        """Write the figures now, atomically (call on the event loop)."""
        write_json_atomic(self.path, self.snapshot())

    async def run(self) -> None:
        """Save every ``interval_s`` for the worker's lifetime, and once more when it stops."""
        try:
            while True:
                await asyncio.sleep(self.interval_s)
                # On the loop: under 2 KB, and a write in a thread could land after the last one.
                self._save_logged()
        finally:
            self._save_logged()

    def _save_logged(self) -> None:
        try:
            self.save()
        except OSError as exc:  # a full or read-only disk must not stop the worker
            log.warning("learned serving figures not saved to %s: %s", self.path, exc)
