"""The contract of the `Statistics` port on every adapter (the `store` fixture is each in turn): cases counted per
method, status and window, verified by each method's own rule, recovery times, reviews waiting, users."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from flows.events import Sender
from flows.ports import Store
from flows.records import Case, CaseTally
from flows.stats import MONTH, PERIODS, TODAY, WEEK, collect

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
MIDNIGHT = datetime(2026, 12, 1, tzinfo=UTC)
WINDOWS = {p.label: p.since(NOW) for p in PERIODS}
_ids: Iterator[int] = itertools.count(1)


def case(flow: str = "phone", status: str = "open", created: datetime = NOW - timedelta(hours=1),
         closed: datetime | None = None, updated: datetime | None = None, **data: object) -> Case:
    return Case(f"c{next(_ids):011d}", 7, 7, flow, "somewhere", dict(data), status, 1, created,
                updated or closed or created, closed)


async def saved(store: Store, *cases: Case) -> None:
    async with store.transaction() as tx:
        await tx.cases.save(cases)


async def tallies(store: Store, now: datetime = NOW) -> dict[tuple[str, str], CaseTally]:
    async with store.reading() as tx:
        found = await tx.statistics.tally(WINDOWS, now)
    assert len(found) == len({(t.flow, t.status) for t in found}), "one tally per method and status"
    return {(t.flow, t.status): t for t in found}


async def test_cases_are_counted_per_method_status_and_window_both_ends_included(store: Store) -> None:
    await saved(
        store,
        case(created=NOW), case(created=MIDNIGHT), case(created=MIDNIGHT - timedelta(microseconds=1)),
        case(created=NOW - timedelta(days=7)), case(created=NOW - timedelta(days=8)),
        case(created=NOW - timedelta(days=30)), case(created=NOW - timedelta(days=30, seconds=1)),
        case(created=NOW + timedelta(seconds=1)),
        case("phone", "cancelled", closed=NOW), case("backup", "review", created=NOW - timedelta(days=8)),
        case("start", created=NOW),
    )
    found = await tallies(store)
    assert set(found) == {("phone", "open"), ("phone", "cancelled"), ("backup", "review")}
    assert found["phone", "open"].started == {"today": 2, "7d": 4, "30d": 6}
    assert found["phone", "cancelled"].started == {"today": 1, "7d": 1, "30d": 1}
    assert found["backup", "review"].started == {"today": 0, "7d": 0, "30d": 1}


async def test_verified_follows_each_methods_own_rule(store: Store) -> None:
    closed = NOW - timedelta(minutes=1)
    await saved(
        store,
        case("phone", phone_verified=True), case("phone", phone_verified=False),
        case("phone", email_verified=True),  # not the phone's proof
        case("phone", "completed", closed=closed, phone_verified=True),
        case("reverify", email_verified=True, email="alice@example.com"),
        case("reverify", phone_verified=True),  # not the email's proof
        case("reverify", "approved", closed=closed),  # approved without the flag
        case("backup", "completed", closed=closed),
        case("backup", "review", phone_verified=True, email_verified=True),  # the backup key's proof is recovery
        case("phone", phone_verified=True, created=NOW - timedelta(days=8)),
    )
    verified = {group: t.verified for group, t in (await tallies(store)).items()}
    assert verified == {
        ("phone", "open"): {"today": 1, "7d": 1, "30d": 2},
        ("phone", "completed"): {"today": 1, "7d": 1, "30d": 1},
        ("reverify", "open"): {"today": 1, "7d": 1, "30d": 1},
        ("reverify", "approved"): {"today": 0, "7d": 0, "30d": 0},
        ("backup", "completed"): {"today": 1, "7d": 1, "30d": 1},
        ("backup", "review"): {"today": 0, "7d": 0, "30d": 0},
    }


async def test_no_windows_no_cases_no_tallies(store: Store) -> None:
    async with store.reading() as tx:
        assert await tx.statistics.tally(WINDOWS, NOW) == []
    await saved(store, case())
    async with store.reading() as tx:
        assert await tx.statistics.tally({}, NOW) == []


async def test_recovery_times_are_those_of_recovered_cases_created_in_the_window(store: Store) -> None:
    start = NOW - timedelta(days=3)
    await saved(
        store,
        *(case("phone", "completed", created=start, closed=start + timedelta(minutes=m)) for m in (10, 20, 60)),
        case("backup", "approved", created=start, closed=start + timedelta(hours=1)),
        case("backup", "rejected", created=start, closed=start + timedelta(hours=50)),
        case("backup", "completed", created=NOW - timedelta(days=40), closed=NOW - timedelta(days=9)),
        case("reverify", "review", created=start),
        case("start", "completed", created=start, closed=start + timedelta(minutes=1)),
    )
    async with store.reading() as tx:
        times = await tx.statistics.recovery_times(MONTH.since(NOW), NOW)
    assert {flow: sorted(found) for flow, found in times.items()} == {
        "phone": [timedelta(minutes=10), timedelta(minutes=20), timedelta(minutes=60)],
        "backup": [timedelta(hours=1)],
    }
    async with store.reading() as tx:
        stats = await collect(tx.statistics, NOW)
    assert stats.median_recovery == {"phone": timedelta(minutes=20), "reverify": None, "backup": timedelta(hours=1)}


async def test_totals_count_reviews_waiting_the_oldest_update_and_users(store: Store) -> None:
    async with store.reading() as tx:
        empty = await tx.statistics.totals()
    assert (empty.pending_reviews, empty.oldest_review, empty.users, empty.blocked_users) == (0, None, 0, 0)
    await saved(
        store,
        case("reverify", "review", created=NOW - timedelta(days=40), updated=NOW - timedelta(hours=5)),
        case("backup", "review", created=NOW - timedelta(hours=3), updated=NOW - timedelta(hours=2)),
        case("start", "review", updated=NOW - timedelta(hours=1)),  # any case in review waits, whatever its flow
        case("backup", "approved", updated=NOW - timedelta(days=3), closed=NOW - timedelta(days=3)),
    )
    async with store.transaction() as tx:
        await tx.users.touch([Sender(n, n) for n in range(1, 8)], NOW)
        for chat_id in (3, 6, 7):
            await tx.users.set_blocked(chat_id, True)
        await tx.users.touch([Sender(7, 7)], NOW)  # writing again unblocks
    async with store.reading() as tx:
        totals = await tx.statistics.totals()
    assert (totals.pending_reviews, totals.oldest_review) == (3, NOW - timedelta(hours=5))
    assert (totals.users, totals.blocked_users) == (7, 2)


async def test_the_report_reads_the_same_numbers_through_the_port(store: Store) -> None:
    await saved(
        store,
        case("phone", "completed", created=NOW - timedelta(days=2, minutes=45), closed=NOW - timedelta(days=2),
             phone_verified=True),
        case("reverify", "review", updated=NOW - timedelta(hours=26), email_verified=True),
        case("backup", "rejected", created=NOW - timedelta(days=10), closed=NOW - timedelta(days=9)),
    )
    async with store.transaction() as tx:
        await tx.users.touch([Sender(7, 7), Sender(8, 8)], NOW)
        await tx.users.set_blocked(8, True)
    async with store.reading() as tx:
        stats = await collect(tx.statistics, NOW)
    phone, reverify = stats.get(WEEK, "phone"), stats.get(TODAY, "reverify")
    assert (phone.started, phone.verified, phone.recovered) == (1, 1, 1)
    assert (reverify.started, reverify.verified, reverify.outcomes["review"]) == (1, 1, 1)
    assert (stats.get(WEEK, "backup").started, stats.get(MONTH, "backup").outcomes["rejected"]) == (0, 1)
    assert stats.median_recovery["phone"] == timedelta(minutes=45)
    assert (stats.pending_reviews, stats.oldest_review_age) == (1, timedelta(hours=26))
    assert (stats.users, stats.blocked_users) == (2, 1)
