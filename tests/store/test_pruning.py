"""The contract of pruning (flows/retention.py) on every adapter: update keys, delivered replies and fired timers
older than a cutoff go, oldest first and `limit` at a time; what is still needed stays."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flows.model import TimerSpec
from flows.ports import Store
from flows.records import NewTimer
from flows.replies import SendCard, SendFiles, SendMessage

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
CUTOFF = NOW - timedelta(hours=48)
OLD, YOUNG = CUTOFF - timedelta(hours=1), CUTOFF + timedelta(hours=1)


def timer(kind: str, due: datetime) -> NewTimer:
    return NewTimer("c1", 7, 7, "ask_email", TimerSpec(kind, due, {}))


async def test_keys_older_than_the_cutoff_are_forgotten_and_younger_ones_still_refuse_a_repeat(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.updates.claim(["tg:1"], OLD)
        await tx.updates.claim(["tg:2"], YOUNG)
        assert await tx.updates.prune(CUTOFF, 1_000) == 1
    async with store.transaction() as tx:
        assert await tx.updates.claim(["tg:1", "tg:2"], NOW) == {"tg:1"}  # tg:2, redelivered, is still a repeat


async def test_keys_go_oldest_first_and_at_most_limit_at_a_time(store: Store) -> None:
    async with store.transaction() as tx:
        for hours in (5, 1, 4, 2, 3):
            await tx.updates.claim([f"k{hours}"], CUTOFF - timedelta(hours=hours))
        assert [await tx.updates.prune(CUTOFF, 2) for _ in range(4)] == [2, 2, 1, 0]
    async with store.transaction() as tx:
        assert await tx.updates.claim(["k1", "k2", "k3"], NOW) == {"k1", "k2", "k3"}

    async with store.transaction() as tx:
        for hours in (5, 1, 4):
            await tx.updates.claim([f"again{hours}"], CUTOFF - timedelta(hours=hours))
        assert await tx.updates.prune(CUTOFF, 2) == 2
        assert await tx.updates.claim(["again1", "again4", "again5"], NOW) == {"again4", "again5"}


async def test_only_fired_timers_older_than_the_cutoff_go(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.timers.add([timer("fired_old", OLD), timer("fired_young", OLD), timer("unfired", OLD),
                             timer("newest", OLD)])
        by_kind = {t.kind: t.id for t in await tx.timers.due(NOW, 10)}
        await tx.timers.mark_fired([by_kind["fired_old"], by_kind["newest"]], OLD)
        await tx.timers.mark_fired([by_kind["fired_young"]], YOUNG)
        assert await tx.timers.prune(CUTOFF, 1_000) == 1  # the newest row stays, though it fired long ago
        assert [t.kind for t in await tx.timers.due(NOW, 10)] == ["unfired"]
        assert await tx.timers.prune(CUTOFF, 1_000) == 0


async def test_a_timer_id_is_never_given_again_after_pruning(store: Store) -> None:
    """A timer fires under the update key `timer:{id}`: a new timer with a pruned timer's id would be taken for
    a repeat of it (SQLite gives a new row max(id) + 1, so pruning keeps the newest row)."""
    async with store.transaction() as tx:
        await tx.timers.add([timer(f"t{n}", OLD) for n in range(3)])
        used = [t.id for t in await tx.timers.due(NOW, 10)]
        await tx.timers.mark_fired(used, OLD)
        assert await tx.timers.prune(CUTOFF, 1_000) == 2
        await tx.timers.add([timer("later", NOW)])
        (later,) = await tx.timers.due(NOW, 10)
    assert later.id > max(used)


async def test_only_replies_delivered_before_the_cutoff_go_and_never_the_newest(store: Store) -> None:
    async with store.transaction() as tx:
        old, young, waiting, newest = await tx.outbox.add([SendMessage(7, text) for text in "abcd"], OLD)
        await tx.outbox.mark_delivered([(old.id, "sent", 1), (newest.id, "sent", 4)], OLD)
        await tx.outbox.mark_delivered([(young.id, "failed", None)], YOUNG)
        assert await tx.outbox.prune(CUTOFF, 1_000) == 1
        ids = [old.id, young.id, waiting.id, newest.id]
        assert await tx.outbox.outcomes(ids) == {young.id: "failed", waiting.id: None, newest.id: "sent"}
        assert [p.id for p in await tx.outbox.pending()] == [waiting.id]


async def test_replies_go_oldest_delivered_first_and_at_most_limit_at_a_time(store: Store) -> None:
    async with store.transaction() as tx:
        queued = await tx.outbox.add([SendMessage(7, str(n)) for n in range(5)], OLD)
        for entry, hours in zip(queued[:4], (1, 4, 2, 3), strict=True):
            await tx.outbox.mark_delivered([(entry.id, "sent", None)], OLD + timedelta(minutes=hours))
        assert await tx.outbox.prune(CUTOFF, 2) == 2
        assert set(await tx.outbox.outcomes([p.id for p in queued])) == {queued[1].id, queued[3].id, queued[4].id}


async def test_an_outbox_id_is_never_given_again_after_pruning(store: Store) -> None:
    """A card names its evidence by outbox id: a new reply with a pruned reply's id could stand in for it."""
    async with store.transaction() as tx:
        queued = await tx.outbox.add([SendMessage(7, str(n)) for n in range(3)], OLD)
        await tx.outbox.mark_delivered([(p.id, "sent", None) for p in queued], OLD)
        assert await tx.outbox.prune(CUTOFF, 1_000) == 2
        (later,) = await tx.outbox.add([SendMessage(7, "later")], NOW)
    assert later.id > max(p.id for p in queued)


async def test_evidence_a_waiting_card_names_stays_until_the_card_is_delivered(store: Store) -> None:
    """A card is sent with its buttons only if its evidence was delivered, which it reads from the outbox."""
    card = SendCard(5, "card", (), "card without buttons", (-1,))
    async with store.transaction() as tx:
        other, photo, queued_card = await tx.outbox.add([SendMessage(5, "other"), SendFiles(5, "photo", ("f",)),
                                                         card], OLD)
        await tx.outbox.add([SendMessage(6, "newest")], NOW)
        await tx.outbox.mark_delivered([(other.id, "sent", 1), (photo.id, "sent", 2)], OLD)
        assert await tx.outbox.prune(CUTOFF, 1_000) == 1
        assert await tx.outbox.outcomes([photo.id]) == {photo.id: "sent"}
        await tx.outbox.mark_delivered([(queued_card.id, "sent", 3)], OLD)
        assert await tx.outbox.prune(CUTOFF, 1_000) == 2
        assert await tx.outbox.outcomes([other.id, photo.id, queued_card.id]) == {}
