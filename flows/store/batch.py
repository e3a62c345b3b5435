"""The runner's statements: few, indexed, and each one covering a whole batch of events.

Written with SQLAlchemy Core over the SQLModel tables because the hot path is measured in round trips through
aiosqlite's thread: one statement per batch, not per event, is where the engine's speed comes from.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, bindparam, func, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from flows.events import Sender
from flows.records import ACTIVE, AuditEntry, Case, DueTimer, NewTimer, Pending
from flows.replies import Reply, SendCard, reply_from_json, reply_to_json
from flows.store.tables import AuditRow, CaseRow, EvidenceMessageRow, OutboxRow, ProcessedUpdate, TimerRow, User

users = User.__table__  # type: ignore[attr-defined]
cases = CaseRow.__table__  # type: ignore[attr-defined]
processed = ProcessedUpdate.__table__  # type: ignore[attr-defined]
outbox = OutboxRow.__table__  # type: ignore[attr-defined]
timers = TimerRow.__table__  # type: ignore[attr-defined]
audit = AuditRow.__table__  # type: ignore[attr-defined]
evidence_messages = EvidenceMessageRow.__table__  # type: ignore[attr-defined]


def _insert(conn: AsyncConnection, table: Table) -> Any:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


async def claim_updates(conn: AsyncConnection, keys: Sequence[str], now: datetime) -> set[str]:
    """Record `keys` as processed; return those that were not processed before."""
    unique = list(dict.fromkeys(keys))
    seen = set((await conn.execute(select(processed.c.key).where(processed.c.key.in_(unique)))).scalars())
    fresh = [key for key in unique if key not in seen]
    if fresh:
        await conn.execute(processed.insert(), [{"key": key, "processed_at": now} for key in fresh])
    return set(fresh)


async def touch_users(conn: AsyncConnection, senders: Iterable[Sender], now: datetime) -> None:
    """Create or refresh the users behind these events (writing to the bot also means it is not blocked)."""
    rows = {
        s.user_id: {"id": s.user_id, "chat_id": s.chat_id, "language": s.language, "blocked": False,
                    "first_seen": now, "last_seen": now}
        for s in senders
    }
    if not rows:
        return
    statement = _insert(conn, users)
    statement = statement.on_conflict_do_update(
        index_elements=[users.c.id],
        set_={"chat_id": statement.excluded.chat_id, "last_seen": statement.excluded.last_seen,
              "blocked": False, "language": func.coalesce(statement.excluded.language, users.c.language)},
    )
    await conn.execute(statement, list(rows.values()))


def case_from_row(row: Any) -> Case:
    return Case(
        id=row.id, user_id=row.user_id, chat_id=row.chat_id, flow=row.flow, step=row.step, data=row.data,
        status=row.status, turn=row.turn, created_at=row.created_at, updated_at=row.updated_at,
        closed_at=row.closed_at,
    )


async def active_cases(conn: AsyncConnection, chat_ids: Iterable[int]) -> dict[int, Case]:
    """The active case of each chat that has one."""
    query = select(cases).where(cases.c.chat_id.in_(set(chat_ids)), cases.c.status.in_(ACTIVE))
    return {row.chat_id: case_from_row(row) for row in await conn.execute(query)}


async def cases_by_id(conn: AsyncConnection, case_ids: Iterable[str]) -> dict[str, Case]:
    """Cases by id, whatever their status (the targets of staff actions and detached timers)."""
    wanted = set(case_ids)
    if not wanted:
        return {}
    return {row.id: case_from_row(row) for row in await conn.execute(select(cases).where(cases.c.id.in_(wanted)))}


async def save_cases(conn: AsyncConnection, changed: Iterable[Case]) -> None:
    """Insert new cases and update changed ones, in one statement."""
    rows = [
        {"id": c.id, "user_id": c.user_id, "chat_id": c.chat_id, "account_id": c.data.get("account_id"),
         "flow": c.flow, "step": c.step, "data": c.data, "status": c.status, "turn": c.turn,
         "created_at": c.created_at, "updated_at": c.updated_at, "closed_at": c.closed_at}
        for c in changed
    ]
    if not rows:
        return
    statement = _insert(conn, cases)
    mutable = ("account_id", "flow", "step", "data", "status", "turn", "updated_at", "closed_at")
    statement = statement.on_conflict_do_update(
        index_elements=[cases.c.id], set_={name: statement.excluded[name] for name in mutable}
    )
    await conn.execute(statement, rows)


async def add_outbox(conn: AsyncConnection, replies: Sequence[Reply], now: datetime) -> list[Pending]:
    """Queue replies for delivery; returns them with their ids, in order."""
    if not replies:
        return []
    if conn.dialect.name == "sqlite":
        ids = await _next_ids(conn, outbox, len(replies))
        queued = _evidence_by_id(replies, ids)
        await conn.execute(outbox.insert(), [_outbox_row(reply, now) | {"id": row_id}
                                             for row_id, reply in zip(ids, queued, strict=True)])
        return [Pending(row_id, reply.chat_id, reply) for row_id, reply in zip(ids, queued, strict=True)]
    rows = [_outbox_row(reply, now) for reply in replies]
    result = await conn.execute(outbox.insert().returning(outbox.c.id, sort_by_parameter_order=True), rows)
    ids = list(result.scalars())
    queued = _evidence_by_id(replies, ids)
    cards = [{"row_id": row_id, "body": reply_to_json(reply)}
             for row_id, reply, before in zip(ids, queued, replies, strict=True) if reply is not before]
    if cards:
        statement = update(outbox).where(outbox.c.id == bindparam("row_id")).values(payload=bindparam("body"))
        await conn.execute(statement, cards)
    return [Pending(row_id, reply.chat_id, reply) for row_id, reply in zip(ids, queued, strict=True)]


def _outbox_row(reply: Reply, now: datetime) -> dict[str, Any]:
    return {"chat_id": reply.chat_id, "payload": reply_to_json(reply), "created_at": now, "attempts": 0}


async def _next_ids(conn: AsyncConnection, table: Table, count: int) -> list[int]:
    """Ids for `count` new rows. SQLite's RETURNING with a guaranteed order costs one statement per row; a writer
    holds the database's only write lock (BEGIN IMMEDIATE), so taking the next ids itself is safe and keeps a
    batch's inserts to two statements, whatever the number of rows (and so the same for every reply count)."""
    last = await conn.scalar(select(func.max(table.c.id)))
    start = int(last or 0) + 1
    return list(range(start, start + count))


