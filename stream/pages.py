"""The worker's web pages: ``/metrics`` (Prometheus), ``/ready`` (200 once the worker can
answer: tables recovered, catalog read, model loaded; 503 with the reason before), ``/stats``
(JSON figures) and ``/recommendations/{user_id}`` (the user's latest slate, for pull clients
and debugging).

Which expose user data: ``/recommendations/{user_id}`` returns any user's latest slate (items,
scores, the ids of the events it answers) and ``/stats`` the worker's figures with example
latencies; with ``serving.web_token`` set both require ``Authorization: Bearer <token>`` and
answer 401 otherwise. ``/metrics`` holds only aggregates (no user or item ids) and ``/ready``
a reason at most; both stay open for Prometheus and the probes.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import SecretStr


class Pages:
    """aiohttp handlers; faust calls each with the request (and path parameters)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        observe: Callable[[], Awaitable[None]],
        stats: Callable[[], dict[str, Any]],
        latest: Mapping[str, bytes],
        readiness: Callable[[], str | None],
        token: SecretStr | None = None,
    ) -> None:
        self.registry = registry
        self.readiness = readiness  # why the worker cannot answer yet; None once it can
        self.observe = observe  # brings the gauges up to date before a scrape
        self.stats = stats
        self.latest = latest  # user_id -> the encoded slate last published for them
        self._token = token.get_secret_value().encode() if token is not None else None

    def _refused(self, request: web.Request) -> web.Response | None:
        """A 401 response unless the request carries the bearer token (or none is set)."""
        if self._token is None:
            return None
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        # constant-time comparison: the answer's timing says nothing about the token
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self._token):
            return None
        return web.json_response(
            {
                "error": "unauthorized",
                "message": "this page needs the header 'Authorization: Bearer <token>' with "
                "the worker's serving.web_token (STREAMREC_SERVING__WEB_TOKEN)",
            },
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="streamrec"'},
        )

    async def metrics(self, request: web.Request) -> web.Response:
        await self.observe()
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def ready(self, request: web.Request) -> web.Response:
        reason = self.readiness()
        if reason is None:
            return web.json_response({"ready": True})
        return web.json_response({"ready": False, "reason": reason}, status=503)

    async def stats_page(self, request: web.Request) -> web.Response:
        return self._refused(request) or web.json_response(self.stats())

    async def recommendation(self, request: web.Request, user_id: str) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        slate = self.latest.get(user_id)
        if slate is None:
            return web.json_response(
                {
                    "error": "unknown_user",
                    "message": f"no recommendation for user {user_id!r} held by this worker; "
                    "it keeps the latest slate of each user it answered since it started (in "
                    "memory) and answers the user's next event on its partitions",
                },
                status=404,
            )
        return web.Response(body=slate, content_type="application/json")
