"""Processed updates and users, in SQL."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from flows.events import Sender
from flows.store.tables import processed, upsert, users


class SqlUpdateLog:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def claim(self, keys: Sequence[str], now: datetime) -> set[str]:
        unique = list(dict.fromkeys(keys))
        if not unique:
            return set()
        query = select(processed.c.key).where(processed.c.key.in_(unique))
        seen = set((await self._conn.execute(query)).scalars())
        fresh = [key for key in unique if key not in seen]
        if fresh:
            await self._conn.execute(processed.insert(), [{"key": key, "processed_at": now} for key in fresh])
        return set(fresh)

    async def prune(self, before: datetime, limit: int) -> int:
        oldest = (select(processed.c.key).where(processed.c.processed_at < before)
                  .order_by(processed.c.processed_at).limit(limit))
        result = await self._conn.execute(processed.delete().where(processed.c.key.in_(oldest)))
        return int(result.rowcount)


class SqlUsers:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def touch(self, senders: Iterable[Sender], now: datetime) -> None:
        rows = {
            s.user_id: {"id": s.user_id, "chat_id": s.chat_id, "language": s.language, "blocked": False,
                        "first_seen": now, "last_seen": now}
            for s in senders
        }
        if not rows:
            return
        statement = upsert(self._conn, users)
        statement = statement.on_conflict_do_update(
            index_elements=[users.c.id],
            set_={"chat_id": statement.excluded.chat_id, "last_seen": statement.excluded.last_seen,
                  "blocked": False, "language": func.coalesce(statement.excluded.language, users.c.language)},
        )
        await self._conn.execute(statement, list(rows.values()))

    async def set_blocked(self, chat_id: int, blocked: bool) -> None:
        await self._conn.execute(update(users).where(users.c.chat_id == chat_id).values(blocked=blocked))

    async def blocked_among(self, chat_ids: Iterable[int]) -> set[int]:
        wanted = set(chat_ids)
        if not wanted:
            return set()
        query = select(users.c.chat_id).where(users.c.chat_id.in_(wanted), users.c.blocked.is_(True))
        return set((await self._conn.execute(query)).scalars())

    async def known(self, user_ids: Iterable[int]) -> set[int]:
        wanted = set(user_ids)
        if not wanted:
            return set()
        return set((await self._conn.execute(select(users.c.id).where(users.c.id.in_(wanted)))).scalars())

    async def choose_language(self, user_id: int, language: str) -> None:
        await self._conn.execute(update(users).where(users.c.id == user_id).values(chosen_language=language))

    async def languages(self, user_ids: Iterable[int]) -> dict[int, str]:
        wanted = set(user_ids)
        if not wanted:
            return {}
        query = select(users.c.id, func.coalesce(users.c.chosen_language, users.c.language)).where(
            users.c.id.in_(wanted))
        return {user_id: language for user_id, language in await self._conn.execute(query) if language}


@dataclass
class UpdateTable:
    processed: dict[str, datetime] = field(default_factory=dict)


@dataclass
class UserRecord:
    id: int
    chat_id: int
    language: str | None
    blocked: bool
    first_seen: datetime
    last_seen: datetime
    chosen_language: str | None = None


@dataclass
class UserTable:
    rows: dict[int, UserRecord] = field(default_factory=dict)


class MemoryUpdateLog:
    def __init__(self, table: UpdateTable) -> None:
        self._table = table

    async def claim(self, keys: Sequence[str], now: datetime) -> set[str]:
        fresh = [key for key in dict.fromkeys(keys) if key not in self._table.processed]
        self._table.processed.update(dict.fromkeys(fresh, now))
        return set(fresh)

    async def prune(self, before: datetime, limit: int) -> int:
        old = sorted((at, key) for key, at in self._table.processed.items() if at < before)[:limit]
        for _, key in old:
            del self._table.processed[key]
        return len(old)


class MemoryUsers:
    def __init__(self, table: UserTable) -> None:
        self._rows = table.rows

    async def touch(self, senders: Iterable[Sender], now: datetime) -> None:
        for sender in senders:
            known = self._rows.get(sender.user_id)
            if known is None:
                self._rows[sender.user_id] = UserRecord(sender.user_id, sender.chat_id, sender.language, False,
                                                        now, now)
                continue
            known.chat_id, known.last_seen, known.blocked = sender.chat_id, now, False
            known.language = sender.language or known.language

    async def set_blocked(self, chat_id: int, blocked: bool) -> None:
        for row in self._rows.values():
            if row.chat_id == chat_id:
                row.blocked = blocked

    async def blocked_among(self, chat_ids: Iterable[int]) -> set[int]:
        wanted = set(chat_ids)
        return {row.chat_id for row in self._rows.values() if row.blocked and row.chat_id in wanted}

    async def known(self, user_ids: Iterable[int]) -> set[int]:
        return {user_id for user_id in user_ids if user_id in self._rows}

    async def choose_language(self, user_id: int, language: str) -> None:
        if user_id in self._rows:
            self._rows[user_id].chosen_language = language

    async def languages(self, user_ids: Iterable[int]) -> dict[int, str]:
        found = {user_id: self._rows[user_id] for user_id in set(user_ids) if user_id in self._rows}
        return {user_id: language for user_id, row in found.items()
                if (language := row.chosen_language or row.language)}
