"""Events waiting for EVENTS_URL, in SQL and in memory."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from flows.records import OutgoingEvent, StoredEvent
from flows.store.tables import outgoing_events, upsert
from flows.store.types import as_utc


def _stored(row: Row[Any]) -> StoredEvent:
    event = OutgoingEvent(row.event_id, row.type, as_utc(row.created_at), dict(row.data))
    return StoredEvent(int(row.id), event, int(row.attempts), as_utc(row.next_at))


class SqlEventOutbox:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, events: Sequence[OutgoingEvent]) -> None:
        if not events:
            return
        rows = [{"event_id": e.id, "type": e.type, "data": dict(e.data), "created_at": e.created_at,
                 "attempts": 0, "next_at": e.created_at} for e in events]
        await self._conn.execute(upsert(self._conn, outgoing_events).on_conflict_do_nothing(
            index_elements=["event_id"]), rows)

    async def due(self, now: datetime, limit: int) -> list[StoredEvent]:
        c = outgoing_events.c
        query = select(outgoing_events).where(c.closed_at.is_(None), c.next_at <= now).order_by(c.id).limit(limit)
        return [_stored(row) for row in await self._conn.execute(query)]

    async def next_due(self) -> datetime | None:
        c = outgoing_events.c
        found = await self._conn.scalar(select(func.min(c.next_at)).where(c.closed_at.is_(None)))
        return as_utc(found) if found is not None else None

    async def retry_later(self, row: int, at: datetime, error: str) -> None:
        c = outgoing_events.c
        await self._conn.execute(outgoing_events.update().where(c.id == row, c.closed_at.is_(None)).values(
            attempts=c.attempts + 1, next_at=at, error=error[:200]))

    async def close(self, row: int, outcome: str, now: datetime) -> None:
        c = outgoing_events.c
        await self._conn.execute(outgoing_events.update().where(c.id == row, c.closed_at.is_(None)).values(
            attempts=c.attempts + 1, outcome=outcome, closed_at=now))


@dataclass
class EventTable:
    rows: list[tuple[StoredEvent, str | None]] = field(default_factory=list)  # the event, its outcome once closed


class MemoryEventOutbox:
    def __init__(self, table: EventTable) -> None:
        self._rows = table.rows

    async def add(self, events: Sequence[OutgoingEvent]) -> None:
        known = {stored.event.id for stored, _ in self._rows}
        for event in events:
            if event.id not in known:
                known.add(event.id)
                self._rows.append((StoredEvent(len(self._rows) + 1, event, 0, as_utc(event.created_at)), None))

    async def due(self, now: datetime, limit: int) -> list[StoredEvent]:
        return [stored for stored, outcome in self._rows if outcome is None and stored.next_at <= now][:limit]

    async def next_due(self) -> datetime | None:
        return min((stored.next_at for stored, outcome in self._rows if outcome is None), default=None)

    async def retry_later(self, row: int, at: datetime, error: str) -> None:
        for index, (stored, outcome) in enumerate(self._rows):
            if stored.row == row and outcome is None:
                self._rows[index] = (replace(stored, attempts=stored.attempts + 1, next_at=as_utc(at)), None)

    async def close(self, row: int, outcome: str, now: datetime) -> None:
        for index, (stored, current) in enumerate(self._rows):
            if stored.row == row and current is None:
                self._rows[index] = (replace(stored, attempts=stored.attempts + 1), outcome)