def _evidence_by_id(replies: Sequence[Reply], ids: Sequence[int]) -> list[Reply]:
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


async def outcomes(conn: AsyncConnection, row_ids: Sequence[int]) -> dict[int, str | None]:
    """How these outbox entries went ("sent", "failed", ...; None while undelivered)."""
    if not row_ids:
        return {}
    query = select(outbox.c.id, outbox.c.outcome).where(outbox.c.id.in_(row_ids))
    return {row.id: row.outcome for row in await conn.execute(query)}


async def pending_outbox(conn: AsyncConnection, limit: int = 10_000) -> list[Pending]:
    """Replies committed but not yet delivered, oldest first."""
    query = (
        select(outbox.c.id, outbox.c.chat_id, outbox.c.payload)
        .where(outbox.c.delivered_at.is_(None)).order_by(outbox.c.id).limit(limit)
    )
    return [Pending(row.id, row.chat_id, reply_from_json(row.payload)) for row in await conn.execute(query)]


async def mark_delivered(conn: AsyncConnection, results: Sequence[tuple[int, str, int | None]], now: datetime) -> None:
    """Close outbox entries: (id, outcome, message id the platform gave the sent message)."""
    if not results:
        return
    statement = (
        update(outbox).where(outbox.c.id == bindparam("row_id"))
        .values(delivered_at=now, outcome=bindparam("outcome"), sent_message_id=bindparam("message_id"),
                attempts=outbox.c.attempts + 1)
    )
    await conn.execute(statement, [{"row_id": i, "outcome": o, "message_id": m} for i, o, m in results])


REDACTED = "[a one-time code was here; removed after delivery]"


async def schedule_deletions(conn: AsyncConnection, sent: Sequence[tuple[int, int, int]], now: datetime) -> None:
    """Timers that delete delivered messages later: (chat id, message id, seconds after delivery)."""
    if sent:
        await conn.execute(timers.insert(), [
            {"case_id": "", "user_id": chat_id, "chat_id": chat_id, "step": None, "kind": "delete_message",
             "payload": {"chat_id": chat_id, "message_id": message_id}, "due_at": now + timedelta(seconds=after)}
            for chat_id, message_id, after in sent
        ])


async def record_evidence(
    conn: AsyncConnection, shown: Sequence[tuple[str, int, tuple[int, ...]]], now: datetime
) -> None:
    """Remember the messages that show a case's evidence: (case id, chat id, message ids). Those of a case whose
    documents were purged meanwhile are deleted at once instead."""
    if not shown:
        return
    case_ids = {case_id for case_id, _, _ in shown}
    purged = set((await conn.execute(select(evidence_messages.c.case_id).where(
        evidence_messages.c.case_id.in_(case_ids), evidence_messages.c.message_id.is_(None)))).scalars())
    await schedule_deletions(conn, [(chat_id, message_id, 0) for case_id, chat_id, message_ids in shown
                                    if case_id in purged for message_id in message_ids], now)
    rows = [{"case_id": case_id, "chat_id": chat_id, "message_id": message_id, "created_at": now}
            for case_id, chat_id, message_ids in shown if case_id not in purged for message_id in message_ids]
    if rows:
        await conn.execute(evidence_messages.insert(), rows)


