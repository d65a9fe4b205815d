"""The published topic schemas: committed copies equal the code, and they agree with the classes."""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from streamrec.cli import app
from streamrec.errors import ContractError
from streamrec.settings import KafkaSettings
from streamrec.stream.contract import (
    ModelAnnouncement,
    Recommendation,
    SlateItem,
    dead_letter,
    encode,
    validate_event,
)
from streamrec.stream.control import policy_record
from streamrec.stream.schemas import (
    ASYNCAPI_FILE,
    TOPICS,
    TopicName,
    render_schemas,
    schema_file,
)
from streamrec.stream.topics import topic_specs

ROOT = Path(__file__).resolve().parents[3]
SCHEMAS = ROOT / "deploy" / "schemas"
README = ROOT / "README.md"


def _validator(topic: TopicName) -> Any:
    """A Draft 2020-12 validator of the committed schema; fails in CI without jsonschema."""
    try:
        import jsonschema
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("jsonschema is not installed; it belongs to the dev extras")
        pytest.skip("jsonschema is not installed (pip install -e '.[dev]')")
    schema = json.loads((SCHEMAS / schema_file(topic)).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_committed_schemas_equal_what_the_code_generates() -> None:
    expected = render_schemas(KafkaSettings())
    committed = {path.name for path in SCHEMAS.iterdir()}
    assert committed == set(expected), "run `streamrec schema --out deploy/schemas`"
    for name, text in expected.items():
        assert (SCHEMAS / name).read_text() == text, (
            f"deploy/schemas/{name} is stale; run `streamrec schema --out deploy/schemas`"
        )


def test_schema_command_writes_every_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["schema", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert {p.name for p in tmp_path.iterdir()} == {*map(schema_file, TOPICS), ASYNCAPI_FILE}
    event_schema = json.loads((tmp_path / "events.schema.json").read_text())
    assert set(event_schema["required"]) == {"event_id", "user_id", "item_id", "type", "ts"}


def _readme_example_event() -> dict[str, Any]:
    text = README.read_text()
    section = text[text.index("### The event contract") :]
    match = re.search(r"```json\n(.*?)\n```", section, re.DOTALL)
    assert match, "README's event contract section has no JSON example"
    example: dict[str, Any] = json.loads(match.group(1))
    return example


def test_readme_example_event_matches_the_schema_and_the_code() -> None:
    example = _readme_example_event()
    _validator("events").validate(example)
    assert validate_event(example).event_id == example["event_id"]


@pytest.mark.parametrize(
    "change",
    [
        {"type": "like"},  # unknown_event_type
        {"user_id": ""},  # bad_value: ids have 1-128 characters
        {"position": -1},
        {"v": 2},  # unsupported_version
        {"ts": "yesterday"},
        {"ts": 5},  # epoch seconds or a counter, not epoch ms
        {"user_id": " \t "},  # blank
        {"item_id": "\n"},
        {"item_id": "\x1f"},  # a separator Python calls whitespace and JavaScript does not
        {"item_id": "\ufeff \u3000"},  # a BOM JavaScript calls whitespace and Python does not
        {"user_id": "tab\tuser"},  # breaks the trainer's tab-separated training files
        {"user_id": "a\x85b"},  # NEL, a C1 control where splitlines() breaks a line
        {"user_id": "a\x9bb"},  # C1 control
        {"item_id": "a\u2028b"},  # line separator
        {"item_id": "\u200b\u2060"},  # only zero-width characters: shows as empty
        {"user_id": "trailing\n"},  # Python's $ matches before a final newline
        {"item_id": "null"},  # Java's String.valueOf(null)
        {"user_id": "None"},  # Python's str(None)
    ],
    ids=[
        "type",
        "user_id",
        "position",
        "v",
        "ts",
        "ts_small",
        "user_blank",
        "item_blank",
        "item_unit_separator",
        "item_bom",
        "user_tab",
        "user_nel",
        "user_c1",
        "item_line_separator",
        "item_zero_width",
        "user_trailing_newline",
        "item_null_text",
        "user_none_text",
    ],
)
def test_schema_and_code_reject_the_same_bad_events(change: dict[str, Any]) -> None:
    bad = {**_readme_example_event(), **change}
    assert not _validator("events").is_valid(bad)
    with pytest.raises(ContractError):
        validate_event(bad)


def test_schema_and_code_agree_on_camel_case_spellings() -> None:
    example = _readme_example_event()
    for spelling in ("recId", "RecId", "recID", "RecID", "REC_ID", "rec-id", "recid"):
        renamed = {(spelling if k == "rec_id" else k): v for k, v in example.items()}
        assert not _validator("events").is_valid(renamed), spelling
        with pytest.raises(ContractError, match=f"`{spelling}` is `rec_id`"):
            validate_event(renamed)
    assert _validator("events").is_valid({**example, "rec_id": ""})  # Go's zero string: absent
    both = {**example, "recId": example["rec_id"]}  # one object spread into another: good
    assert _validator("events").is_valid(both)
    assert validate_event(both).rec_id == example["rec_id"]


def test_missing_required_field_fails_the_schema() -> None:
    example = _readme_example_event()
    del example["user_id"]
    assert not _validator("events").is_valid(example)


def test_records_the_worker_writes_match_their_schemas() -> None:
    slate = Recommendation(
        rec_id="r1",
        user_id="u1",
        items=[SlateItem(item_id="i1", score=0.5, propensity=0.25, reason="source:trending")],
        model_version="heuristic",
        policy_version="mmr-0.3",
        trigger_event_ids=["e1"],
        created_at=1_700_000_000_000,
        timing_ms={"gather_ms": 0.1},
    )
    _validator("recommendations").validate(json.loads(encode(slate)))
    rejected = dead_letter(b"{", ContractError("invalid_json", "at char 1"), "t.events", 3, 991)
    record = json.loads(encode(rejected))
    _validator("deadletter").validate(record)
    assert base64.b64decode(record["original_b64"]) == b"{"
    announcement = ModelAnnouncement(
        model_version="m1", checkpoint="/models/m1", announced_at=1_700_000_000_000
    )
    _validator("control").validate(json.loads(encode(announcement)))
    policy = policy_record("pl-ab12cd34-3", [0.5, 0.1, 0.0, 1.0, 0.2], None, ("ab12cd34", 1))
    _validator("control").validate(json.loads(policy))
    assert not _validator("control").is_valid({**json.loads(policy), "type": "neither"})


def test_asyncapi_document_names_every_topic_and_its_schema() -> None:
    doc = yaml.safe_load((SCHEMAS / ASYNCAPI_FILE).read_text())
    assert doc["asyncapi"].startswith("3.")
    specs = {spec.name: spec for spec in topic_specs(KafkaSettings()) if not spec.internal}
    assert {channel["address"] for channel in doc["channels"].values()} == set(specs)
    for topic, channel in doc["channels"].items():
        spec = specs[channel["address"]]
        assert channel["bindings"]["kafka"]["partitions"] == spec.partitions
        for message in channel["messages"].values():
            assert (SCHEMAS / message["payload"]["$ref"]).is_file(), topic
    compacted = doc["channels"]["items"]["bindings"]["kafka"]["topicConfiguration"]
    assert compacted["cleanup.policy"] == ["compact"]
    for operation in doc["operations"].values():
        channel = operation["channel"]["$ref"].removeprefix("#/channels/")
        assert channel in doc["channels"]
        assert operation["action"] in ("send", "receive")
    # Every topic has someone writing it and someone reading it.
    assert {op["action"] for op in doc["operations"].values()} == {"send", "receive"}
    assert len(doc["operations"]) == 2 * len(doc["channels"])
