"""The failed-check records on every adapter: counts per account and window, marker rows apart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from flows.ports import Store

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
HOUR, DAY = timedelta(hours=1), timedelta(days=1)
MARKER = "owner_told"


async def two_accounts(store: Store) -> tuple[int, int]:
    async with store.transaction() as tx:
        await tx.accounts.add({"a@example.com": {}, "b@example.com": {}}, NOW)
        found = await tx.accounts.by_emails(["a@example.com", "b@example.com"])
    return found["a@example.com"].id, found["b@example.com"].id


async def test_failures_are_counted_per_account_and_window_without_the_marker(store: Store) -> None:
    a, b = await two_accounts(store)
    async with store.transaction() as tx:
        await tx.failures.add(a, "totp", 61, "case-1", NOW - timedelta(minutes=5))
        await tx.failures.add(a, "code", 62, "case-2", NOW - timedelta(minutes=59))
        await tx.failures.add(a, "answer", 61, "case-1", NOW - HOUR)  # at the hour's start: not after it
        await tx.failures.add(a, "totp", 61, "case-1", NOW - timedelta(hours=23))
        await tx.failures.add(a, "totp", 61, "case-1", NOW - DAY - timedelta(seconds=1))
        await tx.failures.add(a, MARKER, 61, "case-1", NOW)
        await tx.failures.add(b, "totp", 61, "case-3", NOW)
        await tx.failures.add(None, "totp", 64, "case-4", NOW)  # an email that is no account
    async with store.reading() as tx:
        assert await tx.failures.count_except(a, MARKER, (NOW - HOUR, NOW - DAY)) == [2, 4]
        assert await tx.failures.count_except(b, MARKER, (NOW - HOUR, NOW - DAY)) == [1, 1]
        assert await tx.failures.count_except(0, MARKER, (NOW - HOUR, NOW - DAY)) == [0, 0]  # counted for nobody
        assert await tx.failures.count_except(a, MARKER, ()) == []


async def test_marker_rows_are_counted_apart(store: Store) -> None:
    a, b = await two_accounts(store)
    async with store.transaction() as tx:
        await tx.failures.add(a, MARKER, 61, "case-1", NOW - timedelta(hours=2))
        await tx.failures.add(a, "totp", 61, "case-1", NOW)
        assert await tx.failures.count_of(a, MARKER, NOW - DAY) == 1
        assert await tx.failures.count_of(a, MARKER, NOW - timedelta(hours=2)) == 0
        assert await tx.failures.count_of(b, MARKER, NOW - DAY) == 0
        assert await tx.failures.count_of(a, "totp", NOW - DAY) == 1


async def test_a_transaction_that_raised_leaves_nothing(store: Store) -> None:
    a, _ = await two_accounts(store)
    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            await tx.failures.add(a, "totp", 61, "case-1", NOW)
            await tx.failures.add(a, MARKER, 61, "case-1", NOW)
            raise RuntimeError("abort")
    async with store.reading() as tx:
        assert await tx.failures.count_except(a, MARKER, (NOW - DAY,)) == [0]
        assert await tx.failures.count_of(a, MARKER, NOW - DAY) == 0
