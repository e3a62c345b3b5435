"""The broadcasts port: one running at a time, a recipient claimed once, the audiences, counts, and resuming."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from flows.events import Sender
from flows.ports import Store, Tx
from flows.records import (
    BLOCKED,
    CANCELLED,
    DRAFT,
    FAILED,
    FINISHED,
    PENDING,
    RUNNING,
    SENDING,
    SENT,
    UNCERTAIN,
    Case,
)

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=5)
ADMIN = 900


async def people(tx: Tx, *users: tuple[int, str | None]) -> None:
    """Users (each in its own private chat) with their language."""
    await tx.users.touch([Sender(user_id, user_id, language) for user_id, language in users], NOW)


async def case(tx: Tx, user_id: int, status: str) -> None:
    await tx.cases.save([Case(f"c{user_id}", user_id, user_id, "phone", "start", status=status, created_at=NOW,
                              updated_at=NOW)])


async def draft(tx: Tx, audience: str = "all", language: str | None = None) -> int:
    return await tx.broadcasts.create(NOW, ADMIN, audience, language, text="<b>Hello</b>", copy_from=None)


async def test_a_draft_reads_back_as_written(store: Store) -> None:
    async with store.transaction() as tx:
        first = await draft(tx)
        copy = await tx.broadcasts.create(NOW, ADMIN, "language", "en", text=None, copy_from=(ADMIN, 55))
    async with store.reading() as tx:
        view = await tx.broadcasts.get(first)
        copied = await tx.broadcasts.get(copy)
        assert await tx.broadcasts.get(copy + 100) is None
    assert copy > first
    assert view is not None and copied is not None
    assert (view.status, view.audience, view.language, view.text, view.copy_from, view.total) == (
        DRAFT, "all", None, "<b>Hello</b>", None, 0)
    assert (view.created_by, view.created_at, view.started_at, view.finished_at) == (ADMIN, NOW, None, None)
    assert (copied.text, copied.copy_from, copied.language) == (None, (ADMIN, 55), "en")


async def test_only_one_broadcast_runs_at_a_time(store: Store) -> None:
    async with store.transaction() as tx:
        await people(tx, (1, "en"), (2, "de"))
        first, second = await draft(tx), await draft(tx)
    async with store.transaction() as tx:
        assert await tx.broadcasts.start(first, ADMIN, 7, NOW) == 2
    async with store.transaction() as tx:
        assert await tx.broadcasts.start(second, ADMIN, 8, NOW) is None  # busy
        assert await tx.broadcasts.start(first, ADMIN, 8, NOW) is None  # no longer a draft
        assert await tx.broadcasts.start(12345, ADMIN, 8, NOW) is None
        assert await tx.broadcasts.running() == [first]
        assert await tx.broadcasts.counts(second) == {state: 0 for state in
                                                      (PENDING, SENDING, SENT, FAILED, BLOCKED, UNCERTAIN)}
        view = await tx.broadcasts.get(second)
        assert view is not None and view.status == DRAFT and view.total == 0
    async with store.transaction() as tx:
        await tx.broadcasts.finish(first, LATER)
        assert await tx.broadcasts.start(second, ADMIN, 8, LATER) == 2
    async with store.reading() as tx:
        done, running = await tx.broadcasts.get(first), await tx.broadcasts.get(second)
    assert done is not None and (done.status, done.finished_at) == (FINISHED, LATER)
    assert running is not None and (running.status, running.total, running.started_at) == (RUNNING, 2, LATER)
    assert (running.status_chat_id, running.status_message_id) == (ADMIN, 8)


async def test_a_start_that_rolls_back_leaves_the_draft_and_no_recipients(store: Store) -> None:
    async with store.transaction() as tx:
        await people(tx, (1, "en"))
        broadcast_id = await draft(tx)
    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            assert await tx.broadcasts.start(broadcast_id, ADMIN, 7, NOW) == 1
            raise RuntimeError("the process dies before the commit")
    async with store.reading() as tx:
        view = await tx.broadcasts.get(broadcast_id)
        assert view is not None and view.status == DRAFT
        assert await tx.broadcasts.running() == []
        assert await tx.broadcasts.pending(broadcast_id, None, 10) == []


async def test_a_recipient_is_claimed_once(store: Store) -> None:
    async with store.transaction() as tx:
        await people(tx, (1, "en"), (2, "en"))
        broadcast_id = await draft(tx)
        await tx.broadcasts.start(broadcast_id, ADMIN, 7, NOW)
    async with store.transaction() as tx:
        assert await tx.broadcasts.claim(broadcast_id, 1, NOW)
    async with store.transaction() as tx:
        assert not await tx.broadcasts.claim(broadcast_id, 1, NOW)
        assert not await tx.broadcasts.claim(broadcast_id, 99, NOW)  # not a recipient
        assert await tx.broadcasts.pending(broadcast_id, None, 10) == [2]
        await tx.broadcasts.record(broadcast_id, 1, SENT, 2, NOW)
        assert not await tx.broadcasts.claim(broadcast_id, 1, NOW)


async def test_audiences_take_the_right_users_and_never_blocked_ones(store: Store) -> None:
    async with store.transaction() as tx:
        await people(tx, (1, "en"), (2, "en"), (3, "en-US"), (4, "de"), (5, None), (6, "eo"), (7, "en"), (8, "EN"))
        await tx.users.set_blocked(7, True)
        await tx.users.set_blocked(8, True)
        for user_id, status in ((1, "open"), (4, "review"), (5, "closed"), (7, "open")):
            await case(tx, user_id, status)
    async with store.reading() as tx:
        sizes = [await tx.broadcasts.audience_size(audience, language)
                 for audience, language in (("all", None), ("open", None), ("language", "en"), ("language", "de"),
                                            ("language", "fr"), ("language", "en-us"))]
    assert sizes == [6, 2, 3, 1, 0, 1]

    async with store.transaction() as tx:
        everyone, open_cases, english = await draft(tx), await draft(tx, "open"), await draft(tx, "language", "en")
    frozen = {}
    for broadcast_id in (everyone, open_cases, english):
        async with store.transaction() as tx:
            assert await tx.broadcasts.start(broadcast_id, ADMIN, 7, NOW) is not None
            frozen[broadcast_id] = await tx.broadcasts.pending(broadcast_id, None, 100)
            await tx.broadcasts.cancel(broadcast_id, NOW)
    assert frozen == {everyone: [1, 2, 3, 4, 5, 6], open_cases: [1, 4], english: [1, 2, 3]}


async def test_the_audience_is_frozen_at_the_start(store: Store) -> None:
    async with store.transaction() as tx:
        await people(tx, (1, "en"), (2, "en"))
        broadcast_id = await draft(tx)
        await tx.broadcasts.start(broadcast_id, ADMIN, 7, NOW)
    async with store.transaction() as tx:
        await people(tx, (3, "en"))
        await tx.users.set_blocked(2, True)
    async with store.reading() as tx:
        assert await tx.broadcasts.pending(broadcast_id, None, 10) == [1, 2]
        view = await tx.broadcasts.get(broadcast_id)
        assert view is not None and view.total == 2


async def test_a_drafts_audience_changes_until_it_starts(store: Store) -> None:
    async with store.transaction() as tx:
        await people(tx, (1, "en"), (2, "de"))
        broadcast_id = await draft(tx)
        assert await tx.broadcasts.set_audience(broadcast_id, "language", "de")
        assert await tx.broadcasts.start(broadcast_id, ADMIN, 7, NOW) == 1
        assert not await tx.broadcasts.set_audience(broadcast_id, "all", None)
        view = await tx.broadcasts.get(broadcast_id)
    assert view is not None and (view.audience, view.language) == ("language", "de")


async def test_counts_by_state_and_pending_pages(store: Store) -> None:
    async with store.transaction() as tx:
        await people(tx, *[(i, "en") for i in range(1, 8)])
        broadcast_id = await draft(tx)
        await tx.broadcasts.start(broadcast_id, ADMIN, 7, NOW)
        for chat_id, state in ((1, SENT), (2, SENT), (3, BLOCKED), (4, FAILED)):
            assert await tx.broadcasts.claim(broadcast_id, chat_id, NOW)
            await tx.broadcasts.record(broadcast_id, chat_id, state, 1, NOW)
        assert await tx.broadcasts.claim(broadcast_id, 5, NOW)
    async with store.reading() as tx:
        counts = await tx.broadcasts.counts(broadcast_id)
        first_page = await tx.broadcasts.pending(broadcast_id, None, 1)
        next_page = await tx.broadcasts.pending(broadcast_id, first_page[-1], 5)
        assert await tx.broadcasts.counts(broadcast_id + 100) == dict.fromkeys(counts, 0)
    assert counts == {PENDING: 2, SENDING: 1, SENT: 2, FAILED: 1, BLOCKED: 1, UNCERTAIN: 0}
    assert (first_page, next_page) == ([6], [7])


async def test_resume_finds_the_running_ones_and_marks_sends_in_flight_uncertain(store: Store) -> None:
    async with store.transaction() as tx:
        await people(tx, (1, "en"), (2, "en"), (3, "en"))
        broadcast_id = await draft(tx)
        await tx.broadcasts.start(broadcast_id, ADMIN, 7, NOW)
        await tx.broadcasts.claim(broadcast_id, 1, NOW)
        await tx.broadcasts.claim(broadcast_id, 2, NOW)
        await tx.broadcasts.record(broadcast_id, 2, SENT, 1, NOW)
        other = await draft(tx)
    async with store.transaction() as tx:
        assert await tx.broadcasts.running() == [broadcast_id]
        assert await tx.broadcasts.mark_uncertain([broadcast_id], LATER) == 1
        assert await tx.broadcasts.mark_uncertain([broadcast_id], LATER) == 0
        assert await tx.broadcasts.mark_uncertain([], LATER) == 0
        counts = await tx.broadcasts.counts(broadcast_id)
        assert (counts[UNCERTAIN], counts[SENT], counts[PENDING]) == (1, 1, 1)
        assert not await tx.broadcasts.claim(broadcast_id, 1, LATER)  # uncertain: never sent again
        assert await tx.broadcasts.pending(broadcast_id, None, 10) == [3]
        view = await tx.broadcasts.get(other)
        assert view is not None and view.status == DRAFT


async def test_cancel_takes_a_draft_or_a_running_one_and_leaves_pending_rows(store: Store) -> None:
    async with store.transaction() as tx:
        await people(tx, (1, "en"), (2, "en"))
        dropped, running = await draft(tx), await draft(tx)
        await tx.broadcasts.start(running, ADMIN, 7, NOW)
    async with store.transaction() as tx:
        assert await tx.broadcasts.cancel(dropped, LATER)
        assert await tx.broadcasts.cancel(running, LATER)
        assert not await tx.broadcasts.cancel(running, LATER)
        assert not await tx.broadcasts.cancel(12345, LATER)
        await tx.broadcasts.finish(running, LATER)  # no longer running: stays cancelled
        assert await tx.broadcasts.running() == []
        assert await tx.broadcasts.pending(running, None, 10) == [1, 2]
        views = [await tx.broadcasts.get(i) for i in (dropped, running)]
    assert [(v.status, v.finished_at) for v in views if v] == [(CANCELLED, LATER), (CANCELLED, LATER)]
