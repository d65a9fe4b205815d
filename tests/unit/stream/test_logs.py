"""The repeat filter on a captured handler, with a clock the test moves."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from aiokafka.errors import GroupAuthorizationFailedError, GroupCoordinatorNotAvailableError

from streamrec.stream.logs import RepeatFilter, RetriedAsWarning, install


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def captured(clock: Clock) -> Iterator[Captured]:
    handler = Captured()
    handler.addFilter(RepeatFilter(5.0, clock=clock, max_keys=3))
    log = logging.getLogger("test.logs.client")
    log.addHandler(handler)
    log.propagate = False
    try:
        yield handler
    finally:
        log.removeHandler(handler)
        log.propagate = True


def _log() -> logging.Logger:
    return logging.getLogger("test.logs.client")


def test_first_passes_repeats_are_held_back_and_counted_once_per_interval(
    captured: Captured, clock: Clock
) -> None:
    for attempt in range(700):  # a reconnect loop: same template, different arguments
        _log().error("Unable connect to node with id %s: %s", 1, f"refused #{attempt}")
        clock.now += 1 / 64  # exact in binary, so 320 steps are exactly 5 s
    # The first, then one each time 5 s have passed since the last one written.
    assert captured.lines == [
        "Unable connect to node with id 1: refused #0",
        "Unable connect to node with id 1: refused #320 [suppressed 319 similar in the last 5 s]",
        "Unable connect to node with id 1: refused #640 [suppressed 319 similar in the last 5 s]",
    ]


def test_each_template_and_each_logger_has_its_own_budget(captured: Captured) -> None:
    for _ in range(3):
        _log().error("Unable connect to node with id %s", 1)
        _log().error("Unable to update metadata from %s", [1])
        logging.getLogger("test.logs.client.other").error("Unable connect to node with id %s", 1)
    assert captured.lines == [
        "Unable connect to node with id 1",
        "Unable to update metadata from [1]",
        "Unable connect to node with id 1",
    ]


def test_records_below_warning_are_untouched(captured: Captured) -> None:
    _log().setLevel(logging.INFO)
    try:
        for n in range(4):
            _log().info("fetched %s", n)
    finally:
        _log().setLevel(logging.NOTSET)
    assert captured.lines == [f"fetched {n}" for n in range(4)]


def test_a_burst_that_goes_quiet_is_followed_by_its_count(clock: Clock) -> None:
    # 46 dead letters within a second wrote one line and then nothing: an operator could not
    # tell one bad record from many.
    repeat = RepeatFilter(5.0, clock=clock)
    burst, summary = Captured(), Captured()
    burst.addFilter(repeat)
    summary.addFilter(repeat)
    log, logs_log = logging.getLogger("test.logs.burst"), logging.getLogger("streamrec.stream.logs")
    log.addHandler(burst)
    logs_log.addHandler(summary)
    try:
        for n in range(46):
            log.warning("dead-lettered %s (%s)", n, "not_utf8")
        log.warning("other %s", 1)  # passed, nothing held back: no summary
        repeat.flush()  # not quiet for 5 s yet
        clock.now += 5
        repeat.flush()
        repeat.flush()  # reported once
        # A burst still running reports on its own next line, not in summaries.
        for _ in range(3):
            for n in range(9):
                clock.now += 0.5
                log.warning("dead-lettered %s (%s)", n, "bad_key")
                repeat.flush()
    finally:
        log.removeHandler(burst)
        logs_log.removeHandler(summary)
    assert burst.lines[:2] == ["dead-lettered 0 (not_utf8)", "other 1"]
    assert summary.lines == [
        "[suppressed 45 similar in the last 5 s] test.logs.burst: dead-lettered %s (%s)"
    ]
    # 27 records 0.5 s apart: a line every 5 s, each with the count held back before it
    assert [line.split(" [")[0] for line in burst.lines[2:]] == [
        "dead-lettered 0 (bad_key)",
        "dead-lettered 1 (bad_key)",
        "dead-lettered 2 (bad_key)",
    ]
    assert all("[suppressed 9 similar" in line for line in burst.lines[3:])


def test_key_table_is_bounded_and_forgets_the_oldest(captured: Captured) -> None:
    for template in ("a %s", "b %s", "c %s", "d %s"):  # max_keys=3: "a" is dropped for "d"
        _log().warning(template, 1)
    _log().warning("a %s", 2)  # forgotten, so it counts as new and passes
    _log().warning("d %s", 2)  # still remembered: held back
    assert captured.lines == ["a 1", "b 1", "c 1", "d 1", "a 2"]


def test_zero_interval_writes_every_record(clock: Clock) -> None:
    handler = Captured()
    handler.addFilter(RepeatFilter(0.0, clock=clock))
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom %s", (1,), None)
    assert all(handler.filter(record) for _ in range(3))


def test_one_filter_on_several_handlers_counts_a_record_once() -> None:
    first, second = Captured(), Captured()
    log = logging.getLogger("test.logs.shared")
    log.propagate = False
    log.handlers = [first, second]
    repeat = install(60.0, [first, second])
    try:
        for _ in range(3):
            log.error("same %s", "thing")
    finally:
        repeat.stopped.set()
        log.handlers = []
        log.propagate = True
    # Counted per record, not per handler: both handlers write the first, neither a repeat.
    assert first.lines == second.lines == ["same thing"]


def test_an_error_aiokafka_retries_by_itself_is_a_warning() -> None:
    def record(name: str, error: Exception) -> logging.LogRecord:
        return logging.LogRecord(
            name, logging.ERROR, __file__, 1, "Group Coordinator Request failed: %s", (error,), None
        )

    retried = record("aiokafka.consumer.group_coordinator", GroupCoordinatorNotAvailableError())
    refused = record("aiokafka.consumer.group_coordinator", GroupAuthorizationFailedError())
    ours = record("streamrec.stream.app", GroupCoordinatorNotAvailableError())
    for each in (retried, refused, ours):
        assert RetriedAsWarning().filter(each)  # every record is still written
    assert [r.levelname for r in (retried, refused, ours)] == ["WARNING", "ERROR", "ERROR"]
