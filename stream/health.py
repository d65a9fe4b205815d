"""What the worker reports about its own health: agent crashes and the broker's reachability.

Agent crashes. faust restarts an agent that raised, about 5 s later, and the record it held is
neither applied nor dead-lettered. Ingest is built so that nothing in a record's content can
raise (stream/contract.py), so a crash means a bug or a failure nobody planned for.
``count_agent_crashes`` is the hook faust calls with the agent and the exception (wired through
stream/compat.py's ``on_agent_error``): it counts each crash in
``streamrec_agent_crashes_total{agent}``, which the ``StreamrecAgentCrashed`` alert watches.

Broker outages. The worker waits an outage out: faust's consumer keeps reconnecting, its
producer keeps unsent writes (for up to its 1,200 s request timeout), and each offset commit
waits until the table writes before it are acknowledged (stream/durability.py), so nothing
that is not durable is ever committed. ``BrokerWatch`` makes that wait visible and bounded:
every ``PROBE_INTERVAL_S`` it asks the broker for the events topic's metadata (not the whole
cluster's: on the bench's broker that parse was 13% of the worker's interpreter time) through
a client of its own, sets
``streamrec_broker_up`` and ``streamrec_broker_unreachable_seconds`` (time since the last
answer), logs the start of an outage once, a reminder once a minute and its end, and past
``kafka.outage_limit_s`` logs one CRITICAL line and stops the worker with exit code 1.

Why stopping is safe: offsets are committed only after the writes of the events before them
are acknowledged, so a restarted worker re-reads everything after the last commit and its state
skips what it already holds (stream/state.py). That is also why ``hard_exit_after`` may end
the process without a clean shutdown when faust's own shutdown, which flushes and commits
through the same broker, cannot finish: it is then a kill -9, which the worker recovers from.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError

from streamrec.errors import BrokerError
from streamrec.settings import KafkaSettings
from streamrec.stream.compat import fetch_topic_metadata
from streamrec.stream.connection import aiokafka_kwargs
from streamrec.stream.metrics import WorkerMetrics

log = logging.getLogger(__name__)

PROBE_INTERVAL_S = 2.0  # resolution of broker_up and of the limit; a metadata request is cheap
PROBE_TIMEOUT_S = 5.0  # a probe unanswered this long counts as a failure (a silent network)
REMIND_EVERY_S = 60.0  # one "still unreachable" line per minute of outage
EXIT_CODE = 1

Probe = Callable[[], Awaitable[object]]
AgentErrorHandler = Callable[[Any, BaseException], Awaitable[None]]


def count_agent_crashes(metrics: WorkerMetrics, agents: Iterable[str]) -> AgentErrorHandler:
    """A hook for stream/compat.py's ``on_agent_error``: count each crash of an agent by its
    name (faust logs the traceback and restarts the agent). The series of ``agents`` are
    exported from the start, at 0, so that ``increase()`` sees the first crash too."""
    for name in agents:
        metrics.agent_crashes.labels(name)

    async def on_error(agent: Any, exc: BaseException) -> None:
        metrics.agent_crashes.labels(str(getattr(agent, "name", "unknown"))).inc()

    return on_error


class MetadataProbe:
    """One metadata request for ``topic`` per call, through an aiokafka client of its own (the
    worker's connection settings: TLS and SASL included). Raises ``KafkaError`` or ``OSError``
    when the broker does not answer."""

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self.kwargs = aiokafka_kwargs(kafka)
        self.topic = topic
        self.client: AIOKafkaClient | None = None

    async def __call__(self) -> None:
        if self.client is None:
            client = AIOKafkaClient(**self.kwargs)
            try:
                await client.bootstrap()
            except BaseException:
                await client.close()
                raise
            self.client = client
            return
        if not await fetch_topic_metadata(self.client, self.topic):
            raise KafkaError(f"no broker answered a metadata request for {self.topic}")

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None


class BrokerWatch:
    """Probe the broker, publish its reachability, give up past ``limit_s`` (module doc).

    ``on_limit`` receives the ``BrokerError`` to stop with; ``clock`` is monotonic seconds.
    """

    def __init__(
        self,
        probe: Probe,
        metrics: WorkerMetrics,
        limit_s: float,
        on_limit: Callable[[BrokerError], Awaitable[None]],
        interval_s: float = PROBE_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.probe = probe
        self.metrics = metrics
        self.limit_s = limit_s
        self.on_limit = on_limit
        self.interval_s = interval_s
        self.clock = clock
        # The worker created its topics just before it started: the broker answered then.
        self.last_contact = clock()
        self.down_since: float | None = None
        self._reminded_at = 0.0
        metrics.broker_up.set(1)
        metrics.broker_unreachable_seconds.set(0)
        metrics.broker_outage_limit_seconds.set(limit_s)

    async def run(self) -> None:
        """Probe every ``interval_s`` until the limit is passed."""
        while not await self.check():
            await asyncio.sleep(self.interval_s)

    async def check(self) -> bool:
        """Probe once and update the metrics; True when the limit was passed (and
        ``on_limit`` called)."""
        error: BaseException | None = None
        try:
            await asyncio.wait_for(self.probe(), PROBE_TIMEOUT_S)
        except (KafkaError, OSError, TimeoutError) as exc:
            error = exc
        if error is not None:
            # out of the except block: a stop from here must not log the probe's traceback
            return await self._failed(error)
        now = self.clock()
        if self.down_since is not None:
            log.warning(
                "broker reachable again after %.0f s; offset commits resume",
                now - self.down_since,
            )
        self.down_since = None
        self.last_contact = now
        self.metrics.broker_up.set(1)
        self.metrics.broker_unreachable_seconds.set(0)
        return False

    async def _failed(self, exc: BaseException) -> bool:
        now = self.clock()
        outage = now - self.last_contact
        self.metrics.broker_up.set(0)
        self.metrics.broker_unreachable_seconds.set(outage)
        if self.down_since is None:
            self.down_since = self.last_contact
            self._reminded_at = now
            log.warning(
                "broker unreachable (%s); holding offset commits and waiting for it, at most "
                "%.0f s (kafka.outage_limit_s)",
                _reason(exc),
                self.limit_s,
            )
        if outage > self.limit_s:
            message = (
                f"broker unreachable for {outage:.0f} s, past kafka.outage_limit_s = "
                f"{self.limit_s:.0f} s: stopping the worker (exit code {EXIT_CODE}). Nothing is "
                "lost: no offset was committed before its writes were in Kafka, so a restart "
                "(by a supervisor) resumes from the last commit"
            )
            log.critical("%s", message)
            await self.on_limit(BrokerError(message))
            return True
        if now - self._reminded_at >= REMIND_EVERY_S:
            self._reminded_at = now
            log.warning(
                "broker still unreachable after %.0f s (the worker stops at %.0f s)",
                outage,
                self.limit_s,
            )
        return False


def _reason(exc: BaseException) -> str:
    name, text = type(exc).__name__, str(exc)
    # aiokafka's errors put their class name in str() already
    return text if text.startswith(name) else f"{name}: {text}" if text else name


def hard_exit_after(seconds: float, code: int = EXIT_CODE) -> threading.Timer:
    """End the process with ``code`` after ``seconds`` unless it has ended by then (a daemon
    thread: it works while the event loop is stuck in a shutdown that waits for the broker)."""

    def end() -> None:
        log.critical("shutdown did not finish in %.0f s; exiting with code %d", seconds, code)
        logging.shutdown()
        os._exit(code)

    timer = threading.Timer(seconds, end)
    timer.daemon = True
    timer.start()
    return timer
