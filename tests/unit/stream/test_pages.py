"""The web token: /stats and /recommendations need it when set, /metrics never does."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from streamrec.stream.pages import Pages

SLATE = b'{"user_id": "u1", "items": []}'


def _pages(token: str | None, waiting_for: list[str] | None = None) -> Pages:
    async def observe() -> None:
        return None

    return Pages(
        CollectorRegistry(),
        observe,
        lambda: {"events_accepted": 3},
        {"u1": SLATE},
        lambda: (waiting_for or [None])[0],
        SecretStr(token) if token is not None else None,
    )


def _get(pages: Pages, path: str, authorization: str | None = None) -> web.Response:
    headers = {"Authorization": authorization} if authorization is not None else {}
    request = make_mocked_request("GET", path, headers=headers)
    if path == "/metrics":
        return asyncio.run(pages.metrics(request))
    if path == "/stats":
        return asyncio.run(pages.stats_page(request))
    if path == "/ready":
        return asyncio.run(pages.ready(request))
    return asyncio.run(pages.recommendation(request, path.rsplit("/", 1)[1]))


def test_without_a_token_setting_every_page_is_open() -> None:
    pages = _pages(None)
    assert _get(pages, "/stats").status == 200
    assert _get(pages, "/recommendations/u1").body == SLATE


def test_with_a_token_user_data_needs_it_and_metrics_stay_open() -> None:
    pages = _pages("s3cret-token")
    for path in ("/stats", "/recommendations/u1", "/recommendations/nobody"):
        for header in (None, "Bearer wrong", "Basic s3cret-token", "s3cret-token"):
            response = _get(pages, path, header)
            assert response.status == 401, (path, header)
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert b"s3cret-token" not in (response.body or b"")
    assert _get(pages, "/stats", "Bearer s3cret-token").status == 200
    assert _get(pages, "/recommendations/u1", "bearer s3cret-token").body == SLATE
    assert _get(pages, "/recommendations/nobody", "Bearer s3cret-token").status == 404
    metrics = _get(pages, "/metrics")
    assert metrics.status == 200


def test_the_refusal_says_how_to_send_the_token() -> None:
    body = json.loads(_get(_pages("t"), "/stats").body or b"{}")
    assert body["error"] == "unauthorized" and "STREAMREC_SERVING__WEB_TOKEN" in body["message"]


def test_ready_says_why_not_until_the_worker_can_answer_and_needs_no_token() -> None:
    waiting = ["loading its model"]
    pages = _pages("s3cret-token", waiting)
    response = _get(pages, "/ready")
    assert response.status == 503
    assert json.loads(response.body or b"") == {"ready": False, "reason": "loading its model"}
    waiting.clear()
    assert _get(pages, "/ready").status == 200  # the probes carry no token
