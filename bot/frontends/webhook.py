"""Webhook mode: an aiohttp server that accepts Telegram's POSTs only with the secret token, /healthz and /metrics
(bot/frontends/monitoring.py; /metrics moves to HTTP_PORT when that is set).

An update is answered 200 only after it is committed; any failure answers 500, so Telegram sends it again.
When the update is a button press, its committed answer goes in the 200's body as the one method the Bot API
lets a webhook answer with, and the outbox records it as sent (Telegram tells no one how that method went);
on a 500 it goes back to the outbox and is delivered as any reply.
Requests without the secret token are logged at most once a minute, so a flood of them cannot fill the disk.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from bot.frontends.desk import AnswerHold, TelegramDesk, answer_hold
from bot.frontends.monitoring import Monitor, add_monitoring
from flows.clock import Clock, SystemClock
from flows.records import Pending
from flows.replies import AnswerButton

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
Parse = Callable[[dict[str, Any]], Any]
Process = Callable[[Any], Awaitable[None]]
REFUSAL_LOG_INTERVAL = timedelta(minutes=1)


class RefusalLog:
    """Logs refused requests at most once per `REFUSAL_LOG_INTERVAL`; the next line counts those left out."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.last_line: datetime | None = None
        self.left_out = 0

    def refused(self, remote: str | None) -> None:
        now = self.clock.now()
        if self.last_line is not None and timedelta(0) <= now - self.last_line < REFUSAL_LOG_INTERVAL:
            self.left_out += 1
            return
        if self.left_out:
            log.warning("webhook request without the right secret token from %s (and %d more since the last "
                        "such line)", remote, self.left_out)
        else:
            log.warning("webhook request without the right secret token from %s", remote)
        self.last_line, self.left_out = now, 0


def webhook_app(path: str, secret: str, parse: Parse, process: Process, desk: TelegramDesk,
                clock: Clock | None = None, monitor: Monitor | None = None,
                with_metrics: bool = True) -> web.Application:
    """The web application serving `POST path` (the updates) and `GET /healthz`; with a `monitor`, /healthz
    reports the database and the last update, and `GET /metrics` is served too (`with_metrics`)."""
    refusals = RefusalLog(clock or SystemClock())

    async def receive(request: web.Request) -> web.Response:
        given = request.headers.get(SECRET_HEADER, "")
        if not hmac.compare_digest(given.encode(), secret.encode()):
            refusals.refused(request.remote)
            return web.json_response({"ok": False, "error": "unauthorized"}, status=401)
        try:
            update = parse(json.loads(await request.text()))
        except (ValueError, TypeError, KeyError, AttributeError):
            return web.json_response({"ok": False, "error": "not an update"}, status=400)
        if monitor is not None:
            monitor.feed.ok()
        hold = AnswerHold()
        token = answer_hold.set(hold)
        try:
            await process(update)
        except Exception:
            log.exception("update %s failed", getattr(update, "update_id", "?"))
            return _failed(desk, hold)
        finally:
            answer_hold.reset(token)
        if desk.failed.intersection({update.update_id}):
            desk.failed.discard(update.update_id)
            return _failed(desk, hold)
        body = _answer_method(hold.entry)
        if body is None:
            if hold.entry is not None:
                desk.runner.dispatcher.push([hold.entry])
            return web.json_response({"ok": True})
        assert hold.entry is not None
        desk.runner.dispatcher.delivered_elsewhere(hold.entry)
        return web.json_response(body)

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post(path, receive)
    if monitor is None:
        app.router.add_get("/healthz", health)
    else:
        add_monitoring(app, monitor, with_metrics)
    return app


def _failed(desk: TelegramDesk, hold: AnswerHold) -> web.Response:
    """The 500; an answer held back for the response goes to the outbox instead (the update is committed, so
    Telegram's retry will not make it again)."""
    if hold.entry is not None:
        desk.runner.dispatcher.push([hold.entry])
    return web.json_response({"ok": False}, status=500)


def _answer_method(entry: Pending | None) -> dict[str, Any] | None:
    """The webhook response that makes Telegram answer the press, or None if there is no answer to give."""
    if entry is None or not isinstance(entry.reply, AnswerButton):
        return None
    body: dict[str, Any] = {"method": "answerCallbackQuery", "callback_query_id": entry.reply.callback_id}
    if entry.reply.text:
        body["text"] = entry.reply.text
    return body


async def serve(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
