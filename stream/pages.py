"""The worker's web pages: ``/metrics`` (Prometheus), ``/stats`` (JSON figures) and
``/recommendations/{user_id}`` (the user's latest slate, for pull clients and debugging)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class Pages:
    """aiohttp handlers; faust calls each with the request (and path parameters)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        observe: Callable[[], Awaitable[None]],
        stats: Callable[[], dict[str, Any]],
        latest: Mapping[str, bytes],
    ) -> None:
        self.registry = registry
        self.observe = observe  # brings the gauges up to date before a scrape
        self.stats = stats
        self.latest = latest  # user_id -> the encoded slate last published for them

    async def metrics(self, request: web.Request) -> web.Response:
        await self.observe()
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def stats_page(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def recommendation(self, request: web.Request, user_id: str) -> web.Response:
        slate = self.latest.get(user_id)
        if slate is None:
            return web.json_response(
                {
                    "error": "unknown_user",
                    "message": f"no recommendation for user {user_id!r} yet; "
                    "the worker publishes one after the user's first event on its partitions",
                },
                status=404,
            )
        return web.Response(body=slate, content_type="application/json")
