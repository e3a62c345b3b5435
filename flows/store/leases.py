"""Delivery leases, in SQL and in memory (see flows/leases.py for what they are for)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from flows.store.outbox import OutboxTable
from flows.store.tables import delivery_leases, outbox, upsert


class SqlLeases:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def owners(self, lane: str, chat_ids: Iterable[int], now: datetime) -> dict[int, str]:
        wanted = set(chat_ids)
        if not wanted:
            return {}
        query = select(delivery_leases.c.chat_id, delivery_leases.c.owner).where(
            delivery_leases.c.lane == lane, delivery_leases.c.chat_id.in_(wanted), delivery_leases.c.until > now
        )
        return {row.chat_id: row.owner for row in await self._conn.execute(query)}

    async def hold(self, lane: str, chat_ids: Iterable[int], owner: str, until: datetime) -> None:
        rows = [{"lane": lane, "chat_id": chat_id, "owner": owner, "until": until} for chat_id in set(chat_ids)]
        if not rows:
            return
        statement = upsert(self._conn, delivery_leases)
        statement = statement.on_conflict_do_update(
            index_elements=[delivery_leases.c.lane, delivery_leases.c.chat_id],
            set_={"owner": statement.excluded.owner, "until": statement.excluded.until},
        )
        await self._conn.execute(statement, rows)

    async def renew(self, lane: str, owner: str, until: datetime) -> set[int]:
        mine = (delivery_leases.c.lane == lane) & (delivery_leases.c.owner == owner)
        statement = update(delivery_leases).where(mine).values(until=until).returning(delivery_leases.c.chat_id)
        return set((await self._conn.execute(statement)).scalars())

    async def release(self, lane: str, owner: str, chat_ids: Iterable[int] | None = None) -> None:
        statement = delivery_leases.delete().where(delivery_leases.c.lane == lane, delivery_leases.c.owner == owner)
        if chat_ids is not None:
            wanted = set(chat_ids)
            if not wanted:
                return
            statement = statement.where(delivery_leases.c.chat_id.in_(wanted))
        await self._conn.execute(statement)

    async def unleased(self, lane: str, now: datetime, limit: int, after: int | None = None) -> list[int]:
        live = select(delivery_leases.c.chat_id).where(delivery_leases.c.lane == lane, delivery_leases.c.until > now)
        query = (
            select(outbox.c.chat_id).where(outbox.c.delivered_at.is_(None), outbox.c.chat_id.not_in(live))
            .group_by(outbox.c.chat_id).order_by(outbox.c.chat_id).limit(limit)
        )
        if after is not None:
            query = query.where(outbox.c.chat_id > after)
        return list((await self._conn.execute(query)).scalars())


@dataclass
class Lease:
    owner: str
    until: datetime


@dataclass
class LeaseTable:
    rows: dict[tuple[str, int], Lease] = field(default_factory=dict)


class MemoryLeases:
    def __init__(self, table: LeaseTable, outbox_table: OutboxTable) -> None:
        self._rows = table.rows
        self._outbox = outbox_table

    async def owners(self, lane: str, chat_ids: Iterable[int], now: datetime) -> dict[int, str]:
        found = ((chat_id, self._rows.get((lane, chat_id))) for chat_id in set(chat_ids))
        return {chat_id: lease.owner for chat_id, lease in found if lease is not None and lease.until > now}

    async def hold(self, lane: str, chat_ids: Iterable[int], owner: str, until: datetime) -> None:
        for chat_id in set(chat_ids):
            self._rows[(lane, chat_id)] = Lease(owner, until)

    async def renew(self, lane: str, owner: str, until: datetime) -> set[int]:
        renewed = set()
        for (held_in, chat_id), lease in self._rows.items():
            if held_in == lane and lease.owner == owner:
                lease.until = until
                renewed.add(chat_id)
        return renewed

    async def release(self, lane: str, owner: str, chat_ids: Iterable[int] | None = None) -> None:
        wanted = None if chat_ids is None else set(chat_ids)
        for key, lease in list(self._rows.items()):
            if key[0] == lane and lease.owner == owner and (wanted is None or key[1] in wanted):
                del self._rows[key]

    async def unleased(self, lane: str, now: datetime, limit: int, after: int | None = None) -> list[int]:
        live = {chat_id for (held_in, chat_id), lease in self._rows.items() if held_in == lane and lease.until > now}
        waiting = {row.chat_id for row in self._outbox.rows.values()
                   if row.delivered_at is None and (after is None or row.chat_id > after)}
        return sorted(waiting - live)[:limit]
