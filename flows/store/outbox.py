"""The outbox, in SQL."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from flows.records import Pending
from flows.replies import Reply, SendCard, reply_from_json, reply_to_json
from flows.store.tables import outbox
from flows.store.types import as_stored

REDACTED = "[a one-time code was here; removed after delivery]"


class SqlOutbox:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, replies: Sequence[Reply], now: datetime) -> list[Pending]:
        if not replies:
            return []
        if self._conn.dialect.name == "sqlite":
            ids = await self._next_ids(len(replies))
            queued = evidence_by_id(replies, ids)
            await self._conn.execute(outbox.insert(), [_row(reply, now) | {"id": row_id}
                                                       for row_id, reply in zip(ids, queued, strict=True)])
            return [Pending(row_id, reply.chat_id, reply) for row_id, reply in zip(ids, queued, strict=True)]
        rows = [_row(reply, now) for reply in replies]
        result = await self._conn.execute(outbox.insert().returning(outbox.c.id, sort_by_parameter_order=True), rows)
        ids = list(result.scalars())
        queued = evidence_by_id(replies, ids)
        cards = [{"row_id": row_id, "body": reply_to_json(reply)}
                 for row_id, reply, before in zip(ids, queued, replies, strict=True) if reply is not before]
        if cards:
            statement = update(outbox).where(outbox.c.id == bindparam("row_id")).values(payload=bindparam("body"))
            await self._conn.execute(statement, cards)
        return [Pending(row_id, reply.chat_id, reply) for row_id, reply in zip(ids, queued, strict=True)]

    async def _next_ids(self, count: int) -> list[int]:
        """Ids for `count` new rows. SQLite's RETURNING with a guaranteed order costs one statement per row; a
        writer holds the database's only write lock (BEGIN IMMEDIATE), so taking the next ids itself is safe and
        keeps a batch's inserts to two statements, whatever the number of rows."""
        last = await self._conn.scalar(select(func.max(outbox.c.id)))
        start = int(last or 0) + 1
        return list(range(start, start + count))

    async def pending(self, limit: int = 10_000, chat_ids: Iterable[int] | None = None) -> list[Pending]:
        query = (
            select(outbox.c.id, outbox.c.chat_id, outbox.c.payload, outbox.c.created_at)
            .where(outbox.c.delivered_at.is_(None)).order_by(outbox.c.id).limit(limit)
        )
        if chat_ids is not None:
            query = query.where(outbox.c.chat_id.in_(set(chat_ids)))
        return [Pending(row.id, row.chat_id, reply_from_json(row.payload), row.created_at)
                for row in await self._conn.execute(query)]

    async def outcomes(self, row_ids: Sequence[int]) -> dict[int, str | None]:
        if not row_ids:
            return {}
        query = select(outbox.c.id, outbox.c.outcome).where(outbox.c.id.in_(row_ids))
        return {row.id: row.outcome for row in await self._conn.execute(query)}

    async def mark_delivered(self, results: Sequence[tuple[int, str, int | None]], now: datetime) -> None:
        if not results:
            return
        statement = (
            update(outbox).where(outbox.c.id == bindparam("row_id"))
            .values(delivered_at=now, outcome=bindparam("outcome"), sent_message_id=bindparam("message_id"),
                    attempts=outbox.c.attempts + 1)
        )
        await self._conn.execute(statement, [{"row_id": i, "outcome": o, "message_id": m} for i, o, m in results])

    async def redact(self, entries: Sequence[Pending]) -> None:
        if entries:
            statement = update(outbox).where(outbox.c.id == bindparam("row_id")).values(payload=bindparam("body"))
            await self._conn.execute(statement, [{"row_id": e.id, "body": redacted(e.reply)} for e in entries])

    async def prune(self, before: datetime, limit: int) -> int:
        waiting_cards = select(outbox.c.payload).where(outbox.c.delivered_at.is_(None), outbox.c.created_at < before)
        named = named_evidence(row.payload for row in await self._conn.execute(waiting_cards))
        # SQLite gives a new row max(id) + 1 (`_next_ids`): without the newest row, an id would come again.
        newest = select(func.max(outbox.c.id)).scalar_subquery()
        oldest = select(outbox.c.id).where(outbox.c.delivered_at < before, outbox.c.created_at < before,
                                           outbox.c.id < newest)
        if named:
            oldest = oldest.where(outbox.c.id.not_in(named))
        statement = outbox.delete().where(outbox.c.id.in_(oldest.order_by(outbox.c.delivered_at).limit(limit)))
        return int((await self._conn.execute(statement)).rowcount)


