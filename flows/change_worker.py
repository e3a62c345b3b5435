"""The change worker: sends the changes queued for an HTTP directory (`flows.changes`), each with its idempotency
key, in queue order per account, until the service confirms it or refuses it for good.

A call that gets no answer, a 429 or a 5xx is tried again later, the delay doubling (with jitter) up to a limit;
the key makes a repeat harmless, so a crash between the call and recording its result, or a connection dropped
after the service applied the change, repeats the call and never the change. Once the service has answered for
good, the result is recorded with detached timers that tell the user (and, for a refusal, staff) what came of
it, in the same transaction.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from flows.backoff import retry_delay
from flows.changes import APPLIED, FAILED, STAFF_ALERT, change_from_json
from flows.clock import Clock
from flows.directory import Change, ChangeRefused, DecryptError, DirectoryUnavailable, SecretBox
from flows.events_out import account_event
from flows.http_directory import DirectoryClient
from flows.leases import claim_rows
from flows.ports import Store, Tx
from flows.records import AuditEntry, NewTimer, StoredChange, TimerSpec

log = logging.getLogger(__name__)

CLAIMS = "change"  # the lease lane of the claims on due changes, keyed by their row id

class ChangeWorker:
    """A runner companion: sends due changes, then sleeps until the next falls due (at most `poll` seconds)."""

    def __init__(self, store: Store, client: DirectoryClient, box: SecretBox, clock: Clock,
                 on_timers: Callable[[], None] = lambda: None, *,
                 poll: float = 0.5, batch: int = 20, rng: Callable[[], float] = random.random,
                 emit_events: bool = False) -> None:
        self.store = store
        self.client = client
        self.box = box
        self.clock = clock
        self.on_timers = on_timers
        self.poll = poll
        self.batch = batch
        self.rng = rng
        self.emit_events = emit_events
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._owner = uuid.uuid4().hex  # its claims on due changes while instances share the store

    async def resume(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name="directory-changes")

    async def stop(self) -> None:
        if self._task is not None:
            self._stopping.set()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def wake(self) -> None:
        """Look for due changes now (a decision has just queued some)."""
        self._wake.set()

    async def send_due(self) -> int:
        """One pass: send every change due now (one per account at a time); how many were sent. While instances
        share the store, each sends only the changes it claimed (flows/leases.py)."""
        now = self.clock.now()
        if self.store.shared:
            async with self.store.transaction() as tx:
                due = await tx.directory_changes.due(now, self.batch)
                mine = await claim_rows(tx, CLAIMS, [row.id for row in due], self._owner, now)
            due = [row for row in due if row.id in mine]
        else:
            async with self.store.reading() as tx:
                due = await tx.directory_changes.due(now, self.batch)
        for failed in await asyncio.gather(*(self._send(row) for row in due), return_exceptions=True):
            if isinstance(failed, Exception):
                log.error("sending an account change failed", exc_info=failed)
        return len(due)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                sent = await self.send_due()
                if sent == self.batch:
                    wait = 0.0
                elif self.store.shared and not sent:  # what is due may be another instance's to send
                    wait = self.poll
                else:
                    wait = await self._seconds_to_next()
            except Exception:
                log.exception("sending account changes failed")
                wait = self.poll
            self._wake.clear()
            waiters = [asyncio.ensure_future(e.wait()) for e in (self._stopping, self._wake)]
            await asyncio.wait(waiters, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()

    async def _seconds_to_next(self) -> float:
        async with self.store.reading() as tx:
            due = await tx.directory_changes.next_due()
        if due is None:
            return self.poll
        return min(self.poll, max(0.0, (due - self.clock.now()).total_seconds()))

    async def _send(self, row: StoredChange) -> None:
        queued = row.queued
        try:
            change = change_from_json(queued.change, self.box)
        except (DecryptError, KeyError, ValueError):
            await self._settle(row, "the queued change cannot be read (SECRET_KEY changed?)")
            return
        try:
            account = await self.client.apply(queued.remote_id, change, queued.key)
        except DirectoryUnavailable as error:
            await self._retry(row, str(error))
            return
        except ChangeRefused as error:
            await self._settle(row, str(error))
            return
        if account is None:
            await self._settle(row, "HTTP 404 account_not_found")
        else:
            await self._settle(row, None, applied=change)

    async def _retry(self, row: StoredChange, error: str) -> None:
        at = self.clock.now() + timedelta(seconds=retry_delay(row.attempts, self.rng))
        async with self.store.transaction() as tx:
            await tx.directory_changes.retry_later(row.id, at, error)
            await self._unclaim(tx, row)
        log.warning("account change %s (%s) not applied yet, try %d: %s", row.id, row.queued.change.get("kind"),
                    row.attempts + 1, error)

    async def _settle(self, row: StoredChange, error: str | None, applied: Change | None = None) -> None:
        """Record the service's last word: the change `applied`, or refused with `error`."""
        status = "applied" if applied is not None else "failed"
        now = self.clock.now()
        kind = str(row.queued.change.get("kind"))
        async with self.store.transaction() as tx:
            await self._unclaim(tx, row)
            group = await _group(tx, row)
            if not await tx.directory_changes.settle(row.id, status, error, now):
                return  # another pass (or instance) recorded it first, and told the user
            timers = self._failure_timers(row, kind, error, group, now) if status == "failed" else \
                self._applied_timers(row, group, now)
            await tx.timers.add(timers)
            if applied is not None and self.emit_events:
                await tx.events.add([account_event(row.queued.account_id, applied, row.queued.case_id, now)])
            await tx.audit.add([AuditEntry("system", f"directory.change_{status}", f"case:{row.queued.case_id}",
                                           {"change": kind, "account_id": row.queued.account_id,
                                            "key": row.queued.key, **({"error": error} if error else {})})], now)
        if status == "failed":
            log.error("account change %s (%s) for case %s refused: %s", row.id, kind, row.queued.case_id, error)
        if timers:
            self.on_timers()

    async def _unclaim(self, tx: Tx, row: StoredChange) -> None:
        if self.store.shared:
            await tx.leases.release(CLAIMS, self._owner, [row.id])

    def _applied_timers(self, row: StoredChange, group: list[StoredChange], now: datetime) -> list[NewTimer]:
        """The usual message, once the group's last change is in force, unless one of them was refused (the
        user heard of that already)."""
        say = row.queued.then.get("say")
        if not say or any(other.status == "failed" for other in group):
            return []
        return self._timers(row, [(APPLIED, {"say": say})], now)

    def _failure_timers(self, row: StoredChange, kind: str, error: str | None, group: list[StoredChange],
                        now: datetime) -> list[NewTimer]:
        told = any(other.status == "failed" for other in group)  # the user hears once per decision
        alert = (STAFF_ALERT, {"change": kind, "error": error or ""})
        return self._timers(row, [alert] if told else [alert, (FAILED, {})], now)

    def _timers(self, row: StoredChange, kinds: list[tuple[str, Mapping[str, Any]]], now: datetime) -> list[NewTimer]:
        queued = row.queued
        if queued.case_id is None or queued.chat_id is None:
            return []
        user_id = int(queued.then.get("user_id") or queued.chat_id)
        return [NewTimer(queued.case_id, user_id, queued.chat_id, None,
                         TimerSpec(kind, now, payload={**payload, "case": queued.case_id}, detached=True))
                for kind, payload in kinds]


async def _group(tx: Tx, row: StoredChange) -> list[StoredChange]:
    """The other changes the same decision made (they share the group of their keys)."""
    if row.queued.case_id is None:
        return []
    group = row.queued.then.get("group")
    return [other for other in await tx.directory_changes.of_case(row.queued.case_id)
            if other.id != row.id and other.queued.then.get("group") == group]
