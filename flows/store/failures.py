"""Failed factor checks per account, in SQL and in memory."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from flows.store.tables import failed_checks
from flows.store.types import as_utc


class SqlFailures:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, account_id: int | None, factor: str, user_id: int, case_id: str, at: datetime) -> None:
        await self._conn.execute(failed_checks.insert().values(
            account_id=account_id, factor=factor, user_id=user_id, case_id=case_id, at=at))

    async def count_except(self, account_id: int, factor: str, since: Sequence[datetime]) -> list[int]:
        if not since:
            return []
        c = failed_checks.c
        query = select(*(func.count().filter(c.at > after) for after in since)).where(
            c.account_id == account_id, c.factor != factor, c.at > min(since))  # one statement for every window
        row = (await self._conn.execute(query)).one()
        return [int(count or 0) for count in row]

    async def count_of(self, account_id: int, factor: str, since: datetime) -> int:
        c = failed_checks.c
        query = select(func.count()).where(c.account_id == account_id, c.factor == factor, c.at > since)
        return int(await self._conn.scalar(query) or 0)


@dataclass(frozen=True)
class FailureRow:
    account_id: int | None
    factor: str
    user_id: int
    case_id: str
    at: datetime


@dataclass
class FailureTable:
    rows: list[FailureRow] = field(default_factory=list)


class MemoryFailures:
    def __init__(self, table: FailureTable) -> None:
        self._rows = table.rows

    async def add(self, account_id: int | None, factor: str, user_id: int, case_id: str, at: datetime) -> None:
        self._rows.append(FailureRow(account_id, factor, user_id, case_id, as_utc(at)))

    async def count_except(self, account_id: int, factor: str, since: Sequence[datetime]) -> list[int]:
        mine = [r.at for r in self._rows if r.account_id == account_id and r.factor != factor]
        return [sum(1 for at in mine if at > after) for after in since]

    async def count_of(self, account_id: int, factor: str, since: datetime) -> int:
        return sum(1 for r in self._rows if r.account_id == account_id and r.factor == factor and r.at > since)
