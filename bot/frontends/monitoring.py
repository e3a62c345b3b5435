"""`GET /metrics` (Prometheus) and `GET /healthz` (the database and the updates, as JSON).

In long-polling mode they are served by a small aiohttp server on `HTTP_HOST:HTTP_PORT` (only when HTTP_PORT is
set); in webhook mode the webhook's own server answers /healthz, and /metrics too unless HTTP_PORT is set, which
moves /metrics (and a copy of /healthz) to its own server, off the public webhook listener.

/healthz answers 200 when healthy and 503 when the database is unavailable (an outage the writers reported, or a
quick read that fails or takes longer than `DATABASE_READ_TIMEOUT`) or when polling Telegram has failed for longer
than `POLL_FAILURE_LIMIT`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Literal

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from flows import metrics
from flows.runner import Runner

DATABASE_READ_TIMEOUT = 2.0
"""Seconds /healthz waits for its read of the database (Docker's check gives the whole request 4)."""
POLL_FAILURE_LIMIT = 120.0
"""Seconds getUpdates may fail in a row (or go without succeeding, beyond one long poll) before /healthz says 503."""
LONG_POLL = 25.0


class UpdateFeed:
    """How the updates are coming in: polling's last successful getUpdates and failures, or the webhook's last
    update received."""

    def __init__(self, mode: Literal["polling", "webhook"], clock: Callable[[], float] = time.monotonic) -> None:
        self.mode = mode
        self.clock = clock
        self.started = clock()
        self.last_ok: float | None = None
        self.failing_since: float | None = None

    def ok(self) -> None:
        """getUpdates answered (polling), or an update came in (webhook)."""
        self.last_ok = self.clock()
        self.failing_since = None

    def failed(self) -> None:
        """getUpdates failed."""
        if self.failing_since is None:
            self.failing_since = self.clock()

    def state(self) -> dict[str, Any]:
        now = self.clock()
        since_ok = None if self.last_ok is None else round(now - self.last_ok, 1)
        if self.mode == "webhook":  # a quiet desk gets no updates: that alone is no failure
            return {"mode": "webhook", "ok": True, "last_update_seconds_ago": since_ok}
        failing = None if self.failing_since is None else round(now - self.failing_since, 1)
        silent = now - (self.last_ok if self.last_ok is not None else self.started)
        healthy = (failing is None or failing <= POLL_FAILURE_LIMIT) and silent <= POLL_FAILURE_LIMIT + LONG_POLL
        return {"mode": "polling", "ok": healthy, "last_ok_seconds_ago": since_ok, "failing_for_seconds": failing}


class Monitor:
    """What /healthz and /metrics report about one running desk."""

    def __init__(self, runner: Runner, feed: UpdateFeed) -> None:
        self.runner = runner
        self.feed = feed

    async def health(self) -> tuple[bool, dict[str, Any]]:
        database = await self._database()
        updates = self.feed.state()
        healthy = bool(database["ok"] and updates["ok"])
        return healthy, {"ok": healthy, "database": database, "updates": updates}

    async def _database(self) -> dict[str, Any]:
        outage = self.runner.outage
        if outage.since is not None:
            return {"ok": False, "unavailable_for_seconds": round(time.monotonic() - outage.since, 1),
                    "failed_transactions": outage.failures}
        try:
            await asyncio.wait_for(self._read(), DATABASE_READ_TIMEOUT)
        except Exception as error:  # TimeoutError included: a database that does not answer is not available
            return {"ok": False, "error": type(error).__name__}
        return {"ok": True}

    async def _read(self) -> None:
        async with self.runner.store.reading() as tx:
            await tx.timers.next_due()

    async def metrics(self) -> bytes:
        dispatcher = self.runner.dispatcher
        await metrics.refresh(self.runner.store, (dispatcher.chat, dispatcher.out_of_band), self.runner.clock.now())
        return generate_latest()


def add_monitoring(app: web.Application, monitor: Monitor, with_metrics: bool = True) -> None:
    """Add `GET /healthz` (and `GET /metrics`) to `app`."""

    async def health(request: web.Request) -> web.Response:
        healthy, body = await monitor.health()
        return web.json_response(body, status=200 if healthy else 503)

    async def scrape(request: web.Request) -> web.Response:
        body = await monitor.metrics()
        response = web.Response(body=body)
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app.router.add_get("/healthz", health)
    if with_metrics:
        app.router.add_get("/metrics", scrape)


def monitoring_app(monitor: Monitor) -> web.Application:
    """The server of HTTP_PORT: /metrics and /healthz."""
    app = web.Application()
    add_monitoring(app, monitor)
    return app
