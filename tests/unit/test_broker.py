"""Embedded broker helpers that need no Java: the KRaft cluster id."""

from __future__ import annotations

import base64
import uuid

import pytest

from streamrec import broker


def test_cluster_ids_never_start_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    # 0xf8.. encodes to "-" first in URL-safe base64: the id the storage tool took for an option.
    draws = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=b"\x01" + bytes(15))])
    monkeypatch.setattr(broker.uuid, "uuid4", lambda: next(draws))
    cluster_id = broker.new_cluster_id()
    assert not cluster_id.startswith("-")
    assert base64.urlsafe_b64decode(cluster_id + "==") == b"\x01" + bytes(15)


def test_cluster_ids_are_22_url_safe_characters() -> None:
    ids = {broker.new_cluster_id() for _ in range(500)}
    assert len(ids) == 500
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
