"""Events waiting for EVENTS_URL, on every adapter: posted oldest first, an id kept once, retried, then closed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flows.ports import Store
from flows.records import OutgoingEvent

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def event(event_id: str, kind: str = "case.opened") -> OutgoingEvent:
    return OutgoingEvent(event_id, kind, NOW, {"case": "c1", "flow": "phone"})


async def test_events_are_due_in_order_and_an_id_is_kept_once(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.events.add([event("e1"), event("e2", "case.submitted")])
        await tx.events.add([event("e1")])
    async with store.reading() as tx:
        due = await tx.events.due(NOW, 10)
    assert [(s.event.id, s.event.type, s.event.data, s.attempts) for s in due] == [
        ("e1", "case.opened", {"case": "c1", "flow": "phone"}, 0), ("e2", "case.submitted", {"case": "c1",
                                                                                              "flow": "phone"}, 0)]


async def test_a_retry_waits_and_a_closed_event_is_not_due_again(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.events.add([event("e1"), event("e2")])
        first, second = await tx.events.due(NOW, 10)
        await tx.events.retry_later(first.row, NOW + MINUTE, "HTTP 500")
        await tx.events.close(second.row, "delivered", NOW)
        await tx.events.close(second.row, "given_up", NOW)  # closed already: no effect
        assert await tx.events.due(NOW, 10) == []
        assert await tx.events.next_due() == NOW + MINUTE
        [again] = await tx.events.due(NOW + MINUTE, 10)
        assert (again.event.id, again.attempts) == ("e1", 1)
        await tx.events.close(again.row, "delivered", NOW + MINUTE)
        assert await tx.events.next_due() is None
