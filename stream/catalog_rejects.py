"""Which refused catalog records this worker has dead-lettered already.

Every worker reads the whole compacted ``items`` topic at each start, and compaction keeps a
refused record as long as its key has no later one, so each start sent every refused record
to the dead-letter topic again. The worker now remembers, per items partition, the offset after
the last record it dead-lettered and that record's timestamp (``<data dir>/catalog_rejects.json``)
and does not send a record again that lies below both. The timestamp guards against a topic
deleted and created again, whose offsets start over with newer records. Each worker keeps its
own file, so a record is dead-lettered once per worker, not once per start.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from streamrec.stream.snapshot_file import write_json_atomic

log = logging.getLogger(__name__)


class RejectedRecords:
    """Per items partition: (offset after the last dead-lettered record, its timestamp ms)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.marks: dict[int, tuple[int, int]] = _read(path)
        self.changed = False

    def known(self, partition: int, offset: int, timestamp_ms: int) -> bool:
        """Whether this worker dead-lettered the record at ``offset`` on an earlier run."""
        mark = self.marks.get(partition)
        return mark is not None and offset < mark[0] and timestamp_ms <= mark[1]

    def note(self, partition: int, offset: int, timestamp_ms: int) -> None:
        """The record at ``offset`` was dead-lettered."""
        end, newest = self.marks.get(partition, (0, 0))
        self.marks[partition] = (max(end, offset + 1), max(newest, timestamp_ms))
        self.changed = True

    def save(self) -> None:
        """Write the marks if they changed (after the records were dead-lettered)."""
        if self.changed:
            body = {str(p): list(mark) for p, mark in sorted(self.marks.items())}
            write_json_atomic(self.path, {"partitions": body})
            self.changed = False


def _read(path: Path) -> dict[int, tuple[int, int]]:
    if not path.exists():
        return {}
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
        return {int(p): (int(m[0]), int(m[1])) for p, m in body["partitions"].items()}
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        # Losing the marks only means dead-lettering the refused records once more.
        log.warning(
            "%s unreadable (%s); refused catalog records may be dead-lettered again", path, exc
        )
        return {}
