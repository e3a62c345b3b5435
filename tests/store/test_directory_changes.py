"""What an HTTP directory keeps on the desk's side, on every adapter: the desk's ids for the service's accounts,
and the queue of changes the worker sends, in order per account, each once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flows.ports import Store
from flows.records import QueuedChange

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def change(key: str, account_id: int, kind: str = "reset_two_factor", **values: object) -> QueuedChange:
    return QueuedChange(key=key, account_id=account_id, remote_id=f"acct-{account_id}",
                        change={"kind": kind, **values}, case_id="case-1", chat_id=501,
                        then={"say": [{"key": "review.approved_user"}]})


async def test_each_remote_account_gets_one_desk_id_for_good(store: Store) -> None:
    async with store.transaction() as tx:
        first = await tx.directory_ids.local_ids(["u-7", "u-9", "u-7"], NOW)
    async with store.transaction() as tx:
        again = await tx.directory_ids.local_ids(["u-9", "u-11"], NOW)
        assert await tx.directory_ids.remote_id(first["u-7"]) == "u-7"
        assert await tx.directory_ids.remote_id(999) is None
    assert set(first) == {"u-7", "u-9"} and first["u-7"] != first["u-9"]
    assert again["u-9"] == first["u-9"] and again["u-11"] not in first.values()


async def test_a_key_is_queued_once_and_changes_of_one_account_go_in_order(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.directory_changes.queue([change("k1", 1), change("k2", 1, "remove_phone"), change("k3", 2)], NOW)
        await tx.directory_changes.queue([change("k1", 1)], NOW + MINUTE)  # the same decision again
    async with store.transaction() as tx:
        due = await tx.directory_changes.due(NOW, limit=10)
        assert [row.queued.key for row in due] == ["k1", "k3"]  # k2 waits for k1, the same account's older change
        first = due[0]
        assert (first.status, first.attempts, first.queued.then, first.queued.chat_id) == (
            "pending", 0, {"say": [{"key": "review.approved_user"}]}, 501)
        await tx.directory_changes.settle(first.id, "applied", None, NOW)
        assert [row.queued.key for row in await tx.directory_changes.due(NOW, limit=10)] == ["k2", "k3"]
        assert [row.queued.key for row in await tx.directory_changes.due(NOW, limit=1)] == ["k2"]


async def test_a_retry_waits_and_counts_the_attempt(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.directory_changes.queue([change("k1", 1), change("k2", 1, "remove_phone")], NOW)
        first = (await tx.directory_changes.due(NOW, limit=10))[0]
        await tx.directory_changes.retry_later(first.id, NOW + MINUTE, "HTTP 503")
        assert await tx.directory_changes.due(NOW, limit=10) == []  # nor may k2 overtake it
        assert await tx.directory_changes.next_due() == NOW + MINUTE
        later = await tx.directory_changes.due(NOW + MINUTE, limit=10)
    assert [(row.queued.key, row.attempts, row.error) for row in later] == [("k1", 1, "HTTP 503")]


async def test_settling_drops_the_secret_and_shows_in_the_case_and_the_tally(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.directory_changes.queue([change("k1", 1, "enrol_authenticator", secret_enc="gAAAA-sealed"),
                                          change("k2", 2, "lock_withdrawals", until="2026-01-07T12:00:00+00:00")],
                                         NOW)
        enrol, lock = await tx.directory_changes.due(NOW, limit=10)
        assert await tx.directory_changes.settle(enrol.id, "applied", None, NOW + MINUTE)
        assert await tx.directory_changes.settle(lock.id, "failed", "change_refused", NOW + MINUTE)
        assert not await tx.directory_changes.settle(lock.id, "applied", None, NOW + MINUTE)  # settled already
        assert await tx.directory_changes.tally() == {"pending": 0, "failed": 1}
        assert await tx.directory_changes.next_due() is None
        shown = await tx.directory_changes.of_case("case-1")
    assert [(row.queued.key, row.status, row.error, row.settled_at) for row in shown] == [
        ("k1", "applied", None, NOW + MINUTE), ("k2", "failed", "change_refused", NOW + MINUTE)]
    assert "secret_enc" not in shown[0].queued.change and shown[0].queued.change["kind"] == "enrol_authenticator"
    assert shown[1].queued.change["until"] == "2026-01-07T12:00:00+00:00"
