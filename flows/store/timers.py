"""Timers, in SQL."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from flows.records import DELETE_MESSAGE, DueTimer, NewTimer
from flows.store.tables import timers
from flows.store.types import as_stored


class SqlTimers:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, new: Sequence[NewTimer]) -> None:
        latest = {(t.case_id, t.spec.kind): t for t in new if t.spec.replace}
        new = [t for t in new if not t.spec.replace or latest[(t.case_id, t.spec.kind)] is t]
        if latest:
            # A replaced timer is closed (`fired_at` set to its own due time, so pruning takes it in time), not
            # deleted: SQLite gives a new row max(id) + 1, so deleting the newest timer would hand its id, and its
            # update key `timer:{id}`, to its replacement, and a firing of the old one already read as due would
            # then act on the new one.
            await self._conn.execute(update(timers).where(
                timers.c.fired_at.is_(None), tuple_(timers.c.case_id, timers.c.kind).in_(set(latest)),
            ).values(fired_at=timers.c.due_at))
        if new:
            await self._conn.execute(timers.insert(), [
                {"case_id": t.case_id, "user_id": t.user_id, "chat_id": t.chat_id, "step": t.step,
                 "kind": t.spec.kind, "payload": dict(t.spec.payload), "due_at": t.spec.due}
                for t in new
            ])

    async def schedule_deletions(self, sent: Sequence[tuple[int, int, int]], now: datetime) -> None:
        if sent:
            await self._conn.execute(timers.insert(), [
                {"case_id": "", "user_id": chat_id, "chat_id": chat_id, "step": None, "kind": DELETE_MESSAGE,
                 "payload": {"chat_id": chat_id, "message_id": message_id},
                 "due_at": now + timedelta(seconds=after)}
                for chat_id, message_id, after in sent
            ])

    async def due(self, now: datetime, limit: int) -> list[DueTimer]:
        query = (
            select(timers).where(timers.c.fired_at.is_(None), timers.c.due_at <= now)
            .order_by(timers.c.due_at, timers.c.id).limit(limit)
        )
        return [
            DueTimer(r.id, r.case_id, r.user_id, r.chat_id, r.step, r.kind, r.payload, r.due_at)
            for r in await self._conn.execute(query)
        ]

    async def next_due(self) -> datetime | None:
        query = select(func.min(timers.c.due_at)).where(timers.c.fired_at.is_(None))
        value = (await self._conn.execute(query)).scalar()  # MIN() keeps the column's type, so a UTC datetime
        return value if isinstance(value, datetime) else None

    async def unfired(self, timer_ids: Sequence[int]) -> set[int]:
        if not timer_ids:
            return set()
        query = select(timers.c.id).where(timers.c.id.in_(timer_ids), timers.c.fired_at.is_(None))
        return set((await self._conn.execute(query)).scalars())

    async def mark_fired(self, timer_ids: Sequence[int], now: datetime) -> None:
        if timer_ids:
            await self._conn.execute(update(timers).where(timers.c.id.in_(timer_ids), timers.c.fired_at.is_(None))
                                     .values(fired_at=now))

    async def prune(self, before: datetime, limit: int) -> int:
        # SQLite gives a new row max(id) + 1: without the newest row, an id (and its update key) would come again.
        newest = select(func.max(timers.c.id)).scalar_subquery()
        oldest = (select(timers.c.id).where(timers.c.fired_at < before, timers.c.id < newest)
                  .order_by(timers.c.fired_at).limit(limit))
        result = await self._conn.execute(timers.delete().where(timers.c.id.in_(oldest)))
        return int(result.rowcount)


@dataclass
class TimerRecord:
    due: DueTimer
    fired_at: datetime | None = None


@dataclass
class TimerTable:
    rows: dict[int, TimerRecord] = field(default_factory=dict)
    last_id: int = 0


class MemoryTimers:
    def __init__(self, table: TimerTable) -> None:
        self._table = table

    async def add(self, new: Sequence[NewTimer]) -> None:
        latest = {(t.case_id, t.spec.kind): t for t in new if t.spec.replace}
        rows = self._table.rows
        for row in rows.values():  # closed, not deleted, as in SqlTimers.add
            if row.fired_at is None and (row.due.case_id, row.due.kind) in latest:
                row.fired_at = row.due.due_at
        for t in new:
            if not t.spec.replace or latest[(t.case_id, t.spec.kind)] is t:
                self._insert(t.case_id, t.user_id, t.chat_id, t.step, t.spec.kind, dict(t.spec.payload), t.spec.due)

    async def schedule_deletions(self, sent: Sequence[tuple[int, int, int]], now: datetime) -> None:
        for chat_id, message_id, after in sent:
            self._insert("", chat_id, chat_id, None, DELETE_MESSAGE, {"chat_id": chat_id, "message_id": message_id},
                         now + timedelta(seconds=after))

    def _insert(self, case_id: str, user_id: int, chat_id: int, step: str | None, kind: str,
                payload: dict[str, Any], due_at: datetime) -> None:
        self._table.last_id += 1
        timer_id = self._table.last_id
        self._table.rows[timer_id] = TimerRecord(
            DueTimer(timer_id, case_id, user_id, chat_id, step, kind, as_stored(payload), due_at))

    async def due(self, now: datetime, limit: int) -> list[DueTimer]:
        due = sorted((r.due for r in self._table.rows.values() if r.fired_at is None and r.due.due_at <= now),
                     key=lambda t: (t.due_at, t.id))
        return [replace(t, payload=as_stored(t.payload)) for t in due[:limit]]

    async def next_due(self) -> datetime | None:
        return min((r.due.due_at for r in self._table.rows.values() if r.fired_at is None), default=None)

    async def unfired(self, timer_ids: Sequence[int]) -> set[int]:
        rows = self._table.rows
        return {i for i in timer_ids if i in rows and rows[i].fired_at is None}

    async def mark_fired(self, timer_ids: Sequence[int], now: datetime) -> None:
        for timer_id in timer_ids:
            row = self._table.rows.get(timer_id)
            if row is not None and row.fired_at is None:
                row.fired_at = now

    async def prune(self, before: datetime, limit: int) -> int:
        rows = self._table.rows
        newest = max(rows, default=None)
        old = sorted((r.fired_at, i) for i, r in rows.items() if r.fired_at is not None and r.fired_at < before
                     and i != newest)[:limit]
        for _, timer_id in old:
            del rows[timer_id]
        return len(old)
