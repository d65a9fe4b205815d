"""aiokafka clients that fall back to their bootstrap servers when their cluster view is gone.

A compat patch like those of ``stream/compat.py`` (it touches ``AIOKafkaClient._metadata_update``
and the client's connection settings, listed in its ``TOUCH_POINTS``), kept apart because it is
one concept of its own: re-bootstrapping, which the Java client has and aiokafka lacks.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Iterable
from typing import Any

from aiokafka.client import AIOKafkaClient
from aiokafka.cluster import ClusterMetadata
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaError
from aiokafka.protocol.metadata import MetadataRequest

log = logging.getLogger(__name__)

REBOOTSTRAP_EVERY_S = 1.0
REBOOTSTRAP_ASK_S = 3.0  # per bootstrap host: connect and one metadata answer
_last_rebootstrap: weakref.WeakKeyDictionary[AIOKafkaClient, float] = weakref.WeakKeyDictionary()


def rebootstrap_on_outage() -> None:
    """Make every aiokafka client ask its bootstrap servers for metadata when no broker of its
    own cluster view answers (``AIOKafkaClient._metadata_update``). Once, for every client of
    the process: faust's consumer and producer, streamrec's own clients, the health probe.

    aiokafka asks only the brokers of its current view (aio-libs/aiokafka#456; the Java client
    has ``metadata.recovery.strategy=rebootstrap``). A view refreshed while other brokers were
    fenced lists the one broker that stayed up; when that one dies, the client stalls for as
    long as it is down although the others lead every partition (seen on 3 brokers).
    """
    update = AIOKafkaClient._metadata_update
    if getattr(update, "rebootstraps", False):
        return

    async def rebootstrapping(
        self: AIOKafkaClient, cluster_metadata: ClusterMetadata, topics: Iterable[str] | None
    ) -> bool:
        if await update(self, cluster_metadata, topics):
            return True
        # aiokafka retries a failed update many times a second; while every broker is down a
        # bootstrap address that is not a broker's own (a DNS alias) is tried once a second.
        now = time.monotonic()
        if now - _last_rebootstrap.get(self, -REBOOTSTRAP_EVERY_S) < REBOOTSTRAP_EVERY_S:
            return False
        _last_rebootstrap[self] = now
        metadata = await _bootstrap_metadata(self, topics)
        if metadata is None:
            return False
        cluster_metadata.update_metadata(metadata)
        if cluster_metadata is not self.cluster:
            # A throwaway view (the health probe's one-topic ask) was answered: the client's
            # own view is as stale, so refresh it for its own topics, in its own task.
            self.force_metadata_update()
        return True

    rebootstrapping.rebootstraps = True  # type: ignore[attr-defined]  # marks an installed wrapper
    AIOKafkaClient._metadata_update = rebootstrapping


async def _bootstrap_metadata(client: AIOKafkaClient, topics: Iterable[str] | None) -> Any:
    """The first answer listing brokers from a bootstrap host that is not a broker of the
    client's view (those were just asked), each over a fresh connection; None if none.

    The request names the same ``topics`` as the failed one: an answer for other topics would
    make the consumer read its subscribed topics as deleted.
    """
    known = {(broker.host, broker.port): broker.nodeId for broker in client.cluster.brokers()}
    request = MetadataRequest(list(topics) if topics else None)
    for host, port, _ in client.hosts:
        if (host, port) in known:
            continue
        metadata = await _ask(client, host, port, request)
        if metadata is not None and metadata.brokers:
            log.warning(
                "no broker of this client's cluster view %s answered a metadata request; "
                "re-bootstrapped from %s:%s, which lists brokers %s",
                sorted(known.values()),
                host,
                port,
                sorted(broker[0] for broker in metadata.brokers),
            )
            return metadata
    return None


async def _ask(client: AIOKafkaClient, host: str, port: int, request: MetadataRequest) -> Any:
    """``request``'s answer from ``host:port`` within ``REBOOTSTRAP_ASK_S``; None if none."""
    # The client's metadata task awaits this: an address that drops packets (a Service with
    # no endpoints) would hold it for the request timeout (up to 20 minutes for faust's
    # producer), and with it every refresh, after the broker is back.
    try:
        return await asyncio.wait_for(_ask_now(client, host, port, request), REBOOTSTRAP_ASK_S)
    except TimeoutError:
        log.debug("bootstrap host %s:%s did not answer within %s s", host, port, REBOOTSTRAP_ASK_S)
        return None


async def _ask_now(client: AIOKafkaClient, host: str, port: int, request: MetadataRequest) -> Any:
    """``request``'s answer from ``host:port`` over a connection of its own, made with the
    client's settings (TLS and SASL included) and closed after; None if it does not answer."""
    try:
        conn = await create_conn(
            host,
            port,
            client_id=client._client_id,
            request_timeout_ms=client._request_timeout_ms,
            ssl_context=client._ssl_context,
            security_protocol=client._security_protocol,
            max_idle_ms=client._connections_max_idle_ms,
            sasl_mechanism=client._sasl_mechanism,
            sasl_plain_username=client._sasl_plain_username,
            sasl_plain_password=client._sasl_plain_password,
            sasl_kerberos_service_name=client._sasl_kerberos_service_name,
            sasl_kerberos_domain_name=client._sasl_kerberos_domain_name,
            sasl_oauth_token_provider=client._sasl_oauth_token_provider,
        )
    except (TimeoutError, OSError, KafkaError) as err:
        log.debug("bootstrap host %s:%s unreachable: %r", host, port, err)
        return None
    try:
        return await conn.send(request)
    except (TimeoutError, KafkaError) as err:
        log.debug("bootstrap host %s:%s did not answer metadata: %r", host, port, err)
        return None
    finally:
        conn.close()
