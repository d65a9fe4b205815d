"""The one typed settings object.

Every field can be set by an environment variable ``STREAMREC_<SECTION>__<FIELD>`` (for example
``STREAMREC_KAFKA__BOOTSTRAP_SERVERS=broker:9092``) or by a YAML file named in
``STREAMREC_CONFIG`` / ``--config``. Precedence, highest first: explicit arguments, environment,
YAML file, defaults. Each stage receives only its own section.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal, cast

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    YamlConfigSettingsSource,
)

from streamrec.index.config import IndexSettings
from streamrec.models.config import EncoderSettings, LearnerSettings, PolicySettings, TrainSettings
from streamrec.stream.config import ServingSettings, StateSettings, TrainerSettings

CONFIG_ENV = "STREAMREC_CONFIG"
ENV_PREFIX = "STREAMREC_"
# The YAML file of the settings being built by ``load_settings`` (read by the sources hook;
# a context variable rather than the environment, which the whole process would share).
_config_file: ContextVar[Path | None] = ContextVar("streamrec_config_file", default=None)


def default_cache_dir() -> Path:
    """Where downloads (Kafka jars, datasets) and trained artefacts live, outside git."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "streamrec"


class TopicSettings(BaseModel):
    """Topic names (prefixed) and how many partitions ``streamrec topics create`` makes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prefix: str = Field("streamrec.", description="Prefix put before every topic name.")
    events: str = Field("events", description="Behaviour events, keyed by user_id.")
    items: str = Field("items", description="Catalog records, keyed by item_id, compacted.")
    recommendations: str = Field(
        "recommendations", description="Published slates, keyed by user_id."
    )
    deadletter: str = Field("deadletter", description="Rejected records with their reason.")
    control: str = Field("control", description="Model and index version announcements.")
    item_updates: str = Field(
        "item-updates",
        description="Internal: each applied event's item-statistics delta, read by every worker.",
    )
    experience: str = Field(
        "experience",
        description="Closed impressions with their rewards, keyed by user_id, for the one "
        "learner process (learner.mode = shared).",
    )
    partitions: int = Field(
        4, ge=1, description="Partitions per topic when streamrec creates them."
    )
    replication_factor: int = Field(1, ge=1, description="Replication factor for created topics.")

    def name(
        self,
        topic: Literal[
            "events",
            "items",
            "recommendations",
            "deadletter",
            "control",
            "item_updates",
            "experience",
        ],
    ) -> str:
        """Full topic name, prefix included."""
        return f"{self.prefix}{getattr(self, topic)}"


class KafkaSettings(BaseModel):
    """How to reach the broker. Security fields pass straight to aiokafka and faust."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap_servers: str = Field("localhost:9092", description="Comma-separated host:port list.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism when the protocol is SASL_*."
    )
    sasl_username: str | None = Field(None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(None, description="SASL password (never logged).")
    ssl_cafile: Path | None = Field(
        None, description="CA bundle that signs the broker certificate."
    )
    ssl_certfile: Path | None = Field(None, description="Client certificate for mutual TLS.")
    ssl_keyfile: Path | None = Field(None, description="Client private key for mutual TLS.")
    topics: TopicSettings = Field(default_factory=TopicSettings, description="Topic names.")
    outage_limit_s: float = Field(
        600.0,
        gt=0,
        le=1_100,
        description="How long the worker waits for an unreachable broker (holding offset "
        "commits) before it exits with code 1 and a log line saying so; restarting it is safe. "
        "At most 1,100 s: faust's producer fails its sends after 1,200 s, less clearly.",
    )
    session_timeout_s: float = Field(
        60.0,
        ge=10,
        le=90,
        description="How long the group waits for a silent worker (kill -9, a lost host) before "
        "its partitions move to the others: their events wait that long. Shorter fails over "
        "sooner but expels a worker whose heartbeats a busy CPU delays. 60 s is faust's default; "
        "at least 10 (the broker's minimum is 6, heartbeats go every 3), at most 90 (faust's "
        "request timeout).",
    )


class BrokerSettings(BaseModel):
    """The embedded Apache Kafka broker (`streamrec kafka ...`), for demos and tests."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str | None = Field(
        None,
        description="Apache Kafka version resolved from Maven Central; None: the one pinned in "
        "deploy/kafka/pom.xml (proven by the compatibility test).",
    )
    port: int = Field(9092, ge=1, le=65535, description="Loopback port of the broker listener.")
    data_dir: Path = Field(
        default_factory=lambda: default_cache_dir() / "broker",
        description="KRaft log and metadata folder of the embedded broker.",
    )
    start_timeout_s: float = Field(60.0, gt=0, description="How long to wait for metadata answers.")


class DataSettings(BaseModel):
    """Datasets and caches."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cache_dir: Path = Field(
        default_factory=default_cache_dir,
        description="Cache for Kafka jars, the MovieLens-100K copy and trained models.",
    )


