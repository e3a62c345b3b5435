"""The audit log, in SQL."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from flows.records import AuditEntry, AuditRecord
from flows.store.tables import audit
from flows.store.types import as_stored


class SqlAudit:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, entries: Sequence[AuditEntry], now: datetime) -> None:
        if entries:
            await self._conn.execute(audit.insert(), [
                {"at": now, "actor": e.actor, "action": e.action, "subject": e.subject, "detail": dict(e.detail)}
                for e in entries
            ])

    async def recent(self, limit: int) -> list[AuditRecord]:
        query = select(audit).order_by(audit.c.id.desc()).limit(limit)
        return [AuditRecord(r.id, r.at, r.actor, r.action, r.subject, r.detail)
                for r in await self._conn.execute(query)]


@dataclass
class AuditTable:
    rows: list[AuditRecord] = field(default_factory=list)


class MemoryAudit:
    def __init__(self, table: AuditTable) -> None:
        self._rows = table.rows

    async def add(self, entries: Sequence[AuditEntry], now: datetime) -> None:
        for e in entries:
            self._rows.append(AuditRecord(len(self._rows) + 1, now, e.actor, e.action, e.subject,
                                          as_stored(dict(e.detail))))

    async def recent(self, limit: int) -> list[AuditRecord]:
        return list(reversed(self._rows[-limit:])) if limit > 0 else []
