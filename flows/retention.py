"""Retention: rows the bot is done with are deleted after a while, so an event's cost does not grow with its age.

Processed update keys, delivered outbox entries and fired timers are kept for `RETENTION` and then deleted by
the `Pruner`, `BATCH` rows per write transaction, so it never holds the write lock for long. Telegram redelivers
an update within 24 h, so with 48 h a repeat still finds its key and is still acted on once. What each port
keeps regardless (undelivered replies, evidence a waiting card names, unfired timers, the newest row) is in
`flows/ports.py`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from flows.clock import Clock
from flows.ports import Store, Tx

log = logging.getLogger(__name__)

RETENTION = timedelta(hours=48)
BATCH = 1_000
FIRST_PASS = 60.0  # seconds after start: start-up (left-over deliveries, late timers) goes first
EVERY = 3_600.0  # seconds between passes
PAUSE = 0.1
"""Seconds between two batches, in which a writer of another process (an `accounts import`, say) can take
SQLite's lock: its busy handler is no queue, and gets the lock only if it is free when it next looks. Writers
of this process queue on the store's own lock and need no pause."""

PruneStep = Callable[[Tx, datetime, int], Awaitable[int]]


async def _update_keys(tx: Tx, before: datetime, limit: int) -> int:
    return await tx.updates.prune(before, limit)


async def _delivered_replies(tx: Tx, before: datetime, limit: int) -> int:
    return await tx.outbox.prune(before, limit)


async def _fired_timers(tx: Tx, before: datetime, limit: int) -> int:
    return await tx.timers.prune(before, limit)


# Keys go first: a timer's key `timer:{id}` is claimed in the transaction that marks it fired, at the same time,
# so a fired timer's key is gone before its row (its id, should SQLite ever give it again, collides with nothing).
STEPS: dict[str, PruneStep] = {
    "update keys": _update_keys,
    "delivered replies": _delivered_replies,
    "fired timers": _fired_timers,
}


class Pruner:
    """A companion of the runner: `FIRST_PASS` seconds after `resume()` and then every `EVERY` seconds, one pass
    deletes what is older than `RETENTION`, batch by batch, until nothing older is left; `stop()` ends it
    between two batches."""

    def __init__(self, store: Store, clock: Clock, *, first: float = FIRST_PASS, every: float = EVERY,
                 batch: int = BATCH, pause: float = PAUSE) -> None:
        self.store = store
        self.clock = clock
        self.first = first
        self.every = every
        self.batch = batch
        self.pause = pause
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def resume(self) -> None:
        """Start the schedule (the runner resumes its companions as it starts)."""
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name="pruner")

    async def stop(self) -> None:
        if self._task is not None:
            self._stopping.set()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def prune(self) -> dict[str, int]:
        """One pass: how many rows of each kind were deleted."""
        before = self.clock.now() - RETENTION
        deleted = {name: await self._prune_all(step, before) for name, step in STEPS.items()}
        if any(deleted.values()):
            log.info("pruned rows older than %s: %s", before.isoformat(timespec="seconds"),
                     ", ".join(f"{count} {name}" for name, count in deleted.items()))
        return deleted

    async def _prune_all(self, step: PruneStep, before: datetime) -> int:
        total = 0
        while not self._stopping.is_set():
            async with self.store.transaction() as tx:
                deleted = await step(tx, before, self.batch)
            total += deleted
            if deleted < self.batch or await self._stopped_within(self.pause):
                break
        return total

    async def _run(self) -> None:
        wait = self.first
        while not await self._stopped_within(wait):
            try:
                await self.prune()
            except Exception:  # the database failed: the next pass tries again
                log.exception("pruning old rows failed")
            wait = self.every

    async def _stopped_within(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            return False
        return True
