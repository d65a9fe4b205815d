"""Events that arrived on another partition than their key's are forwarded to it.

Every worker table (a user's state with its seen set and dedupe ids, the impressions its
responses join) lives in the partition of the user's events, so all of one user's events must
reach one partition. Kafka's default partitioner (Java clients, aiokafka, kafka-python) puts a
key on murmur2(key) mod the partition count; librdkafka's default (confluent-kafka, kcat and
most non-JVM clients) hashes with CRC32. One service publishing with the other partitioner split
users' states in two and dropped rewards as ``unknown_rec``. Such an event is sent on to its
key's partition instead of being applied where it landed: there it is applied in order with
the user's other events, and a crash before the commit re-sends a copy the user's dedupe ids
drop. Each forward is counted and logged with the fix (the producer's partitioner). The key
checks that come first (a record keyed by its user or item id) live here too.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Awaitable, Callable
from typing import Any

import faust
from aiokafka.partitioner import murmur2
from prometheus_client import Counter

from streamrec.errors import BrokerError, ContractError
from streamrec.stream.contract_fields import MAX_ID_CHARS

log = logging.getLogger(__name__)
# (key, value, partition, headers) -> sent: the worker passes its events topic's ``send``.
ForwardFn = Callable[[bytes, bytes, int, Any], Awaitable[Any]]
SHOWN_KEY_BYTES = 64
FORWARDED = "streamrec-forwarded"  # header on a forwarded copy


def check_key(key: object, expected: str, record: str, why: str) -> None:
    """ContractError ``bad_key`` unless ``key`` is ``expected`` in UTF-8: ``record`` names the
    record in the message (``"record"``, ``"catalog record"``), ``why`` says what the key is for."""
    if key != expected.encode():
        got = "has no key" if key is None else f"key {shown_key(key)} differs from its id"
        raise ContractError(
            "bad_key", f"{record} {got} ({expected!r}){_alike(key, expected)}; {why}"
        )


def shown_key(key: object) -> str:
    """``key`` for a message, as text when it is UTF-8 (``b'Zo\xc3\xab'`` read as noise to a
    new user): a hostile key can be as large as the broker allows."""
    if isinstance(key, bytes):
        shown = key[:SHOWN_KEY_BYTES]
        try:
            text = repr(shown.decode())
        except UnicodeDecodeError:
            text = repr(shown)
        return text if len(key) <= SHOWN_KEY_BYTES else f"{text}... ({len(key)} bytes)"
    return repr(key)


def _alike(key: object, expected: str) -> str:
    """What to add when the two print alike: the same text in another Unicode form. Not for a
    key far longer than an id can be: normalizing a hostile run of combining marks takes time
    quadratic in its length (seconds for 80 KB, on the event loop)."""
    if not isinstance(key, bytes) or len(key) > 4 * MAX_ID_CHARS:
        return ""
    try:
        text = key.decode()
    except UnicodeDecodeError:
        return ""
    if text != expected and _nfc(text) == _nfc(expected):
        return " (the same text in another Unicode normalization form: normalize ids to NFC)"
    return ""


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def home_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` (Java's ``Utils.toPositive``)."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions


class Router:
    """Forwards events that landed on a partition other than their key's (see module doc)."""

    def __init__(self, partitions: int | None, send: ForwardFn, forwarded: Counter) -> None:
        self.partitions = partitions  # the events topic's count; None: nothing is forwarded
        self.send = send
        self.forwarded = forwarded
        self.count = 0
        self.pending: list[Awaitable[Any]] = []  # forwards not yet known to be in Kafka

    async def forward(self, key: bytes, raw: bytes, partition: int, headers: Any = None) -> bool:
        """Send the record (with its ``headers``) on and say True when ``partition`` is not
        its key's home."""
        count = self.partitions
        kept = list(dict(headers or {}).items())
        if not count or partition >= count or any(name == FORWARDED for name, _ in kept):
            # a copy is never sent on again: workers started with different counts (the topic
            # grown while one ran) would otherwise pass it back and forth for good
            return False
        home = home_partition(key, count)
        if home == partition:
            return False
        log.warning(
            "an event of user %r arrived on events partition %s; Kafka's default partitioner "
            "(murmur2 of the key) puts it on %s: forwarded there. A producer of the events "
            "topic uses another partitioner (librdkafka's default is CRC32: set "
            "partitioner=murmur2_random there; kafka-go's Writer ignores keys: set Balancer: "
            "&kafka.Murmur2Balancer{}), which would split users' states.",
            key[:64].decode(errors="replace"),
            partition,
            home,
        )
        self.pending.append(await self.send(key, raw, home, [*kept, (FORWARDED, b"1")]))
        self.count += 1
        self.forwarded.inc()
        return True

    async def settle(self) -> None:
        """Wait for every forward sent so far; BrokerError if Kafka refused one (for example,
        no write access to the events topic): its source offset must not be committed, or the
        event would be applied nowhere. Called before each offset commit."""
        pending, self.pending = self.pending, []
        for sent in pending:
            try:
                await sent
            except Exception as exc:  # whatever the producer failed with: the commit must not run
                raise BrokerError(
                    f"an event could not be forwarded to its partition ({exc!r}); workers "
                    "need write access to the events topic, or publish events with Kafka's "
                    "default partitioner"
                ) from exc


def events_router(topic: faust.TopicT, partitions: int | None, forwarded: Counter) -> Router:
    """A ``Router`` for the worker's events ``topic`` of ``partitions`` (read at start: the
    count is fixed while a worker runs, stream/topics.py; faust's consumer knows it only on the
    group's leader, which alone forwarded). A forward is queued on faust's producer; its
    acknowledgement is awaited before the next commit (``settle``)."""
    return Router(
        partitions,
        lambda key, value, partition, headers: topic.send(
            key=key, value=value, partition=partition, headers=headers
        ),
        forwarded,
    )
