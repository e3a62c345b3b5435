"""Erasing what the desk keeps about one user, on their request (/delete), in SQL and in memory.

Their cases go, with the cases' unfired timers (marked fired, so no timer id is ever given again: a timer fires
under its id) and evidence rows; so do the delivered replies to their chat (but the newest row of the outbox,
whose id SQLite would hand out again) and their user row. What protects accounts stays: audit lines, code
fingerprints and failed-check counts (docs/SECURITY.md).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from flows.store.cases import CaseTable
from flows.store.evidence import EvidenceTable
from flows.store.outbox import OutboxTable
from flows.store.tables import cases, evidence_messages, outbox, timers, users
from flows.store.timers import TimerTable
from flows.store.updates import UserTable


class SqlErasure:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def erase_user(self, user_id: int, now: datetime) -> int:
        conn = self._conn
        case_ids = list((await conn.execute(select(cases.c.id).where(cases.c.user_id == user_id))).scalars())
        if case_ids:
            await conn.execute(update(timers).where(timers.c.case_id.in_(case_ids), timers.c.fired_at.is_(None))
                               .values(fired_at=now))
            await conn.execute(evidence_messages.delete().where(evidence_messages.c.case_id.in_(case_ids)))
            await conn.execute(cases.delete().where(cases.c.id.in_(case_ids)))
        newest = select(func.max(outbox.c.id)).scalar_subquery()
        await conn.execute(outbox.delete().where(outbox.c.chat_id == user_id, outbox.c.delivered_at.is_not(None),
                                                 outbox.c.id < newest))
        await conn.execute(users.delete().where(users.c.id == user_id))
        return len(case_ids)


class MemoryErasure:
    def __init__(self, case_table: CaseTable, timer_table: TimerTable, evidence_table: EvidenceTable,
                 outbox_table: OutboxTable, user_table: UserTable) -> None:
        self._cases, self._timers, self._evidence = case_table, timer_table, evidence_table
        self._outbox, self._users = outbox_table, user_table

    async def erase_user(self, user_id: int, now: datetime) -> int:
        case_ids = {case.id for case in self._cases.rows.values() if case.user_id == user_id}
        for row in self._timers.rows.values():
            if row.due.case_id in case_ids and row.fired_at is None:
                row.fired_at = now
        self._evidence.rows = [row for row in self._evidence.rows if row[0] not in case_ids]
        for case_id in case_ids:
            del self._cases.rows[case_id]
        newest = max(self._outbox.rows, default=0)
        for row_id in [i for i, e in self._outbox.rows.items()
                       if e.chat_id == user_id and e.delivered_at is not None and i < newest]:
            del self._outbox.rows[row_id]
        self._users.rows.pop(user_id, None)
        return len(case_ids)
