"""Which refused catalog records this worker has dead-lettered already.

Every worker reads the whole compacted ``items`` topic at each start, and compaction keeps a
refused record as long as its key has no later one, so each start sent every refused record
to the dead-letter topic again. The worker now remembers each record it dead-lettered (items
partition, offset, timestamp; ``<data dir>/catalog_rejects.json``), once the broker has
acknowledged it, and does not send it again. A record refused only since an upgrade is not in
the list and is sent; the timestamp tells a record of a topic deleted and created again (its
offsets start over) from the one sent before. Each worker keeps its own file, so a record is
dead-lettered once per worker, not once per start.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from streamrec.stream.snapshot_file import write_json_atomic

log = logging.getLogger(__name__)
# Refused records are few (a catalog feed's mistakes); a flood keeps only the newest.
MAX_REMEMBERED = 100_000

Record = tuple[int, int, int]  # items partition, offset, timestamp ms


class RejectedRecords:
    """The catalog records this worker dead-lettered on this or an earlier run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sent: dict[Record, None] = dict.fromkeys(_read(path))  # in the order sent
        self.changed = False

    def known(self, partition: int, offset: int, timestamp_ms: int) -> bool:
        """Whether this worker dead-lettered the record at ``offset`` already."""
        return (partition, offset, timestamp_ms) in self.sent

    def note(self, partition: int, offset: int, timestamp_ms: int) -> None:
        """The record at ``offset`` was dead-lettered (and the broker has it)."""
        self.sent[(partition, offset, timestamp_ms)] = None
        while len(self.sent) > MAX_REMEMBERED:
            del self.sent[next(iter(self.sent))]
        self.changed = True

    def save(self) -> None:
        """Write the list if it changed."""
        if self.changed:
            write_json_atomic(self.path, {"sent": [list(record) for record in self.sent]})
            self.changed = False


def _read(path: Path) -> list[Record]:
    if not path.exists():
        return []
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
        return [(int(p), int(o), int(t)) for p, o, t in body["sent"]]
    except (ValueError, KeyError, TypeError) as exc:
        # Losing the list only means dead-lettering the refused records once more.
        log.warning(
            "%s unreadable (%s); refused catalog records may be dead-lettered again", path, exc
        )
        return []
