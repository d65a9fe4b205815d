"""Bounded logs: a repeated warning is written once per interval, with a count of the rest.

Why: while the broker is down, aiokafka's reconnect loops log an ERROR per attempt per
connection; a 30 s outage wrote about 187,000 lines, so a long one could fill a disk. The
``RepeatFilter`` lets the first record of each (logger, message template) through, then at most
one per ``interval_s``; the one that passes after a quiet stretch says how many were held back
(``... [suppressed 1234 similar in the last 5 s]``). Records below ``level`` are not touched.

Keys are message *templates* (``record.msg`` before ``%`` formatting), so "Unable connect to
node with id 1: ..." is one key whatever the error text. A count still held back when its key
goes quiet is written by ``flush`` (every ``interval_s`` on a thread ``install`` starts), so a
burst of dead letters logs its first line and then how many more there were, not one line alone.

``install`` also makes aiokafka's ERROR about an error it retries by itself a WARNING.
Nothing is installed at import time: ``install`` is called by the worker command once faust has
configured its handlers (``stream/worker.py``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from aiokafka.errors import KafkaError

# Attribute set on a record once decided, so the filter can sit on several handlers and a record
# reaching all of them is counted once and marked once.
_DECIDED = "_streamrec_repeat_passed"
log = logging.getLogger(__name__)


@dataclass
class _Seen:
    passed_at: float
    suppressed: int = 0
    held_at: float = 0.0  # when the last suppressed record came


class RepeatFilter(logging.Filter):
    """Pass the first record of each (logger, template), then one per ``interval_s`` seconds.

    ``clock`` returns seconds (monotonic); ``max_keys`` bounds memory against messages that are
    built without a template (f-strings make every record its own key): the oldest key is dropped.
    """

    def __init__(
        self,
        interval_s: float,
        level: int = logging.WARNING,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 1024,
    ) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.level = level
        self.clock = clock
        self.max_keys = max_keys
        self._seen: dict[tuple[str, str], _Seen] = {}
        self._lock = threading.Lock()  # flush runs on its own thread
        self.stopped = threading.Event()  # ends the thread ``install`` started

    def filter(self, record: logging.LogRecord) -> bool:
        decided = getattr(record, _DECIDED, None)
        if decided is not None:
            return bool(decided)
        with self._lock:
            passed = self._decide(record)
        setattr(record, _DECIDED, passed)
        return passed

    def _decide(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.level or self.interval_s <= 0:
            return True
        key = (record.name, str(record.msg))
        now = self.clock()
        seen = self._seen.get(key)
        if seen is None:
            if len(self._seen) >= self.max_keys:
                del self._seen[next(iter(self._seen))]  # dicts keep insertion order: the oldest
            self._seen[key] = _Seen(passed_at=now)
            return True
        if now - seen.passed_at < self.interval_s:
            seen.suppressed += 1
            seen.held_at = now
            return False
        if seen.suppressed:
            # No '%' in the suffix, so the record's own %-formatting with its args is unchanged.
            record.msg = (
                f"{record.msg} [suppressed {seen.suppressed} similar in the last "
                f"{now - seen.passed_at:.0f} s]"
            )
        seen.passed_at = now
        seen.suppressed = 0
        return True

    def flush(self) -> None:
        """Log the count of each key whose records have stopped (none for ``interval_s``) with
        some held back: a key still logging reports its count on its next passing line, with
        the real message, so summaries never stand in for a running burst's lines."""
        now = self.clock()
        with self._lock:
            due = [
                (key, seen.suppressed, now - seen.passed_at)
                for key, seen in self._seen.items()
                if seen.suppressed and now - seen.held_at >= self.interval_s
            ]
            for key, _, _ in due:
                self._seen[key].suppressed = 0
        for (name, template), count, span in due:
            # Marked as decided: one summary line per key, however many keys are due at once.
            log.warning(
                "[suppressed %d similar in the last %.0f s] %s: %s",
                count,
                span,
                name,
                template[:200],
                extra={_DECIDED: True},
            )


class RetriedAsWarning(logging.Filter):
    """aiokafka's ERROR about a Kafka error it retries by itself is a WARNING: a fresh broker
    has no group coordinator until its offsets topic exists, and a new user's first start
    logged ``[ERROR] Group Coordinator Request failed: GroupCoordinatorNotAvailableError``."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.args[0] if isinstance(record.args, tuple) and record.args else None
        retried = isinstance(error, KafkaError) and error.retriable
        if record.levelno == logging.ERROR and record.name.startswith("aiokafka") and retried:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def install(interval_s: float, handlers: Iterable[logging.Handler] | None = None) -> RepeatFilter:
    """Put one ``RepeatFilter`` on ``handlers`` (default: the root logger's) and flush it every
    ``interval_s`` on a daemon thread; returns it.

    On handlers, not loggers: a logger's filter sees only records logged on that very logger,
    while aiokafka logs on a dozen child loggers that all reach the root handlers.
    """
    repeat, retried = RepeatFilter(interval_s), RetriedAsWarning()
    for handler in logging.getLogger().handlers if handlers is None else handlers:
        handler.addFilter(retried)
        handler.addFilter(repeat)
    if interval_s > 0:
        flusher = threading.Thread(
            target=_flush_forever, args=(repeat,), name="log repeat flusher", daemon=True
        )
        flusher.start()
    return repeat


def _flush_forever(repeat: RepeatFilter) -> None:
    while not repeat.stopped.wait(repeat.interval_s):
        repeat.flush()
