"""The report's numbers, in SQL: counted with GROUP BY, the JSON flags tested in SQL (per dialect), so no case data
ever reaches Python; and in memory, over the case and user tables."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, cast, func, or_, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection

from flows.records import RECOVERED, RECOVERY_METHODS, VERIFIED_FLAG, Case, CaseTally, DeskTotals
from flows.store.cases import CaseTable
from flows.store.tables import cases, users
from flows.store.updates import UserTable


def _flag(dialect: str, key: str) -> ColumnElement[bool]:
    """True where the case's JSON data has `key` set to true, tested in SQL."""
    if dialect == "postgresql":
        return func.jsonb_extract_path_text(cast(cases.c.data, JSONB), key) == "true"
    return func.json_extract(cases.c.data, f"$.{key}") == 1


def _verified(dialect: str) -> ColumnElement[bool]:
    """Each method's own proof: a code accepted, or for the backup key the recovery itself."""
    rules = [and_(cases.c.flow == method, _flag(dialect, flag)) for method, flag in VERIFIED_FLAG.items()]
    return or_(*rules, and_(cases.c.flow == "backup", cases.c.status.in_(RECOVERED)))


def _in_method_window(since: datetime, now: datetime) -> ColumnElement[bool]:
    return and_(cases.c.flow.in_(RECOVERY_METHODS), cases.c.created_at >= since, cases.c.created_at <= now)


class SqlStatistics:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def tally(self, windows: Mapping[str, datetime], now: datetime) -> list[CaseTally]:
        if not windows:
            return []
        verified = _verified(self._conn.dialect.name)
        labels = list(windows)
        columns: list[Any] = []
        for n, label in enumerate(labels):
            inside = cases.c.created_at >= windows[label]
            columns.append(func.sum(case((inside, 1), else_=0)).label(f"n{n}"))
            columns.append(func.sum(case((and_(inside, verified), 1), else_=0)).label(f"v{n}"))
        query = (
            select(cases.c.flow, cases.c.status, *columns)
            .where(_in_method_window(min(windows.values()), now))
            .group_by(cases.c.flow, cases.c.status)
        )
        return [
            CaseTally(row.flow, row.status,
                      started={label: int(row._mapping[f"n{n}"] or 0) for n, label in enumerate(labels)},
                      verified={label: int(row._mapping[f"v{n}"] or 0) for n, label in enumerate(labels)})
            for row in await self._conn.execute(query)
        ]

    async def recovery_times(self, since: datetime, now: datetime) -> dict[str, list[timedelta]]:
        query = select(cases.c.flow, cases.c.created_at, cases.c.closed_at).where(
            _in_method_window(since, now), cases.c.status.in_(RECOVERED), cases.c.closed_at.is_not(None)
        )
        durations: dict[str, list[timedelta]] = {}
        for row in await self._conn.execute(query):
            durations.setdefault(row.flow, []).append(row.closed_at - row.created_at)
        return durations

    async def totals(self) -> DeskTotals:
        in_review = cases.c.status == "review"
        query = select(
            select(func.count()).select_from(cases).where(in_review).scalar_subquery(),
            select(func.min(cases.c.updated_at)).where(in_review).scalar_subquery(),
            select(func.count()).select_from(users).scalar_subquery(),
            select(func.count()).select_from(users).where(users.c.blocked.is_(True)).scalar_subquery(),
        )
        reviews, oldest, user_count, blocked = (await self._conn.execute(query)).one()
        return DeskTotals(int(reviews), oldest, int(user_count), int(blocked))


class MemoryStatistics:
    def __init__(self, cases: CaseTable, users: UserTable) -> None:
        self._cases = cases.rows
        self._users = users.rows

    async def tally(self, windows: Mapping[str, datetime], now: datetime) -> list[CaseTally]:
        if not windows:
            return []
        started: dict[tuple[str, str], dict[str, int]] = {}
        verified: dict[tuple[str, str], dict[str, int]] = {}
        for created, c in self._in_method_window(min(windows.values()), now):
            counts = started.setdefault((c.flow, c.status), dict.fromkeys(windows, 0))
            proven = verified.setdefault((c.flow, c.status), dict.fromkeys(windows, 0))
            for label in (label for label, since in windows.items() if created >= since):
                counts[label] += 1
                proven[label] += _is_verified(c)
        return [CaseTally(flow, status, started[flow, status], verified[flow, status]) for flow, status in started]

    async def recovery_times(self, since: datetime, now: datetime) -> dict[str, list[timedelta]]:
        durations: dict[str, list[timedelta]] = {}
        for created, c in self._in_method_window(since, now):
            if c.status in RECOVERED and c.closed_at is not None:
                durations.setdefault(c.flow, []).append(c.closed_at - created)
        return durations

    async def totals(self) -> DeskTotals:
        waiting = [c.updated_at for c in self._cases.values() if c.status == "review"]
        updates = [at for at in waiting if at is not None]
        blocked = sum(1 for user in self._users.values() if user.blocked)
        return DeskTotals(len(waiting), min(updates, default=None), len(self._users), blocked)

    def _in_method_window(self, since: datetime, now: datetime) -> list[tuple[datetime, Case]]:
        """The recovery cases created in [since, now], each with its creation time."""
        return [(c.created_at, c) for c in self._cases.values()
                if c.flow in RECOVERY_METHODS and c.created_at is not None and since <= c.created_at <= now]


def _is_verified(c: Case) -> bool:
    """As `_verified` in SQL: the method's flag is true in the data (the backup key: the case recovered)."""
    if c.flow == "backup":
        return c.status in RECOVERED
    flag = VERIFIED_FLAG.get(c.flow)
    return flag is not None and c.data.get(flag) is True
