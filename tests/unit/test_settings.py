"""The settings object: documented fields, environment nesting, YAML file, secrets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import BaseModel

from streamrec.errors import ConfigError
from streamrec.settings import CONFIG_ENV, Settings, load_settings


def _fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, object]]:
    found: list[tuple[str, object]] = []
    for name, info in model.model_fields.items():
        found.append((f"{prefix}{name}", info))
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found.extend(_fields(annotation, f"{prefix}{name}."))
    return found


def test_every_setting_is_documented() -> None:
    undocumented = [name for name, info in _fields(Settings) if not info.description]  # type: ignore[attr-defined]
    assert not undocumented


def test_environment_overrides_nested_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMREC_KAFKA__BOOTSTRAP_SERVERS", "broker-a:9092,broker-b:9092")
    monkeypatch.setenv("STREAMREC_KAFKA__TOPICS__PARTITIONS", "12")
    monkeypatch.setenv("STREAMREC_SERVING__MODE", "model")
    s = Settings()
    assert s.kafka.bootstrap_servers == "broker-a:9092,broker-b:9092"
    assert s.kafka.topics.partitions == 12 and s.kafka.topics.name("events") == "streamrec.events"
    assert s.serving.mode == "model"


def test_yaml_file_is_read_and_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "streamrec.yaml"
    config.write_text("kafka:\n  bootstrap_servers: from-yaml:9092\nstate:\n  recent_length: 7\n")
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    monkeypatch.setenv("STREAMREC_STATE__RECENT_LENGTH", "9")
    s = load_settings(config)
    assert s.kafka.bootstrap_servers == "from-yaml:9092"
    assert s.state.recent_length == 9
    # Loading a file changes nothing process-wide: the next settings are the defaults again.
    assert CONFIG_ENV not in os.environ
    assert Settings().kafka.bootstrap_servers != "from-yaml:9092"


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")


def test_invalid_value_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMREC_KAFKA__SECURITY_PROTOCOL", "CARRIER_PIGEON")
    with pytest.raises(ValueError, match="security_protocol"):
        Settings()


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("STREAMREC_SERVING__MODE", "bogus", "serving.mode: Input should be 'heuristic' or"),
        ("STREAMREC_KAFKA__TOPICS__PARTITIONS", "0", "kafka.topics.partitions: Input should be"),
        ("STREAMREC_STATE__CONTEXT_FIELDS", "device", "take JSON"),
        # a negative reward reached the worker's reward counter and raised in the ingest agent
        ("STREAMREC_LEARNER__REWARD_WEIGHTS", '{"click": -1}', "set learner.skip_penalty"),
        ("STREAMREC_LEARNER__SKIP_PENALTY", "-1", "learner.skip_penalty: Input should be"),
        ("STREAMREC_LEARNER__REWARD_WEIGHTS", '{"skip": 1}', "none named skip"),
        ("STREAMREC_LEARNER__SKIP_PENALTY", "0.5", "needs state.min_dwell_ms"),
    ],
)
def test_a_bad_setting_is_one_clear_config_error(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, says: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match="invalid settings") as raised:
        load_settings(None)
    assert says in str(raised.value) and "\n" not in str(raised.value)


def test_a_malformed_config_file_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("kafka: [\n")
    with pytest.raises(ConfigError, match="invalid settings: while parsing"):
        load_settings(config)


def test_sasl_password_is_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMREC_KAFKA__SASL_PASSWORD", "hunter2")
    s = Settings()
    assert "hunter2" not in repr(s) and "hunter2" not in s.model_dump_json()
    assert (
        s.kafka.sasl_password is not None and s.kafka.sasl_password.get_secret_value() == "hunter2"
    )


def test_a_misspelt_nested_setting_is_an_error_not_ignored(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("STREAMREC_SERVING__BATCH_SIZ", "8")
    with pytest.raises(ConfigError, match=r"serving\.batch_siz: Extra inputs are not permitted"):
        load_settings(None)
    monkeypatch.delenv("STREAMREC_SERVING__BATCH_SIZ")
    config = tmp_path / "typo.yaml"
    config.write_text("kafka:\n  bootstrp: localhost:9092\n")
    with pytest.raises(ConfigError, match=r"kafka\.bootstrp"):
        load_settings(config)


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("STREAMREC_SERVING_MODE", "did you mean STREAMREC_SERVING__MODE?"),  # one underscore
        ("STREAMREC_SERVNG__MODE", "did you mean STREAMREC_SERVING__MODE?"),  # misspelt section
        ("STREAMREC_KAFKA_BOOTSTRAP_SERVERS", "did you mean STREAMREC_KAFKA__BOOTSTRAP_SERVERS?"),
        ("streamrec_whatever", "names are STREAMREC_<SECTION>__<FIELD>"),
    ],
)
def test_a_variable_naming_no_setting_is_an_error_not_a_silent_default(
    monkeypatch: pytest.MonkeyPatch, name: str, hint: str
) -> None:
    # pydantic-settings ignores these: the worker ran in heuristic mode against localhost.
    monkeypatch.setenv(name, "model")
    with pytest.raises(ConfigError, match="no setting") as raised:
        load_settings(None)
    assert f"{name}: {hint}" in str(raised.value) and "\n" not in str(raised.value)


def test_every_real_setting_variable_and_the_config_file_variable_pass(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("serving:\n  mode: model\n")
    monkeypatch.setenv("STREAMREC_CONFIG", str(config))
    monkeypatch.setenv("STREAMREC_KAFKA__TOPICS__PREFIX", "t.")  # nested two levels
    monkeypatch.setenv("STREAMREC_STATE__FLUSH_INTERVAL_MS", "250")
    monkeypatch.setenv("STREAMREC_TRAINER", '{"epochs": 3}')  # a whole section, as JSON
    s = load_settings(None)
    assert s.serving.mode == "model" and s.kafka.topics.prefix == "t."
    assert s.trainer.epochs == 3