async def forget_evidence(conn: AsyncConnection, case_id: str, now: datetime) -> None:
    """Delete the staff messages that showed a case's evidence (timers due now) and mark the case as purged, so
    that evidence still on its way is deleted as soon as it is delivered."""
    query = select(evidence_messages.c.chat_id, evidence_messages.c.message_id).where(
        evidence_messages.c.case_id == case_id, evidence_messages.c.message_id.is_not(None))
    shown = [(row.chat_id, row.message_id, 0) for row in await conn.execute(query)]
    await schedule_deletions(conn, shown, now)
    await conn.execute(evidence_messages.delete().where(evidence_messages.c.case_id == case_id))
    await conn.execute(evidence_messages.insert(),
                       [{"case_id": case_id, "chat_id": 0, "message_id": None, "created_at": now}])


async def redact(conn: AsyncConnection, entries: Sequence[Pending]) -> None:
    """Blank delivered replies that carried a secret, so no code outlives its delivery in the database."""
    if entries:
        statement = update(outbox).where(outbox.c.id == bindparam("row_id")).values(payload=bindparam("body"))
        await conn.execute(statement, [{"row_id": e.id, "body": _redacted(e.reply)} for e in entries])


def _redacted(reply: Reply) -> dict[str, Any]:
    body = reply_to_json(reply)
    return {**body, **{name: REDACTED for name in ("text", "body", "png_base64") if name in body}}


async def set_blocked(conn: AsyncConnection, chat_id: int, blocked: bool) -> None:
    """Remember whether the user behind a private chat has blocked the bot."""
    await conn.execute(update(users).where(users.c.chat_id == chat_id).values(blocked=blocked))


async def blocked_chats(conn: AsyncConnection) -> set[int]:
    return set((await conn.execute(select(users.c.chat_id).where(users.c.blocked.is_(True)))).scalars())


async def add_timers(conn: AsyncConnection, new: Sequence[NewTimer]) -> None:
    """Schedule timers; a `replace` spec first drops the case's unfired timers of the same kind."""
    latest = {(t.case_id, t.spec.kind): t for t in new if t.spec.replace}
    new = [t for t in new if not t.spec.replace or latest[(t.case_id, t.spec.kind)] is t]
    replaced = set(latest)
    if replaced:
        await conn.execute(timers.delete().where(
            timers.c.fired_at.is_(None), tuple_(timers.c.case_id, timers.c.kind).in_(replaced)))
    if new:
        await conn.execute(timers.insert(), [
            {"case_id": t.case_id, "user_id": t.user_id, "chat_id": t.chat_id, "step": t.step, "kind": t.spec.kind,
             "payload": dict(t.spec.payload), "due_at": t.spec.due}
            for t in new
        ])


async def due_timers(conn: AsyncConnection, now: datetime, limit: int) -> list[DueTimer]:
    """Unfired timers due by `now`, in due order."""
    query = (
        select(timers).where(timers.c.fired_at.is_(None), timers.c.due_at <= now)
        .order_by(timers.c.due_at, timers.c.id).limit(limit)
    )
    return [
        DueTimer(r.id, r.case_id, r.user_id, r.chat_id, r.step, r.kind, r.payload, r.due_at)
        for r in await conn.execute(query)
    ]


async def next_due(conn: AsyncConnection) -> datetime | None:
    """When the earliest unfired timer is due."""
    query = select(func.min(timers.c.due_at)).where(timers.c.fired_at.is_(None))
    value = (await conn.execute(query)).scalar()
    return timers.c.due_at.type.process_result_value(value, conn.dialect) if isinstance(value, str) else value


async def unfired_timers(conn: AsyncConnection, timer_ids: Sequence[int]) -> set[int]:
    """Which of these timers still exist and have not fired."""
    query = select(timers.c.id).where(timers.c.id.in_(timer_ids), timers.c.fired_at.is_(None))
    return set((await conn.execute(query)).scalars())


async def mark_fired(conn: AsyncConnection, timer_ids: Sequence[int], now: datetime) -> None:
    if timer_ids:
        await conn.execute(update(timers).where(timers.c.id.in_(timer_ids), timers.c.fired_at.is_(None))
                           .values(fired_at=now))


async def add_audit(conn: AsyncConnection, entries: Sequence[AuditEntry], now: datetime) -> None:
    if entries:
        await conn.execute(audit.insert(), [
            {"at": now, "actor": e.actor, "action": e.action, "subject": e.subject, "detail": dict(e.detail)}
            for e in entries
        ])
