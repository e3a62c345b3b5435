"""Verification codes (their keyed hashes), in SQL and in memory."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from flows.records import NewCode, StoredCode
from flows.store.tables import codes
from flows.store.types import as_utc


def code_from_row(row: Any) -> StoredCode:
    return StoredCode(**dict(row._mapping))


class SqlCodes:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def last_created(self, case_id: str, factor: str) -> datetime | None:
        c = codes.c
        query = select(c.created_at).where(c.case_id == case_id, c.factor == factor).order_by(c.created_at.desc())
        last: datetime | None = await self._conn.scalar(query.limit(1))
        return last

    async def count_real(self, account_id: int, since: datetime) -> int:
        return await self._count_real(account_id, since)

    async def count_real_to(self, account_id: int, user_id: int, factor: str, since: datetime) -> int:
        return await self._count_real(account_id, since, codes.c.user_id == user_id, codes.c.factor == factor)

    async def _count_real(self, account_id: int, since: datetime, *also: Any) -> int:
        c = codes.c
        query = select(func.count()).where(c.account_id == account_id, c.decoy.is_(False), c.created_at > since, *also)
        return int(await self._conn.scalar(query) or 0)

    async def void_live(self, case_id: str, factor: str, now: datetime) -> None:
        await self._conn.execute(update(codes).where(*self._live(case_id, factor)).values(voided_at=now))

    async def add(self, code: NewCode) -> int:
        result = await self._conn.execute(codes.insert().values(**asdict(code), wrong_tries=0))
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])

    async def newest_live(self, case_id: str, factor: str) -> StoredCode | None:
        query = select(codes).where(*self._live(case_id, factor)).order_by(codes.c.created_at.desc(), codes.c.id.desc())
        row = (await self._conn.execute(query.limit(1))).first()
        return code_from_row(row) if row else None

    async def use(self, code_id: int, now: datetime) -> bool:
        claimed = await self._conn.execute(update(codes).where(
            codes.c.id == code_id, codes.c.used_at.is_(None), codes.c.voided_at.is_(None)).values(used_at=now))
        return claimed.rowcount == 1

    async def count_wrong(self, code_id: int) -> None:
        await self._conn.execute(update(codes).where(codes.c.id == code_id).values(wrong_tries=codes.c.wrong_tries + 1))

    @staticmethod
    def _live(case_id: str, factor: str) -> tuple[Any, ...]:
        c = codes.c
        return c.case_id == case_id, c.factor == factor, c.voided_at.is_(None), c.used_at.is_(None)


@dataclass
class CodeTable:
    rows: dict[int, StoredCode] = field(default_factory=dict)
    last_id: int = 0


class MemoryCodes:
    def __init__(self, table: CodeTable) -> None:
        self._table = table

    async def last_created(self, case_id: str, factor: str) -> datetime | None:
        made = [c.created_at for c in self._table.rows.values() if c.case_id == case_id and c.factor == factor]
        return max(made, default=None)

    async def count_real(self, account_id: int, since: datetime) -> int:
        return sum(1 for c in self._real(account_id, since))

    async def count_real_to(self, account_id: int, user_id: int, factor: str, since: datetime) -> int:
        return sum(1 for c in self._real(account_id, since) if c.user_id == user_id and c.factor == factor)

    def _real(self, account_id: int, since: datetime) -> list[StoredCode]:
        return [c for c in self._table.rows.values()
                if c.account_id == account_id and not c.decoy and c.created_at > since]

    async def void_live(self, case_id: str, factor: str, now: datetime) -> None:
        for code in self._live(case_id, factor):
            self._table.rows[code.id] = replace(code, voided_at=as_utc(now))

    async def add(self, code: NewCode) -> int:
        self._table.last_id += 1
        values = {**asdict(code), "created_at": as_utc(code.created_at), "expires_at": as_utc(code.expires_at)}
        self._table.rows[self._table.last_id] = StoredCode(id=self._table.last_id, **values)
        return self._table.last_id

    async def newest_live(self, case_id: str, factor: str) -> StoredCode | None:
        return max(self._live(case_id, factor), key=lambda c: (c.created_at, c.id), default=None)

    async def use(self, code_id: int, now: datetime) -> bool:
        code = self._table.rows.get(code_id)
        if code is None or code.used_at is not None or code.voided_at is not None:
            return False
        self._table.rows[code_id] = replace(code, used_at=as_utc(now))
        return True

    async def count_wrong(self, code_id: int) -> None:
        code = self._table.rows.get(code_id)
        if code is not None:
            self._table.rows[code_id] = replace(code, wrong_tries=code.wrong_tries + 1)

    def _live(self, case_id: str, factor: str) -> list[StoredCode]:
        return [c for c in self._table.rows.values() if c.case_id == case_id and c.factor == factor
                and c.voided_at is None and c.used_at is None]
