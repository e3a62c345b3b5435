"""What an HTTP account directory needs kept on the desk's side, in SQL and in memory: the desk's ids for the
service's accounts, and the changes waiting to be sent to the service."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import and_, exists, func, select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from flows.records import QueuedChange, StoredChange
from flows.store.tables import directory_changes, directory_ids, upsert
from flows.store.types import as_utc

PENDING = "pending"
SETTLED = ("applied", "failed")


def _without_secret(change: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in change.items() if name != "secret_enc"}


class SqlDirectoryIds:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def local_ids(self, remote_ids: Sequence[str], now: datetime) -> dict[str, int]:
        wanted = sorted(set(remote_ids))
        if not wanted:
            return {}
        insert = upsert(self._conn, directory_ids).on_conflict_do_nothing(index_elements=["remote_id"])
        await self._conn.execute(insert, [{"remote_id": remote, "created_at": now} for remote in wanted])
        c = directory_ids.c
        rows = await self._conn.execute(select(c.remote_id, c.id).where(c.remote_id.in_(wanted)))
        return {row.remote_id: int(row.id) for row in rows}

    async def remote_id(self, local_id: int) -> str | None:
        c = directory_ids.c
        found = await self._conn.scalar(select(c.remote_id).where(c.id == local_id))
        return str(found) if found is not None else None


def _stored(row: Row[Any]) -> StoredChange:
    queued = QueuedChange(key=row.key, account_id=int(row.account_id), remote_id=row.remote_id,
                          change=dict(row.change), case_id=row.case_id, chat_id=row.chat_id, then=dict(row.then))
    return StoredChange(id=int(row.id), queued=queued, status=row.status, attempts=int(row.attempts),
                        next_at=as_utc(row.next_at), error=row.error, created_at=as_utc(row.created_at),
                        settled_at=as_utc(row.settled_at) if row.settled_at is not None else None)


def _first_pending() -> Any:
    """A pending change with no older pending change of the same account: the next one to send for it."""
    c = directory_changes.c
    older = directory_changes.alias("older")
    blocked = exists().where(and_(older.c.account_id == c.account_id, older.c.status == PENDING, older.c.id < c.id))
    return and_(c.status == PENDING, ~blocked)


class SqlDirectoryChanges:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def queue(self, changes: Sequence[QueuedChange], now: datetime) -> None:
        if not changes:
            return
        rows = [{"key": q.key, "account_id": q.account_id, "remote_id": q.remote_id, "change": dict(q.change),
                 "case_id": q.case_id, "chat_id": q.chat_id, "then": dict(q.then), "status": PENDING,
                 "attempts": 0, "next_at": now, "created_at": now} for q in changes]
        insert = upsert(self._conn, directory_changes).on_conflict_do_nothing(index_elements=["key"])
        await self._conn.execute(insert, rows)

    async def due(self, now: datetime, limit: int) -> list[StoredChange]:
        c = directory_changes.c
        query = select(directory_changes).where(_first_pending(), c.next_at <= now).order_by(c.id).limit(limit)
        return [_stored(row) for row in await self._conn.execute(query)]

    async def next_due(self) -> datetime | None:
        found = await self._conn.scalar(select(func.min(directory_changes.c.next_at)).where(_first_pending()))
        return as_utc(found) if found is not None else None

    async def retry_later(self, change_id: int, at: datetime, error: str) -> None:
        c = directory_changes.c
        await self._conn.execute(directory_changes.update().where(c.id == change_id, c.status == PENDING).values(
            attempts=c.attempts + 1, next_at=at, error=error[:200]))

    async def settle(self, change_id: int, status: str, error: str | None, now: datetime) -> bool:
        assert status in SETTLED
        c = directory_changes.c
        row = (await self._conn.execute(select(c.change).where(c.id == change_id, c.status == PENDING))).first()
        if row is None:
            return False
        done = await self._conn.execute(directory_changes.update().where(c.id == change_id, c.status == PENDING)
                                        .values(status=status, attempts=c.attempts + 1, settled_at=now,
                                                error=error[:200] if error else None,
                                                change=_without_secret(dict(row.change))))
        return bool(done.rowcount)

    async def of_case(self, case_id: str) -> list[StoredChange]:
        c = directory_changes.c
        query = select(directory_changes).where(c.case_id == case_id).order_by(c.id)
        return [_stored(row) for row in await self._conn.execute(query)]

    async def tally(self) -> dict[str, int]:
        c = directory_changes.c
        query = select(c.status, func.count()).where(c.status.in_((PENDING, "failed"))).group_by(c.status)
        counts = {PENDING: 0, "failed": 0}
        counts.update({row[0]: int(row[1]) for row in await self._conn.execute(query)})
        return counts


@dataclass
class DirectoryTable:
    ids: dict[str, int] = field(default_factory=dict)
    changes: list[StoredChange] = field(default_factory=list)


class MemoryDirectoryIds:
    def __init__(self, table: DirectoryTable) -> None:
        self._ids = table.ids

    async def local_ids(self, remote_ids: Sequence[str], now: datetime) -> dict[str, int]:
        for remote in sorted(set(remote_ids)):
            self._ids.setdefault(remote, len(self._ids) + 1)
        return {remote: self._ids[remote] for remote in remote_ids}

    async def remote_id(self, local_id: int) -> str | None:
        return next((remote for remote, local in self._ids.items() if local == local_id), None)


class MemoryDirectoryChanges:
    def __init__(self, table: DirectoryTable) -> None:
        self._rows = table.changes

    async def queue(self, changes: Sequence[QueuedChange], now: datetime) -> None:
        keys = {row.queued.key for row in self._rows}
        for queued in changes:
            if queued.key not in keys:
                keys.add(queued.key)
                self._rows.append(StoredChange(len(self._rows) + 1, queued, PENDING, 0, as_utc(now), None,
                                               as_utc(now), None))

    async def due(self, now: datetime, limit: int) -> list[StoredChange]:
        return [row for row in self._first_pending() if row.next_at <= now][:limit]

    async def next_due(self) -> datetime | None:
        return min((row.next_at for row in self._first_pending()), default=None)

    def _first_pending(self) -> list[StoredChange]:
        first: dict[int, StoredChange] = {}
        for row in self._rows:
            if row.status == PENDING:
                first.setdefault(row.queued.account_id, row)
        return list(first.values())

    async def retry_later(self, change_id: int, at: datetime, error: str) -> None:
        self._update(change_id, lambda row: replace(row, attempts=row.attempts + 1, next_at=as_utc(at),
                                                    error=error[:200]))

    async def settle(self, change_id: int, status: str, error: str | None, now: datetime) -> bool:
        assert status in SETTLED
        return self._update(change_id, lambda row: replace(
            row, status=status, attempts=row.attempts + 1, error=error[:200] if error else None,
            settled_at=as_utc(now), queued=replace(row.queued, change=_without_secret(dict(row.queued.change)))))

    async def of_case(self, case_id: str) -> list[StoredChange]:
        return [row for row in self._rows if row.queued.case_id == case_id]

    async def tally(self) -> dict[str, int]:
        return {status: sum(1 for row in self._rows if row.status == status) for status in (PENDING, "failed")}

    def _update(self, change_id: int, change: Any) -> bool:
        for index, row in enumerate(self._rows):
            if row.id == change_id and row.status == PENDING:
                self._rows[index] = change(row)
                return True
        return False
