"""How every streamrec client connects to Kafka: aiokafka keyword arguments and faust credentials,
both built from the one ``KafkaSettings`` so the CLI tools and the worker never disagree."""

from __future__ import annotations

import ssl
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer
from aiokafka.helpers import create_ssl_context

from streamrec.errors import ConfigError
from streamrec.settings import KafkaSettings
from streamrec.stream.rebootstrap import rebootstrap_on_outage


def _ssl_context(kafka: KafkaSettings) -> ssl.SSLContext | None:
    if kafka.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    context: ssl.SSLContext = create_ssl_context(
        cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None,
        certfile=str(kafka.ssl_certfile) if kafka.ssl_certfile else None,
        keyfile=str(kafka.ssl_keyfile) if kafka.ssl_keyfile else None,
    )
    return context


def _sasl_parts(kafka: KafkaSettings) -> tuple[str, str, str]:
    if not (kafka.sasl_mechanism and kafka.sasl_username and kafka.sasl_password):
        raise ConfigError(
            f"security_protocol {kafka.security_protocol} needs STREAMREC_KAFKA__SASL_MECHANISM, "
            "STREAMREC_KAFKA__SASL_USERNAME and STREAMREC_KAFKA__SASL_PASSWORD"
        )
    return kafka.sasl_mechanism, kafka.sasl_username, kafka.sasl_password.get_secret_value()


def aiokafka_kwargs(kafka: KafkaSettings) -> dict[str, Any]:
    """Connection arguments for AIOKafkaProducer/Consumer/AdminClient.

    Every streamrec client (the CLI tools, learner, trainer, health probe) is built with these,
    so this is where aiokafka learns to fall back to the bootstrap list when every broker it
    knows is gone (``rebootstrap_on_outage``; installed once per process, idempotent)."""
    rebootstrap_on_outage()
    kwargs: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "security_protocol": kafka.security_protocol,
    }
    context = _ssl_context(kafka)
    if context is not None:
        kwargs["ssl_context"] = context
    if kafka.security_protocol.startswith("SASL"):
        mechanism, user, password = _sasl_parts(kafka)
        kwargs.update(
            sasl_mechanism=mechanism, sasl_plain_username=user, sasl_plain_password=password
        )
    return kwargs


def faust_credentials(kafka: KafkaSettings) -> faust.types.auth.CredentialsT | None:
    """Credentials for ``faust.App(broker_credentials=...)``; None for PLAINTEXT."""
    context = _ssl_context(kafka)
    if kafka.security_protocol.startswith("SASL"):
        mechanism, user, password = _sasl_parts(kafka)
        return faust.SASLCredentials(
            username=user, password=password, mechanism=mechanism, ssl_context=context
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def faust_broker_url(kafka: KafkaSettings) -> list[str]:
    """``kafka://host:port`` URLs for faust from the comma-separated bootstrap list."""
    return [
        f"kafka://{host.strip()}" for host in kafka.bootstrap_servers.split(",") if host.strip()
    ]


def topic_reader(kafka: KafkaSettings, *topics: str) -> AIOKafkaConsumer:
    """A consumer of ``topics`` from their beginning, outside any group (nothing committed):
    how the tools and benchmarks read a topic back. Not started."""
    return AIOKafkaConsumer(
        *topics,
        **aiokafka_kwargs(kafka),
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
