"""The contract of the runner's ports — updates, users, cases, timers, outbox, evidence and audit — on every
adapter (the `store` fixture is each in turn)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from flows.events import Sender
from flows.model import TimerSpec
from flows.ports import Store
from flows.records import AuditEntry, Case, NewTimer
from flows.replies import SendCard, SendFiles, SendMessage

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def case(case_id: str, chat_id: int, status: str = "open", **data: object) -> Case:
    return Case(case_id, chat_id, chat_id, "phone", "ask_email", dict(data), status, 0, NOW, NOW)


def timer(case_id: str, kind: str, due: datetime, replace: bool = False) -> NewTimer:
    return NewTimer(case_id, 7, 7, "ask_email", TimerSpec(kind, due, {"n": 1}, replace=replace))


class Boom(Exception):
    pass


async def test_an_update_is_claimed_once(store: Store) -> None:
    async with store.transaction() as tx:
        assert await tx.updates.claim(["u1", "u2", "u1"], NOW) == {"u1", "u2"}
    async with store.transaction() as tx:
        assert await tx.updates.claim(["u2", "u3"], NOW) == {"u3"}
        assert await tx.updates.claim([], NOW) == set()


async def test_what_a_failed_transaction_wrote_is_gone(store: Store) -> None:
    with pytest.raises(Boom):
        async with store.transaction() as tx:
            await tx.updates.claim(["u1"], NOW)
            await tx.cases.save([case("c1", 7)])
            raise Boom
    async with store.transaction() as tx:
        assert await tx.updates.claim(["u1"], NOW) == {"u1"}
        assert await tx.cases.by_id(["c1"]) == {}


async def test_users_are_blocked_until_they_write_again(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.users.touch([Sender(7, 7, "en"), Sender(8, 8)], NOW)
        await tx.users.set_blocked(7, True)
        assert await tx.users.blocked_among([7, 8, 9]) == {7}
        assert await tx.users.known([7, 9]) == {7}
    async with store.transaction() as tx:
        await tx.users.touch([Sender(7, 7)], NOW + timedelta(minutes=1))
        assert await tx.users.blocked_among([7, 8]) == set()


async def test_a_chosen_language_wins_over_the_telegram_apps(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.users.touch([Sender(7, 7, "de"), Sender(8, 8, "ru"), Sender(9, 9)], NOW)
        await tx.users.choose_language(7, "es")
        await tx.users.touch([Sender(7, 7, "fr")], NOW)  # the app's language changes; the choice stays
    async with store.reading() as tx:
        assert await tx.users.languages([7, 8, 9, 10]) == {7: "es", 8: "ru"}


async def test_cases_are_saved_read_back_and_found_by_chat_while_active(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.cases.save([case("c1", 7, email="a@example.com"), case("c2", 8, "cancelled")])
    async with store.reading() as tx:
        active = await tx.cases.active([7, 8, 9])
        assert list(active) == [7] and active[7].data == {"email": "a@example.com"}
        assert set(await tx.cases.by_id(["c1", "c2", "nope"])) == {"c1", "c2"}
    found = active[7]
    found.data["email"] = "changed in memory only"
    async with store.reading() as tx:
        assert (await tx.cases.by_id(["c1"]))["c1"].data == {"email": "a@example.com"}


async def test_case_data_comes_back_as_json_gives_it(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.cases.save([case("c1", 7, restore=("totp", "phone"))])
    async with store.reading() as tx:
        assert (await tx.cases.by_id(["c1"]))["c1"].data == {"restore": ["totp", "phone"]}


async def test_saving_a_case_again_updates_it(store: Store) -> None:
    first = case("c1", 7)
    async with store.transaction() as tx:
        await tx.cases.save([first])
    moved = Case("c1", 7, 7, "phone", "get_code", {"x": 1}, "review", 3, NOW, NOW + timedelta(hours=1))
    async with store.transaction() as tx:
        await tx.cases.save([moved])
    async with store.reading() as tx:
        saved = (await tx.cases.by_id(["c1"]))["c1"]
    assert (saved.step, saved.status, saved.turn, saved.data, saved.created_at) == ("get_code", "review", 3,
                                                                                   {"x": 1}, NOW)


async def test_cases_in_review_come_oldest_first(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.cases.save([
            Case(f"c{i}", i, i, "reverify", "review", {}, "review", 0, NOW, NOW - timedelta(hours=i))
            for i in (1, 3, 2)
        ] + [case("c9", 9)])
        assert [c.id for c in await tx.cases.in_review(2)] == ["c3", "c2"]


async def test_the_latest_case_of_a_chat_is_the_last_updated_whatever_its_status(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.cases.save([
            Case("old", 7, 7, "reverify", "restored", {}, "approved", 0, NOW, NOW - timedelta(days=2)),
            Case("new", 7, 7, "reverify", "review", {}, "rejected", 0, NOW, NOW - timedelta(hours=1)),
            Case("other", 8, 8, "phone", "ask_email", {}, "open", 0, NOW, NOW),
        ])
    async with store.reading() as tx:
        latest = await tx.cases.latest(7)
        assert latest is not None and (latest.id, latest.status) == ("new", "rejected")
        assert await tx.cases.latest(9) is None


async def test_a_users_cases_come_newest_first(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.cases.save([
            Case("old", 7, 7, "reverify", "restored", {}, "approved", 0, NOW - timedelta(days=2), NOW),
            Case("new", 7, 7, "phone", "ask_email", {}, "open", 0, NOW - timedelta(hours=1), NOW),
            Case("other", 8, 8, "phone", "ask_email", {}, "open", 0, NOW, NOW),
        ])
    async with store.reading() as tx:
        assert [c.id for c in await tx.cases.of_user(7, 10)] == ["new", "old"]
        assert [c.id for c in await tx.cases.of_user(7, 1)] == ["new"]
        assert await tx.cases.of_user(9, 10) == []


async def test_timers_fall_due_in_order_and_fire_once(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.timers.add([timer("c1", "late", NOW + timedelta(minutes=5)), timer("c1", "soon", NOW)])
        assert await tx.timers.next_due() == NOW
        due = await tx.timers.due(NOW + timedelta(minutes=10), 10)
        assert [t.kind for t in due] == ["soon", "late"]
        assert due[0].payload == {"n": 1} and due[0].step == "ask_email"
        await tx.timers.mark_fired([due[0].id], NOW)
        await tx.timers.mark_fired([due[0].id], NOW + timedelta(hours=1))
        assert await tx.timers.unfired([t.id for t in due]) == {due[1].id}
        assert [t.kind for t in await tx.timers.due(NOW + timedelta(minutes=10), 10)] == ["late"]
        assert await tx.timers.next_due() == NOW + timedelta(minutes=5)


async def test_a_replacing_timer_drops_the_cases_unfired_ones_of_its_kind(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.timers.add([timer("c1", "nudge", NOW), timer("c2", "nudge", NOW), timer("c1", "other", NOW)])
        await tx.timers.add([timer("c1", "nudge", NOW + timedelta(minutes=1), replace=True),
                             timer("c1", "nudge", NOW + timedelta(minutes=2), replace=True)])
        due = await tx.timers.due(NOW + timedelta(hours=1), 10)
    assert sorted((t.case_id, t.kind, t.due_at) for t in due) == [
        ("c1", "nudge", NOW + timedelta(minutes=2)), ("c1", "other", NOW), ("c2", "nudge", NOW)]


async def test_a_replaced_timers_id_is_never_given_to_its_replacement(store: Store) -> None:
    """The timer loop may have read the old timer as due: its firing (`timer:{id}`) must find it closed, not a
    newer timer under the same id."""
    async with store.transaction() as tx:
        await tx.timers.add([timer("c1", "nudge", NOW, replace=True)])
        [old] = await tx.timers.due(NOW, 10)
    async with store.transaction() as tx:
        await tx.timers.add([timer("c1", "nudge", NOW, replace=True)])
        [new] = await tx.timers.due(NOW, 10)
        assert new.id != old.id
        assert await tx.timers.unfired([old.id]) == set()


async def test_deletions_are_timers_without_a_case(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.timers.schedule_deletions([(7, 41, 600)], NOW)
        assert await tx.timers.due(NOW, 10) == []
        (deletion,) = await tx.timers.due(NOW + timedelta(minutes=10), 10)
    assert (deletion.kind, deletion.step, deletion.payload) == ("delete_message", None,
                                                                 {"chat_id": 7, "message_id": 41})


async def test_erasing_a_user_takes_their_cases_replies_and_row_and_leaves_the_rest(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.users.touch([Sender(7, 7, "en"), Sender(8, 8)], NOW)
        await tx.cases.save([case("c1", 7), case("c2", 7, "approved"), case("c3", 8)])
        await tx.timers.add([timer("c1", "reminder", NOW), timer("c3", "reminder", NOW)])
        await tx.timers.schedule_deletions([(7, 41, 0)], NOW)  # their key message still leaves their chat
        await tx.evidence.record([("c2", 900, (5,))], NOW)
        sent = await tx.outbox.add([SendMessage(7, "told"), SendMessage(8, "other")], NOW)
        await tx.outbox.mark_delivered([(sent[0].id, "sent", 1), (sent[1].id, "sent", 2)], NOW)
        waiting = await tx.outbox.add([SendMessage(7, "on its way")], NOW)
        await tx.audit.add([AuditEntry("user:7", "case.opened", "case:c1", {})], NOW)
    async with store.transaction() as tx:
        assert await tx.cases.latest(7) is not None
        assert await tx.erasure.erase_user(7, NOW) == 2
    async with store.reading() as tx:
        assert await tx.cases.of_user(7, 10) == [] and [c.id for c in await tx.cases.of_user(8, 10)] == ["c3"]
        assert await tx.users.known([7, 8]) == {8}
        due = await tx.timers.due(NOW, 10)
        assert sorted((t.case_id, t.kind) for t in due) == [("", "delete_message"), ("c3", "reminder")]
        assert [p.id for p in await tx.outbox.pending()] == [waiting[0].id]
        assert await tx.outbox.outcomes([sent[0].id, sent[1].id]) == {sent[1].id: "sent"}
        assert [line.subject for line in await tx.audit.recent(10)] == ["case:c1"]
        assert not await tx.evidence.shown("c2", 900, None)


async def test_the_outbox_keeps_order_until_delivered(store: Store) -> None:
    async with store.transaction() as tx:
        first = await tx.outbox.add([SendMessage(7, "one"), SendMessage(8, "two")], NOW)
        second = await tx.outbox.add([SendMessage(7, "three")], NOW)
    ids = [p.id for p in first + second]
    assert ids == sorted(ids) and len(set(ids)) == 3
    async with store.transaction() as tx:
        await tx.outbox.mark_delivered([(ids[0], "sent", 100)], NOW)
        assert [p.reply for p in await tx.outbox.pending()] == [SendMessage(8, "two"), SendMessage(7, "three")]
        assert await tx.outbox.outcomes(ids) == {ids[0]: "sent", ids[1]: None, ids[2]: None}


async def test_a_card_names_its_evidence_by_outbox_id(store: Store) -> None:
    card = SendCard(5, "card", (), "card without buttons", (-2, -1))
    async with store.transaction() as tx:
        queued = await tx.outbox.add([SendMessage(6, "other"), SendFiles(5, "photo", ("f1",)),
                                      SendFiles(5, "document", ("f2",)), card], NOW)
    assert isinstance(queued[3].reply, SendCard) and queued[3].reply.evidence == (queued[1].id, queued[2].id)
    async with store.reading() as tx:
        assert (await tx.outbox.pending())[3].reply == queued[3].reply


async def test_a_redacted_entry_keeps_no_secret(store: Store) -> None:
    async with store.transaction() as tx:
        (entry,) = await tx.outbox.add([SendMessage(7, "your code: 123456", sensitive=True)], NOW)
        await tx.outbox.redact([entry])
        (left,) = await tx.outbox.pending()
    assert isinstance(left.reply, SendMessage) and "123456" not in left.reply.text


async def test_evidence_shown_is_remembered_and_forgotten_with_its_messages(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.evidence.record([("c1", 900, (11, 12))], NOW)
        assert await tx.evidence.shown("c1", 900, NOW)
        assert not await tx.evidence.shown("c1", 901, None)
        assert not await tx.evidence.shown("c1", 900, NOW + timedelta(seconds=1))
        await tx.evidence.forget("c1", NOW)
        assert not await tx.evidence.shown("c1", 900, None)
        deleting = await tx.timers.due(NOW, 10)
        assert sorted(t.payload["message_id"] for t in deleting) == [11, 12]
        await tx.evidence.record([("c1", 901, (13,))], NOW)  # still on its way when the case was purged
        assert not await tx.evidence.shown("c1", 901, None)
        assert sorted(t.payload["message_id"] for t in await tx.timers.due(NOW, 10)) == [11, 12, 13]


async def test_audit_lines_come_newest_first(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.audit.add([AuditEntry("user:7", "case.opened", "case:c1", {"flow": "phone"}),
                            AuditEntry("staff:900", "review.approved", "case:c1")], NOW)
        lines = await tx.audit.recent(5)
        assert [line.action for line in lines] == ["review.approved", "case.opened"]
        assert lines[1].detail == {"flow": "phone"} and lines[1].at == NOW
        assert [line.action for line in await tx.audit.recent(1)] == ["review.approved"]


async def test_a_reader_neither_waits_for_a_writer_nor_holds_one_up(db_url: str) -> None:
    """On SQLite a reading transaction reads a WAL snapshot of what was committed (BEGIN, not BEGIN IMMEDIATE)."""
    import asyncio

    from flows.store.database import SqlStore, open_database

    store = SqlStore(open_database(db_url))
    try:
        async with store.transaction() as tx:
            await tx.cases.save([case("c1", 7)])
        async with store.reading() as reader:
            assert set(await reader.cases.by_id(["c1"])) == {"c1"}

            async def write() -> None:
                async with store.transaction() as tx:
                    await tx.cases.save([case("c2", 8)])

            await asyncio.wait_for(write(), timeout=2)  # would wait for the reader's lock if it held one
            assert set(await reader.cases.by_id(["c1", "c2"])) == {"c1"}  # its snapshot: c2 came after it
        async with store.transaction() as writer:
            await writer.cases.save([case("c3", 9)])
            async with store.reading() as reader:  # while a writer holds the lock
                assert set(await asyncio.wait_for(reader.cases.by_id(["c1", "c2", "c3"]), timeout=2)) == {"c1", "c2"}
    finally:
        await store.close()


async def test_writers_of_one_process_take_turns_without_waiting_in_sqlites_busy_handler(db_url: str) -> None:
    """With SQLite's busy timeout at zero, two writers that met at SQLite's lock would fail at once ("database
    is locked"): they take turns before it instead, each seeing the others' commits."""
    import asyncio

    from sqlalchemy import event

    from flows.store.database import SqlStore, open_database

    engine = open_database(db_url)

    @event.listens_for(engine.sync_engine, "connect")
    def _no_busy_wait(dbapi_connection: object, _record: object) -> None:
        dbapi_connection.execute("PRAGMA busy_timeout=0")  # type: ignore[attr-defined]

    store = SqlStore(engine)

    async def write(n: int) -> None:
        async with store.transaction() as tx:
            await tx.cases.save([case(f"c{n}", n)])
            await asyncio.sleep(0.01)  # holds SQLite's lock while the others ask for it

    try:
        await asyncio.gather(*(write(n) for n in range(1, 9)))
        async with store.reading() as reader:
            assert set(await reader.cases.by_id([f"c{n}" for n in range(1, 9)])) == {f"c{n}" for n in range(1, 9)}
    finally:
        await store.close()
