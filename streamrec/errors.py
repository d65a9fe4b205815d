"""Exceptions raised by streamrec.

    StreamrecError
    ├── ConfigError            settings or config file unusable
    ├── BrokerError            embedded Kafka: missing java/mvn, port taken, broker died
    │   └── DeliveryError      records not acknowledged in time; carries ``resume_from``
    ├── DataError              a dataset file is missing or malformed
    ├── ContractError          a record breaks the event/item/recommendation contract
    │                          (carries a stable ``code`` for the dead-letter topic)
    └── ModelError             a checkpoint or index is missing, corrupt or incompatible

Messages say what went wrong, where, and how to fix it.
"""

from __future__ import annotations


class StreamrecError(Exception):
    """Root of every error streamrec raises on purpose."""


class ConfigError(StreamrecError):
    """Settings cannot be used as given."""


class BrokerError(StreamrecError):
    """The embedded Kafka broker cannot be fetched, started, reached or stopped."""


class DeliveryError(BrokerError):
    """Publishing stopped; every record before index ``resume_from`` is acknowledged."""

    def __init__(self, message: str, resume_from: int) -> None:
        super().__init__(message)
        self.resume_from = resume_from


class DataError(StreamrecError):
    """A dataset file is missing or malformed."""


class ContractError(StreamrecError):
    """A record breaks the contract; ``code`` is stable and goes to the dead-letter topic."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ModelError(StreamrecError):
    """A model checkpoint or index is missing, corrupt or incompatible."""
