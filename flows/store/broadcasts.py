"""Broadcasts and their recipients, in SQL and in memory.

"Only one broadcast runs at a time" is a property of the rows: `start` is one UPDATE from draft to running that
matches nothing while another row is running, and a unique partial index on running rows (migration 0005) makes a
second running row impossible even where two transactions run side by side (PostgreSQL's READ COMMITTED).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, literal, or_, select, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from flows.audience import takes
from flows.records import (
    ACTIVE,
    CANCELLED,
    DRAFT,
    FINISHED,
    PENDING,
    RUNNING,
    SENDING,
    STATES,
    UNCERTAIN,
    BroadcastView,
)
from flows.store.cases import CaseTable
from flows.store.tables import broadcast_deliveries as deliveries
from flows.store.tables import broadcasts, cases, users
from flows.store.updates import UserTable


def audience_rule(audience: str, language: str | None) -> ColumnElement[bool]:
    """Which `users` rows an audience takes (flows/audience.py says it in words). Blocked users never."""
    rule: ColumnElement[bool] = true()
    if audience == "open":
        rule = users.c.id.in_(select(cases.c.user_id).where(cases.c.status.in_(ACTIVE)))
    elif audience == "language":
        spoken = func.lower(users.c.language)
        rule = or_(spoken == language, spoken.like(f"{language}-%"))
    return and_(users.c.blocked.is_(False), rule)


def _view(row: Any) -> BroadcastView:
    copy_from = None if row.from_chat_id is None else (row.from_chat_id, row.from_message_id)
    return BroadcastView(
        id=row.id, status=row.status, audience=row.audience, language=row.language, created_by=row.created_by,
        created_at=row.created_at, text=row.text, copy_from=copy_from, total=row.total,
        status_chat_id=row.status_chat_id, status_message_id=row.status_message_id, started_at=row.started_at,
        finished_at=row.finished_at,
    )


def _every_state(found: dict[str, int]) -> dict[str, int]:
    return {state: int(found.get(state, 0)) for state in (*STATES, *found)}


class SqlBroadcasts:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def create(self, now: datetime, created_by: int, audience: str, language: str | None, *,
                     text: str | None, copy_from: tuple[int, int] | None) -> int:
        row = {
            "created_by": created_by, "created_at": now, "text": text, "audience": audience,
            "language": language, "status": DRAFT, "total": 0,
            "from_chat_id": copy_from[0] if copy_from else None,
            "from_message_id": copy_from[1] if copy_from else None,
        }
        result = await self._conn.execute(broadcasts.insert().returning(broadcasts.c.id), row)
        return int(result.scalar_one())

    async def get(self, broadcast_id: int) -> BroadcastView | None:
        row = (await self._conn.execute(select(broadcasts).where(broadcasts.c.id == broadcast_id))).first()
        return _view(row) if row else None

    async def set_audience(self, broadcast_id: int, audience: str, language: str | None) -> bool:
        result = await self._conn.execute(
            update(broadcasts).where(broadcasts.c.id == broadcast_id, broadcasts.c.status == DRAFT)
            .values(audience=audience, language=language))
        return bool(result.rowcount)

    async def audience_size(self, audience: str, language: str | None) -> int:
        query = select(func.count(users.c.chat_id.distinct())).where(audience_rule(audience, language))
        return int((await self._conn.execute(query)).scalar_one())

    async def start(self, broadcast_id: int, status_chat_id: int, status_message_id: int,
                    now: datetime) -> int | None:
        other = broadcasts.alias("other")
        statement = (
            update(broadcasts)
            .where(broadcasts.c.id == broadcast_id, broadcasts.c.status == DRAFT,
                   ~exists().where(other.c.status == RUNNING))
            .values(status=RUNNING, started_at=now, status_chat_id=status_chat_id,
                    status_message_id=status_message_id)
        )
        try:
            async with self._conn.begin_nested():  # a concurrent start that committed first trips the index
                started = (await self._conn.execute(statement)).rowcount
        except IntegrityError:
            return None
        if not started:
            return None
        total = await self._freeze(broadcast_id, now)
        await self._conn.execute(update(broadcasts).where(broadcasts.c.id == broadcast_id).values(total=total))
        return total

    async def _freeze(self, broadcast_id: int, now: datetime) -> int:
        """One pending row per recipient chat, in one statement; returns how many."""
        audience, language = (await self._conn.execute(
            select(broadcasts.c.audience, broadcasts.c.language).where(broadcasts.c.id == broadcast_id))).one()
        recipients = (
            select(literal(broadcast_id), users.c.chat_id, literal(PENDING), literal(0),
                   literal(now, deliveries.c.updated_at.type))
            .where(audience_rule(audience, language)).distinct()
        )
        columns = ["broadcast_id", "chat_id", "state", "attempts", "updated_at"]
        await self._conn.execute(deliveries.insert().from_select(columns, recipients))
        count = select(func.count()).where(deliveries.c.broadcast_id == broadcast_id)
        return int((await self._conn.execute(count)).scalar_one())

    async def running(self) -> list[int]:
        query = select(broadcasts.c.id).where(broadcasts.c.status == RUNNING).order_by(broadcasts.c.id)
        return [int(i) for i in (await self._conn.execute(query)).scalars()]

    async def cancel(self, broadcast_id: int, now: datetime) -> bool:
        result = await self._conn.execute(
            update(broadcasts).where(broadcasts.c.id == broadcast_id, broadcasts.c.status.in_((DRAFT, RUNNING)))
            .values(status=CANCELLED, finished_at=now))
        return bool(result.rowcount)

    async def finish(self, broadcast_id: int, now: datetime) -> None:
        await self._conn.execute(
            update(broadcasts).where(broadcasts.c.id == broadcast_id, broadcasts.c.status == RUNNING)
            .values(status=FINISHED, finished_at=now))

    async def counts(self, broadcast_id: int) -> dict[str, int]:
        query = (
            select(deliveries.c.state, func.count()).where(deliveries.c.broadcast_id == broadcast_id)
            .group_by(deliveries.c.state)
        )
        return _every_state({state: count for state, count in await self._conn.execute(query)})

    async def pending(self, broadcast_id: int, after: int | None, limit: int) -> list[int]:
        query = select(deliveries.c.chat_id).where(deliveries.c.broadcast_id == broadcast_id,
                                                   deliveries.c.state == PENDING)
        if after is not None:
            query = query.where(deliveries.c.chat_id > after)
        return list((await self._conn.execute(query.order_by(deliveries.c.chat_id).limit(limit))).scalars())

    async def claim(self, broadcast_id: int, chat_id: int, now: datetime) -> bool:
        result = await self._conn.execute(
            update(deliveries).where(deliveries.c.broadcast_id == broadcast_id, deliveries.c.chat_id == chat_id,
                                     deliveries.c.state == PENDING)
            .values(state=SENDING, updated_at=now))
        return bool(result.rowcount)

    async def record(self, broadcast_id: int, chat_id: int, state: str, attempts: int, now: datetime) -> None:
        await self._conn.execute(
            update(deliveries).where(deliveries.c.broadcast_id == broadcast_id, deliveries.c.chat_id == chat_id)
            .values(state=state, attempts=deliveries.c.attempts + attempts, updated_at=now))

    async def mark_uncertain(self, broadcast_ids: Sequence[int], now: datetime) -> int:
        if not broadcast_ids:
            return 0
        result = await self._conn.execute(
            update(deliveries).where(deliveries.c.broadcast_id.in_(broadcast_ids), deliveries.c.state == SENDING)
            .values(state=UNCERTAIN, updated_at=now))
        return int(result.rowcount)


@dataclass
class DeliveryRecord:
    state: str
    attempts: int
    updated_at: datetime


@dataclass
class BroadcastTable:
    rows: dict[int, BroadcastView] = field(default_factory=dict)
    deliveries: dict[int, dict[int, DeliveryRecord]] = field(default_factory=dict)  # broadcast id → chat id → row
    last_id: int = 0


class MemoryBroadcasts:
    """Broadcasts over their own table, reading the users and cases tables for the audiences."""

    def __init__(self, table: BroadcastTable, users: UserTable, cases: CaseTable) -> None:
        self._table = table
        self._users = users
        self._cases = cases

    async def create(self, now: datetime, created_by: int, audience: str, language: str | None, *,
                     text: str | None, copy_from: tuple[int, int] | None) -> int:
        self._table.last_id += 1
        broadcast_id = self._table.last_id
        self._table.rows[broadcast_id] = BroadcastView(
            id=broadcast_id, status=DRAFT, audience=audience, language=language, created_by=created_by,
            created_at=now, text=text, copy_from=(copy_from[0], copy_from[1]) if copy_from else None, total=0,
            status_chat_id=None, status_message_id=None, started_at=None, finished_at=None,
        )
        return broadcast_id

    async def get(self, broadcast_id: int) -> BroadcastView | None:
        return self._table.rows.get(broadcast_id)

    async def set_audience(self, broadcast_id: int, audience: str, language: str | None) -> bool:
        return self._change(broadcast_id, (DRAFT,), audience=audience, language=language)

    async def audience_size(self, audience: str, language: str | None) -> int:
        return len(self._audience(audience, language))

    def _audience(self, audience: str, language: str | None) -> set[int]:
        with_case = {c.user_id for c in self._cases.rows.values() if c.status in ACTIVE}
        return {
            user.chat_id for user in self._users.rows.values()
            if takes(audience, language, blocked=user.blocked, spoken=user.language,
                     active_case=user.id in with_case)
        }

    async def start(self, broadcast_id: int, status_chat_id: int, status_message_id: int,
                    now: datetime) -> int | None:
        view = self._table.rows.get(broadcast_id)
        if view is None or view.status != DRAFT or await self.running():
            return None
        chats = sorted(self._audience(view.audience, view.language))
        self._table.deliveries[broadcast_id] = {chat: DeliveryRecord(PENDING, 0, now) for chat in chats}
        self._table.rows[broadcast_id] = replace(
            view, status=RUNNING, total=len(chats), started_at=now, status_chat_id=status_chat_id,
            status_message_id=status_message_id)
        return len(chats)

    async def running(self) -> list[int]:
        return sorted(i for i, view in self._table.rows.items() if view.status == RUNNING)

    async def cancel(self, broadcast_id: int, now: datetime) -> bool:
        return self._change(broadcast_id, (DRAFT, RUNNING), status=CANCELLED, finished_at=now)

    async def finish(self, broadcast_id: int, now: datetime) -> None:
        self._change(broadcast_id, (RUNNING,), status=FINISHED, finished_at=now)

    def _change(self, broadcast_id: int, when: tuple[str, ...], **values: Any) -> bool:
        view = self._table.rows.get(broadcast_id)
        if view is None or view.status not in when:
            return False
        self._table.rows[broadcast_id] = replace(view, **values)
        return True

    async def counts(self, broadcast_id: int) -> dict[str, int]:
        found: dict[str, int] = {}
        for row in self._rows(broadcast_id).values():
            found[row.state] = found.get(row.state, 0) + 1
        return _every_state(found)

    async def pending(self, broadcast_id: int, after: int | None, limit: int) -> list[int]:
        chats = sorted(chat for chat, row in self._rows(broadcast_id).items()
                       if row.state == PENDING and (after is None or chat > after))
        return chats[:limit]

    async def claim(self, broadcast_id: int, chat_id: int, now: datetime) -> bool:
        row = self._rows(broadcast_id).get(chat_id)
        if row is None or row.state != PENDING:
            return False
        row.state, row.updated_at = SENDING, now
        return True

    async def record(self, broadcast_id: int, chat_id: int, state: str, attempts: int, now: datetime) -> None:
        row = self._rows(broadcast_id).get(chat_id)
        if row is not None:
            row.state, row.attempts, row.updated_at = state, row.attempts + attempts, now

    async def mark_uncertain(self, broadcast_ids: Sequence[int], now: datetime) -> int:
        marked = 0
        for broadcast_id in set(broadcast_ids):
            for row in self._rows(broadcast_id).values():
                if row.state == SENDING:
                    row.state, row.updated_at = UNCERTAIN, now
                    marked += 1
        return marked

    def _rows(self, broadcast_id: int) -> dict[int, DeliveryRecord]:
        return self._table.deliveries.get(broadcast_id, {})