class MetricsSettings(BaseModel):
    """Prometheus exposition."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    namespace: str = Field("streamrec", description="Prefix of every metric name.")


class LogSettings(BaseModel):
    """What the worker writes to its log (``stream/logs.py``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    repeat_interval_s: float = Field(
        5.0,
        ge=0,
        description="A warning or error repeated with the same message template is written at "
        "most once per this many seconds, with the count of those held back (a broker outage "
        "otherwise logs every reconnect attempt); 0 writes every one.",
    )


class Settings(BaseSettings):
    """All of streamrec's settings, one section per stage."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings, description="Broker connection.")
    broker: BrokerSettings = Field(default_factory=BrokerSettings, description="Embedded broker.")
    data: DataSettings = Field(default_factory=DataSettings, description="Datasets and caches.")
    metrics: MetricsSettings = Field(default_factory=MetricsSettings, description="Metrics.")
    logs: LogSettings = Field(default_factory=LogSettings, description="Worker log.")
    state: StateSettings = Field(default_factory=StateSettings, description="Worker state.")
    serving: ServingSettings = Field(default_factory=ServingSettings, description="Serving path.")
    encoder: EncoderSettings = Field(
        default_factory=EncoderSettings, description="Sequence encoder."
    )
    train: TrainSettings = Field(default_factory=TrainSettings, description="Offline training.")
    index: IndexSettings = Field(default_factory=IndexSettings, description="FAISS index.")
    trainer: TrainerSettings = Field(
        default_factory=TrainerSettings, description="Continual training on the stream."
    )
    policy: PolicySettings = Field(default_factory=PolicySettings, description="Reranking policy.")
    learner: LearnerSettings = Field(default_factory=LearnerSettings, description="Online learner.")

    @model_validator(mode="after")
    def _skips_defined(self) -> Settings:
        """A skip penalty needs the dwell under which a dwell is a skip: without it no skip is
        ever seen and the penalty silently never applies."""
        if self.learner.skip_penalty > 0 and self.state.min_dwell_ms == 0:
            raise ValueError(
                "learner.skip_penalty needs state.min_dwell_ms: the dwell under which a dwell is "
                "a skip (0 makes none one)"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_path = _config_file.get() or os.environ.get(CONFIG_ENV)
        if config_path:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_path))
        return tuple(sources)


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from defaults, an optional YAML file, the environment and overrides.

    Raises ``ConfigError`` when the YAML file is missing.
    """
    from streamrec.errors import ConfigError

    if config is not None and not config.is_file():
        raise ConfigError(f"config file {config} does not exist; pass an existing YAML file")
    misnamed = misnamed_env(os.environ)
    if misnamed:
        hints = "; ".join(f"{name}: {_suggest(name)}" for name in misnamed)
        raise ConfigError(f"environment variables that are no setting: {hints}")
    token = _config_file.set(config)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']} (got {e.get('input')!r})"
            for e in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from None
    except SettingsError as exc:  # an environment value that is not the JSON a field needs
        raise ConfigError(
            f"invalid settings: {exc}; list and object settings take JSON, e.g. "
            """STREAMREC_STATE__CONTEXT_FIELDS='["device"]'"""
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid settings: {' '.join(str(exc).split())}") from None
    finally:
        _config_file.reset(token)


def misnamed_env(environ: Mapping[str, str]) -> list[str]:
    """``STREAMREC_*`` variables that name no settings section. pydantic-settings rejects an
    unknown field of a known section, but ignores a variable whose section is misspelt or which
    has one underscore where two belong (``STREAMREC_SERVING_MODE``): the worker then ran with
    the default (heuristic mode, localhost's broker) and said nothing."""
    sections = {name.upper() for name in Settings.model_fields}
    misnamed = []
    for name in environ:
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper == CONFIG_ENV:
            continue
        # A section alone takes JSON (STREAMREC_KAFKA='{"bootstrap_servers": ...}').
        section = upper.removeprefix(ENV_PREFIX).partition("__")[0]
        if section not in sections:
            misnamed.append(name)
    return sorted(misnamed)


def _suggest(name: str) -> str:
    """The closest real ``STREAMREC_SECTION__FIELD`` name, as a hint."""
    known = [
        f"{section.upper()}__{field.upper()}"
        for section, info in Settings.model_fields.items()
        for field in cast(type[BaseModel], info.annotation).model_fields
    ]
    wanted = name.upper().removeprefix(ENV_PREFIX)
    close = difflib.get_close_matches(wanted, known, n=1, cutoff=0.75)
    hint = (
        f"did you mean {ENV_PREFIX}{close[0]}?"
        if close
        else "names are STREAMREC_<SECTION>__<FIELD>"
    )
    return f"{hint} (two underscores between a section and its field; README, Settings)"
