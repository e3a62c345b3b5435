"""The service's accounts (the directory's rows), in SQL and in memory."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, bindparam, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from flows.records import AccountChange, StoredAccount
from flows.store.tables import accounts
from flows.store.types import as_utc

_LOOKUP_CHUNK = 500  # emails per IN (...) list: well under every database's limit on bound parameters
_CHANGEABLE = frozenset(AccountChange.__annotations__)


def account_from_row(row: Any) -> StoredAccount:
    return StoredAccount(**dict(row._mapping))


def _groups(rows: Iterable[dict[str, Any]]) -> dict[frozenset[str], list[dict[str, Any]]]:
    """Rows by the columns they set: one executemany needs the same columns in every row."""
    grouped: dict[frozenset[str], list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(frozenset(row), []).append(row)
    return grouped


class SqlAccounts:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def by_id(self, account_id: int) -> StoredAccount | None:
        return await self._one(accounts.c.id == account_id)

    async def by_email(self, email: str) -> StoredAccount | None:
        return await self._one(accounts.c.email == email)

    async def by_emails(self, emails: Sequence[str]) -> dict[str, StoredAccount]:
        found: dict[str, StoredAccount] = {}
        wanted = list(dict.fromkeys(emails))
        for start in range(0, len(wanted), _LOOKUP_CHUNK):
            query = select(accounts).where(accounts.c.email.in_(wanted[start:start + _LOOKUP_CHUNK]))
            found.update({row.email: account_from_row(row) for row in await self._conn.execute(query)})
        return found

    async def all(self) -> list[StoredAccount]:
        return [account_from_row(row) for row in await self._conn.execute(select(accounts).order_by(accounts.c.id))]

    async def count(self) -> int:
        return int((await self._conn.execute(select(func.count()).select_from(accounts))).scalar_one())

    async def add(self, new: Mapping[str, AccountChange], now: datetime) -> None:
        rows = [{**values, "email": email, "created_at": now, "updated_at": now} for email, values in new.items()]
        for group in _groups(rows).values():
            await self._conn.execute(accounts.insert(), group)

    async def change(self, changes: Mapping[int, AccountChange], now: datetime, *, by_import: bool = False) -> None:
        stamps = {"updated_at": now} if by_import else {"updated_at": now, "desk_changed_at": now}
        rows = [{**values, **stamps, "account_id": account_id} for account_id, values in changes.items()]
        for group in _groups(rows).values():  # each row's other keys name the columns it sets
            await self._conn.execute(update(accounts).where(accounts.c.id == bindparam("account_id")), group)

    async def advance_totp_step(self, account_id: int, step: int, now: datetime) -> None:
        last = accounts.c.totp_last_step
        await self._update_if(account_id, or_(last.is_(None), last < step), totp_last_step=step, updated_at=now)

    async def extend_withdrawal_lock(self, account_id: int, until: datetime, now: datetime) -> datetime | None:
        column = accounts.c.withdrawals_locked_until
        await self._update_if(account_id, or_(column.is_(None), column < until), withdrawals_locked_until=until,
                              updated_at=now, desk_changed_at=now)
        found = await self.by_id(account_id)
        return found.withdrawals_locked_until if found else None

    async def _one(self, condition: ColumnElement[bool]) -> StoredAccount | None:
        row = (await self._conn.execute(select(accounts).where(condition))).first()
        return account_from_row(row) if row else None

    async def _update_if(self, account_id: int, condition: ColumnElement[bool], **values: Any) -> None:
        await self._conn.execute(update(accounts).where(accounts.c.id == account_id, condition).values(**values))


@dataclass
class AccountTable:
    rows: dict[int, StoredAccount] = field(default_factory=dict)
    last_id: int = 0


class MemoryAccounts:
    def __init__(self, table: AccountTable) -> None:
        self._table = table

    async def by_id(self, account_id: int) -> StoredAccount | None:
        return self._table.rows.get(account_id)

    async def by_email(self, email: str) -> StoredAccount | None:
        return next((row for row in self._table.rows.values() if row.email == email), None)

    async def by_emails(self, emails: Sequence[str]) -> dict[str, StoredAccount]:
        wanted = set(emails)
        return {row.email: row for row in self._table.rows.values() if row.email in wanted}

    async def all(self) -> list[StoredAccount]:
        return [self._table.rows[account_id] for account_id in sorted(self._table.rows)]

    async def count(self) -> int:
        return len(self._table.rows)

    async def add(self, new: Mapping[str, AccountChange], now: datetime) -> None:
        taken = {row.email for row in self._table.rows.values()}
        if clash := taken & set(new):
            raise ValueError(f"email already on file: {sorted(clash)}")  # as the unique index refuses it
        for email, values in new.items():
            self._table.last_id += 1
            row = StoredAccount(id=self._table.last_id, email=email, created_at=as_utc(now))
            self._table.rows[row.id] = _changed(row, values, now)

    async def change(self, changes: Mapping[int, AccountChange], now: datetime, *, by_import: bool = False) -> None:
        for account_id, values in changes.items():
            row = self._table.rows.get(account_id)
            if row is not None:
                self._table.rows[account_id] = _changed(row, values, now, by_desk=not by_import)

    async def advance_totp_step(self, account_id: int, step: int, now: datetime) -> None:
        row = self._table.rows.get(account_id)
        if row is not None and (row.totp_last_step is None or row.totp_last_step < step):
            self._table.rows[account_id] = _changed(row, {"totp_last_step": step}, now)

    async def extend_withdrawal_lock(self, account_id: int, until: datetime, now: datetime) -> datetime | None:
        row = self._table.rows.get(account_id)
        if row is None:
            return None
        if row.withdrawals_locked_until is None or row.withdrawals_locked_until < until:
            row = self._table.rows[account_id] = _changed(row, {"withdrawals_locked_until": until}, now, by_desk=True)
        return row.withdrawals_locked_until


def _changed(row: StoredAccount, values: AccountChange, updated_at: datetime, by_desk: bool = False) -> StoredAccount:
    """`row` with `values` set as the columns would keep them (unknown columns fail, times come back in UTC), and
    stamped as the desk's change when `by_desk`."""
    if unknown := set(values) - _CHANGEABLE:
        raise KeyError(f"no such account columns: {sorted(unknown)}")
    stored: AccountChange = {**values}
    if (lock := values.get("withdrawals_locked_until")) is not None:
        stored["withdrawals_locked_until"] = as_utc(lock)
    if (imported := values.get("imported_at")) is not None:
        stored["imported_at"] = as_utc(imported)
    changed = replace(row, **stored, updated_at=as_utc(updated_at))
    return replace(changed, desk_changed_at=as_utc(updated_at)) if by_desk else changed
