"""Staff messages that show a case's evidence, in SQL."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from flows.ports import Timers
from flows.store.tables import evidence_messages


class SqlEvidence:
    def __init__(self, conn: AsyncConnection, timers: Timers) -> None:
        self._conn = conn
        self._timers = timers

    async def record(self, shown: Sequence[tuple[str, int, tuple[int, ...]]], now: datetime) -> None:
        if not shown:
            return
        rows = evidence_messages.c
        case_ids = {case_id for case_id, _, _ in shown}
        purged = set((await self._conn.execute(select(rows.case_id).where(
            rows.case_id.in_(case_ids), rows.message_id.is_(None)))).scalars())
        await self._timers.schedule_deletions([(chat_id, message_id, 0) for case_id, chat_id, message_ids in shown
                                               if case_id in purged for message_id in message_ids], now)
        fresh = [{"case_id": case_id, "chat_id": chat_id, "message_id": message_id, "created_at": now}
                 for case_id, chat_id, message_ids in shown if case_id not in purged for message_id in message_ids]
        if fresh:
            await self._conn.execute(evidence_messages.insert(), fresh)

    async def forget(self, case_id: str, now: datetime) -> None:
        rows = evidence_messages.c
        query = select(rows.chat_id, rows.message_id).where(rows.case_id == case_id, rows.message_id.is_not(None))
        shown = [(row.chat_id, row.message_id, 0) for row in await self._conn.execute(query)]
        await self._timers.schedule_deletions(shown, now)
        await self._conn.execute(evidence_messages.delete().where(rows.case_id == case_id))
        await self._conn.execute(evidence_messages.insert(),
                                 [{"case_id": case_id, "chat_id": 0, "message_id": None, "created_at": now}])

    async def shown(self, case_id: str, chat_id: int, since: datetime | None) -> bool:
        rows = evidence_messages.c
        query = select(rows.id).where(rows.case_id == case_id, rows.chat_id == chat_id, rows.message_id.is_not(None))
        if since is not None:
            query = query.where(rows.created_at >= since)
        return (await self._conn.execute(query.limit(1))).first() is not None


@dataclass
class EvidenceTable:
    rows: list[tuple[str, int, int | None, datetime]] = field(default_factory=list)  # case, chat, message, at


class MemoryEvidence:
    def __init__(self, table: EvidenceTable, timers: Timers) -> None:
        self._table = table
        self._timers = timers

    async def record(self, shown: Sequence[tuple[str, int, tuple[int, ...]]], now: datetime) -> None:
        purged = {case_id for case_id, _, message_id, _ in self._table.rows if message_id is None}
        await self._timers.schedule_deletions([(chat_id, message_id, 0) for case_id, chat_id, message_ids in shown
                                               if case_id in purged for message_id in message_ids], now)
        self._table.rows.extend((case_id, chat_id, message_id, now) for case_id, chat_id, message_ids in shown
                                if case_id not in purged for message_id in message_ids)

    async def forget(self, case_id: str, now: datetime) -> None:
        mine = [row for row in self._table.rows if row[0] == case_id]
        await self._timers.schedule_deletions([(chat, message, 0) for _, chat, message, _ in mine if message], now)
        self._table.rows = [row for row in self._table.rows if row[0] != case_id] + [(case_id, 0, None, now)]

    async def shown(self, case_id: str, chat_id: int, since: datetime | None) -> bool:
        return any(case == case_id and chat == chat_id and message is not None and (since is None or at >= since)
                   for case, chat, message, at in self._table.rows)