def _row(reply: Reply, now: datetime) -> dict[str, Any]:
    return {"chat_id": reply.chat_id, "payload": reply_to_json(reply), "created_at": now, "attempts": 0}


def redacted(reply: Reply) -> dict[str, Any]:
    """The reply as stored once its secret is gone."""
    body = reply_to_json(reply)
    return {**body, **{name: REDACTED for name in ("text", "body", "png_base64", "content_base64")
                if name in body}}


def evidence_by_id(replies: Sequence[Reply], ids: Sequence[int]) -> list[Reply]:
    """Cards name their evidence by offsets back in the batch until queued, then by outbox id (which survives a
    restart). The evidence must be earlier replies to the same chat."""
    queued: list[Reply] = []
    for index, reply in enumerate(replies):
        if isinstance(reply, SendCard) and any(offset < 0 for offset in reply.evidence):
            for offset in reply.evidence:
                assert offset >= 0 or replies[index + offset].chat_id == reply.chat_id, "evidence in another chat"
            reply = replace(reply, evidence=tuple(ids[index + o] if o < 0 else o for o in reply.evidence))
        queued.append(reply)
    return queued


def named_evidence(payloads: Iterable[dict[str, Any]]) -> set[int]:
    """The outbox ids named as evidence by the cards among these stored replies.

    A card's evidence is queued in the same `add` as the card (`evidence_by_id`), so at the same time: an entry
    queued before a cutoff can be named only by a card queued before it too. Pruning relies on that.
    """
    replies = (reply_from_json(body) for body in payloads)
    return {row_id for reply in replies if isinstance(reply, SendCard) for row_id in reply.evidence}


@dataclass
class OutboxEntry:
    chat_id: int
    payload: dict[str, Any]
    created_at: datetime
    delivered_at: datetime | None = None
    outcome: str | None = None
    sent_message_id: int | None = None
    attempts: int = 0


@dataclass
class OutboxTable:
    rows: dict[int, OutboxEntry] = field(default_factory=dict)
    last_id: int = 0


class MemoryOutbox:
    def __init__(self, table: OutboxTable) -> None:
        self._table = table

    async def add(self, replies: Sequence[Reply], now: datetime) -> list[Pending]:
        start = self._table.last_id + 1
        ids = list(range(start, start + len(replies)))
        queued = evidence_by_id(replies, ids)
        for row_id, reply in zip(ids, queued, strict=True):
            self._table.rows[row_id] = OutboxEntry(reply.chat_id, as_stored(reply_to_json(reply)), now)
        self._table.last_id += len(replies)
        return [Pending(row_id, reply.chat_id, reply) for row_id, reply in zip(ids, queued, strict=True)]

    async def pending(self, limit: int = 10_000, chat_ids: Iterable[int] | None = None) -> list[Pending]:
        wanted = None if chat_ids is None else set(chat_ids)
        rows = self._table.rows
        waiting = sorted(i for i, row in rows.items()
                         if row.delivered_at is None and (wanted is None or row.chat_id in wanted))[:limit]
        return [Pending(i, rows[i].chat_id, reply_from_json(as_stored(rows[i].payload)), rows[i].created_at)
                for i in waiting]

    async def outcomes(self, row_ids: Sequence[int]) -> dict[int, str | None]:
        return {i: self._table.rows[i].outcome for i in row_ids if i in self._table.rows}

    async def mark_delivered(self, results: Sequence[tuple[int, str, int | None]], now: datetime) -> None:
        for row_id, outcome, message_id in results:
            row = self._table.rows.get(row_id)
            if row is not None:
                row.delivered_at, row.outcome, row.sent_message_id = now, outcome, message_id
                row.attempts += 1

    async def redact(self, entries: Sequence[Pending]) -> None:
        for entry in entries:
            row = self._table.rows.get(entry.id)
            if row is not None:
                row.payload = as_stored(redacted(entry.reply))

    async def prune(self, before: datetime, limit: int) -> int:
        rows = self._table.rows
        named = named_evidence(r.payload for r in rows.values() if r.delivered_at is None and r.created_at < before)
        newest = max(rows, default=None)
        old = sorted((r.delivered_at, i) for i, r in rows.items()
                     if r.delivered_at is not None and r.delivered_at < before and r.created_at < before
                     and i != newest and i not in named)[:limit]
        for _, row_id in old:
            del rows[row_id]
        return len(old)
