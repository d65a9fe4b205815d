"""Bounded logs: a repeated warning is written once per interval, with a count of the rest.

Why: while the broker is down, aiokafka's reconnect loops log an ERROR per attempt per
connection; a 30 s outage wrote about 187,000 lines, so a long one could fill a disk. The
``RepeatFilter`` lets the first record of each (logger, message template) through, then at most
one per ``interval_s``; the one that passes after a quiet stretch says how many were held back
(``... [suppressed 1234 similar in the last 5 s]``). Records below ``level`` are not touched.

Keys are message *templates* (``record.msg`` before ``%`` formatting), so "Unable connect to
node with id 1: ..." is one key whatever the error text. The last suppressed count of a key is
reported only when that key logs again; an outage that ends is followed by silence, and the
metrics (not the log) are the place to read how long it lasted.

Nothing is installed at import time: ``install`` is called by the worker command once faust has
configured its handlers (``stream/worker.py``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

# Attribute set on a record once decided, so the filter can sit on several handlers and a record
# reaching all of them is counted once and marked once.
_DECIDED = "_streamrec_repeat_passed"


@dataclass
class _Seen:
    passed_at: float
    suppressed: int = 0


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

    def filter(self, record: logging.LogRecord) -> bool:
        decided = getattr(record, _DECIDED, None)
        if decided is not None:
            return bool(decided)
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


def install(interval_s: float, handlers: Iterable[logging.Handler] | None = None) -> RepeatFilter:
    """Put one ``RepeatFilter`` on ``handlers`` (default: the root logger's); returns it.

    On handlers, not loggers: a logger's filter sees only records logged on that very logger,
    while aiokafka logs on a dozen child loggers that all reach the root handlers.
    """
    repeat = RepeatFilter(interval_s)
    for handler in logging.getLogger().handlers if handlers is None else handlers:
        handler.addFilter(repeat)
    return repeat
