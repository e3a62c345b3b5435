"""A receiver of the desk's events (EVENTS_URL) as an operator would write one: a real HTTP server that checks each
event's signature and timestamp, answers 2xx once it has it, and keeps each id once."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import time
from types import TracebackType
from typing import Any

from aiohttp import web

WINDOW = 300


class EventsReceiver:
    def __init__(self, key: str, clock: Any = time.time) -> None:
        self.key = key.encode()
        self.clock = clock
        self.events: dict[str, dict[str, Any]] = {}  # by id, in arrival order
        self.deliveries: list[tuple[str, int]] = []  # (event id, status answered), every attempt
        self.refuse_next: list[int] = []  # statuses to answer to the next attempts, whatever they carry
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}/desk-events"
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> EventsReceiver:
        app = web.Application()
        app.router.add_post("/desk-events", self._receive)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.SockSite(self._runner, self._socket).start()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def types(self) -> list[str]:
        return [event["type"] for event in self.events.values()]

    def genuine(self, timestamp: str, body: bytes, signature: str) -> bool:
        expected = "v1=" + hmac.new(self.key, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        fresh = timestamp.isdigit() and abs(self.clock() - int(timestamp)) <= WINDOW
        return hmac.compare_digest(expected, signature) and fresh

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        event_id = request.headers.get("Desk-Event-Id", "")
        if self.refuse_next:
            status = self.refuse_next.pop(0)
        elif not self.genuine(request.headers.get("Desk-Timestamp", ""), body,
                              request.headers.get("Desk-Signature", "")):
            status = 401
        else:
            event = json.loads(body)
            status = 200 if event["id"] == event_id else 400
            if status == 200:
                self.events.setdefault(event_id, event)
        self.deliveries.append((event_id, status))
        return web.json_response({}, status=status)
