"""Long polling that confirms only what is committed.

Both frameworks' own pollers confirm a batch of updates (the next getUpdates offset) before handling it, so a
crash loses what was in flight. This poller asks for the next batch only once every update of the current one is
committed; after a crash Telegram sends them again and the processed-updates table makes the repeats no-ops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from bot.frontends.desk import TelegramDesk, chat_of
from bot.frontends.monitoring import UpdateFeed

log = logging.getLogger(__name__)

Fetch = Callable[[int | None, int], Awaitable[Sequence[Any]]]
Process = Callable[[Any], Awaitable[None]]
MAX_BACKOFF = 30.0


class Poller:
    def __init__(self, fetch: Fetch, process: Process, desk: TelegramDesk, timeout: int = 25,
                 rng: Callable[[], float] = random.random, feed: UpdateFeed | None = None) -> None:
        self.fetch = fetch
        self.feed = feed or UpdateFeed("polling")
        self.process = process
        self.desk = desk
        self.timeout = timeout
        self.offset: int | None = None
        self._backoff = 0.0
        self._pause = 0.0
        self._rng = rng

    async def run(self, stopping: asyncio.Event) -> None:
        """Poll until `stopping` is set; the batch in hand is finished first."""
        while not stopping.is_set():
            updates = await self._next_batch(stopping)
            if updates is None:
                return
            if updates:
                await self._handle_batch(updates)
            if self._pause:
                await _sleep_unless(stopping, self._pause)

    async def _next_batch(self, stopping: asyncio.Event) -> Sequence[Any] | None:
        fetching = asyncio.ensure_future(self.fetch(self.offset, self.timeout))
        stop = asyncio.ensure_future(stopping.wait())
        await asyncio.wait({fetching, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not fetching.done():
            fetching.cancel()
            await asyncio.gather(fetching, return_exceptions=True)
            return None
        try:
            updates = fetching.result()
        except Exception as error:
            self.feed.failed()
            self._fail(f"getUpdates failed ({type(error).__name__}: {error})")
            return []
        self.feed.ok()
        self._backoff = self._pause = 0.0
        return updates

    async def _handle_batch(self, updates: Sequence[Any]) -> None:
        by_chat: dict[int, list[Any]] = defaultdict(list)
        for update in updates:
            by_chat[chat_of(update)].append(update)
        await asyncio.gather(*(self._in_order(chat_updates) for chat_updates in by_chat.values()))
        failed = sorted(u.update_id for u in updates if u.update_id in self.desk.failed)
        self.desk.failed.difference_update(failed)
        if failed:
            self.offset = failed[0]
            self._fail(f"{len(failed)} update(s) could not be committed; they will be fetched again",
                       quiet=self.desk.runner.outage.ongoing)
        else:
            self.offset = max(u.update_id for u in updates) + 1

    async def _in_order(self, updates: list[Any]) -> None:
        """One chat's updates in order; after a failure the rest wait for the next fetch, to keep the order."""
        for index, update in enumerate(updates):
            try:
                await self.process(update)
            except Exception:
                self.desk.failed.add(update.update_id)
                log.exception("update %d failed", update.update_id)
            if update.update_id in self.desk.failed:
                self.desk.failed.update(u.update_id for u in updates[index + 1 :])
                return

    def _fail(self, message: str, quiet: bool = False) -> None:
        """Wait longer after each failure in a row, doubling up to MAX_BACKOFF, with jitter (within 20 %), so
        instances cut off together do not all ask again at one moment; `quiet` when the cause was already logged
        (a database outage)."""
        self._backoff = min(MAX_BACKOFF, max(1.0, self._backoff * 2))
        self._pause = self._backoff * (0.8 + 0.4 * self._rng())
        log.log(logging.DEBUG if quiet else logging.WARNING, "%s; retrying in %.1f s", message, self._pause)


async def _sleep_unless(stopping: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), timeout=seconds)
