"""Cases, in SQL."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from flows.records import ACTIVE, Case
from flows.store.tables import cases, upsert
from flows.store.types import as_stored


def case_from_row(row: Any) -> Case:
    return Case(
        id=row.id, user_id=row.user_id, chat_id=row.chat_id, flow=row.flow, step=row.step, data=row.data,
        status=row.status, turn=row.turn, created_at=row.created_at, updated_at=row.updated_at,
        closed_at=row.closed_at,
    )


class SqlCases:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def active(self, chat_ids: Iterable[int]) -> dict[int, Case]:
        query = select(cases).where(cases.c.chat_id.in_(set(chat_ids)), cases.c.status.in_(ACTIVE))
        return {row.chat_id: case_from_row(row) for row in await self._conn.execute(query)}

    async def by_id(self, case_ids: Iterable[str]) -> dict[str, Case]:
        wanted = set(case_ids)
        if not wanted:
            return {}
        query = select(cases).where(cases.c.id.in_(wanted))
        return {row.id: case_from_row(row) for row in await self._conn.execute(query)}

    async def save(self, changed: Iterable[Case]) -> None:
        rows = [
            {"id": c.id, "user_id": c.user_id, "chat_id": c.chat_id, "account_id": c.data.get("account_id"),
             "flow": c.flow, "step": c.step, "data": c.data, "status": c.status, "turn": c.turn,
             "created_at": c.created_at, "updated_at": c.updated_at, "closed_at": c.closed_at}
            for c in changed
        ]
        if not rows:
            return
        statement = upsert(self._conn, cases)
        mutable = ("account_id", "flow", "step", "data", "status", "turn", "updated_at", "closed_at")
        statement = statement.on_conflict_do_update(
            index_elements=[cases.c.id], set_={name: statement.excluded[name] for name in mutable}
        )
        await self._conn.execute(statement, rows)

    async def in_review(self, limit: int) -> list[Case]:
        query = select(cases).where(cases.c.status == "review").order_by(cases.c.updated_at, cases.c.id).limit(limit)
        return [case_from_row(row) for row in await self._conn.execute(query)]

    async def latest(self, chat_id: int) -> Case | None:
        query = (select(cases).where(cases.c.chat_id == chat_id)
                 .order_by(cases.c.updated_at.desc(), cases.c.id.desc()).limit(1))
        row = (await self._conn.execute(query)).first()
        return case_from_row(row) if row is not None else None

    async def of_user(self, user_id: int, limit: int) -> list[Case]:
        query = (select(cases).where(cases.c.user_id == user_id)
                 .order_by(cases.c.created_at.desc(), cases.c.id.desc()).limit(limit))
        return [case_from_row(row) for row in await self._conn.execute(query)]


@dataclass
class CaseTable:
    rows: dict[str, Case] = field(default_factory=dict)


class MemoryCases:
    def __init__(self, table: CaseTable) -> None:
        self._rows = table.rows

    async def active(self, chat_ids: Iterable[int]) -> dict[int, Case]:
        wanted = set(chat_ids)
        return {c.chat_id: _copy(c) for c in self._rows.values() if c.chat_id in wanted and c.status in ACTIVE}

    async def by_id(self, case_ids: Iterable[str]) -> dict[str, Case]:
        return {case_id: _copy(self._rows[case_id]) for case_id in set(case_ids) if case_id in self._rows}

    async def save(self, changed: Iterable[Case]) -> None:
        for case in changed:
            created = self._rows[case.id].created_at if case.id in self._rows else case.created_at
            self._rows[case.id] = replace(case, data=as_stored(case.data), created_at=created)

    async def in_review(self, limit: int) -> list[Case]:
        waiting = [c for c in self._rows.values() if c.status == "review"]
        waiting.sort(key=lambda c: (c.updated_at or datetime.min.replace(tzinfo=UTC), c.id))
        return [_copy(c) for c in waiting[:limit]]

    async def latest(self, chat_id: int) -> Case | None:
        mine = [c for c in self._rows.values() if c.chat_id == chat_id]
        if not mine:
            return None
        return _copy(max(mine, key=lambda c: (c.updated_at or datetime.min.replace(tzinfo=UTC), c.id)))

    async def of_user(self, user_id: int, limit: int) -> list[Case]:
        mine = [c for c in self._rows.values() if c.user_id == user_id]
        mine.sort(key=lambda c: (c.created_at or datetime.min.replace(tzinfo=UTC), c.id), reverse=True)
        return [_copy(c) for c in mine[:limit]]


def _copy(case: Case) -> Case:
    """A case as if read back from storage: its data a copy that changes nothing stored."""
    return replace(case, data=as_stored(case.data))
