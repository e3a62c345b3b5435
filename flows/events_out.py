"""Events for the operator's systems (EVENTS_URL): what they are, made from what a decision records, and the
sender that posts them, signed, at least once.

Case events come from the audit lines a decision writes (opened, submitted, approved, rejected); account events
from the changes as they come into force: at once for the built-in table, when the service confirms them for an
HTTP directory. Either way an event is written in the same transaction as what it reports, so none is lost and
none is made twice; the sender then posts each until the receiver answers 2xx, always with the same id.
Events carry ids and kinds only: never an email, a phone number, a code, a secret or an answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import aiohttp

from flows.backoff import retry_delay
from flows.clock import Clock
from flows.directory import LOCK_WITHDRAWALS, Change
from flows.leases import claim_rows
from flows.ports import Store, Tx
from flows.records import AuditEntry, OutgoingEvent, StoredEvent

log = logging.getLogger(__name__)

CLAIMS = "event"  # the lease lane of the claims on due events, keyed by their row id
CLAIM_LOOKUP = 1_000  # due events read to see that one is still due

CASE_EVENTS = {"case.opened": "case.opened", "case.submitted": "case.submitted",
               "review.approved": "case.approved", "review.rejected": "case.rejected"}
GIVE_UP_AFTER = 5  # tries answered with a 4xx that retrying cannot change (not 408 or 429)


def _event(kind: str, now: datetime, **data: object) -> OutgoingEvent:
    return OutgoingEvent(str(uuid.uuid4()), kind, now, {name: value for name, value in data.items()
                                                        if value is not None})


def case_events(entries: Sequence[AuditEntry], now: datetime) -> list[OutgoingEvent]:
    """The events of a batch's audit lines: a case opened, submitted for review, approved or rejected."""
    found = []
    for entry in entries:
        kind = CASE_EVENTS.get(entry.action)
        if kind is not None and entry.subject.startswith("case:"):
            found.append(_event(kind, now, case=entry.subject.removeprefix("case:"), flow=entry.detail.get("flow"),
                                account_id=entry.detail.get("account_id")))
    return found


def account_event(account_id: int, change: Change, case_id: str | None, now: datetime) -> OutgoingEvent:
    """A change now in force: a new withdrawal lock, or a change of the second factor (or the phone)."""
    if change.kind == LOCK_WITHDRAWALS:
        assert change.until is not None
        return _event("account.withdrawals_locked", now, account_id=account_id, case=case_id,
                      until=change.until.isoformat())
    return _event("account.two_factor_changed", now, account_id=account_id, case=case_id, change=change.kind)


def body_of(event: OutgoingEvent) -> bytes:
    return json.dumps({"id": event.id, "type": event.type, "created_at": event.created_at.isoformat(),
                       "data": dict(event.data)}, separators=(",", ":")).encode()


def signature(key: bytes, timestamp: str, body: bytes) -> str:
    """The `Desk-Signature` value: HMAC-SHA256 over "{timestamp}." and the raw body."""
    return "v1=" + hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class EventSender:
    """A runner companion: posts due events oldest first, signed afresh on each try, and retries with backoff."""

    def __init__(self, store: Store, url: str, signing_key: str, clock: Clock, *, timeout: float = 10.0,
                 poll: float = 1.0, rng: Callable[[], float] = random.random) -> None:
        self.store = store
        self.url = url
        self.key = signing_key.encode()
        self.clock = clock
        self.poll = poll
        self.rng = rng
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._owner = uuid.uuid4().hex  # its claims on due events while instances share the store

    async def resume(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name="events-out")

    async def stop(self) -> None:
        if self._task is not None:
            self._stopping.set()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send_due(self, limit: int = 50) -> int:
        """One pass: post every event due now, in order; how many were tried. While instances share the store,
        each posts only the events it claimed (flows/leases.py), one claim at a time."""
        async with self.store.reading() as tx:
            due = await tx.events.due(self.clock.now(), limit)
        tried = 0
        for stored in due:
            if await self._claim(stored):
                await self._post(stored)
                tried += 1
        return tried

    async def _claim(self, stored: StoredEvent) -> bool:
        """Whether this instance posts the event now: always, unless instances share the store; then only if no
        other live one claimed it. Each is claimed just before its post, as a claim is not renewed."""
        if not self.store.shared:
            return True
        now = self.clock.now()
        async with self.store.transaction() as tx:  # still due: another may have posted it since it was read
            if stored.row not in {row.row for row in await tx.events.due(now, CLAIM_LOOKUP)}:
                return False
            return stored.row in await claim_rows(tx, CLAIMS, [stored.row], self._owner, now)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.send_due()
            except Exception:
                log.exception("posting events failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self.poll)

    async def _post(self, stored: StoredEvent) -> None:
        body = body_of(stored.event)
        timestamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", "Desk-Event-Id": stored.event.id,
                   "Desk-Timestamp": timestamp, "Desk-Signature": signature(self.key, timestamp, body)}
        try:
            async with self._open().post(self.url, data=body, headers=headers) as answer:
                status = answer.status
        except (TimeoutError, aiohttp.ClientError) as error:
            await self._retry(stored, type(error).__name__)
            return
        if 200 <= status < 300:
            await self._close(stored, "delivered")
        elif 400 <= status < 500 and status not in (408, 429) and stored.attempts + 1 >= GIVE_UP_AFTER:
            log.error("EVENTS_URL refused event %s (%s) %d times (HTTP %d): given up", stored.event.id,
                      stored.event.type, GIVE_UP_AFTER, status)
            await self._close(stored, "given_up")
        else:
            await self._retry(stored, f"HTTP {status}")

    async def _retry(self, stored: StoredEvent, error: str) -> None:
        delay = retry_delay(stored.attempts, self.rng)
        async with self.store.transaction() as tx:
            await tx.events.retry_later(stored.row, self.clock.now() + timedelta(seconds=delay), error)
            await self._unclaim(tx, stored)
        log.warning("event %s (%s) not delivered yet, try %d: %s", stored.event.id, stored.event.type,
                    stored.attempts + 1, error)

    async def _close(self, stored: StoredEvent, outcome: str) -> None:
        async with self.store.transaction() as tx:
            await tx.events.close(stored.row, outcome, self.clock.now())
            await self._unclaim(tx, stored)

    async def _unclaim(self, tx: Tx, stored: StoredEvent) -> None:
        if self.store.shared:
            await tx.leases.release(CLAIMS, self._owner, [stored.row])

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session
