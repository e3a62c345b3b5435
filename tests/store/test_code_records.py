"""The verification-code records on every adapter: live codes, voiding, single use, counts per hour window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from flows.ports import Store
from flows.records import NewCode

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


async def an_account(store: Store, email: str = "jane@example.com") -> int:
    async with store.transaction() as tx:
        await tx.accounts.add({email: {}}, NOW)
        found = await tx.accounts.by_email(email)
    assert found is not None
    return found.id


def code(account_id: int | None, at: datetime = NOW, case_id: str = "case-1", factor: str = "phone",
         user_id: int = 7, decoy: bool = False, code_hash: str = "h") -> NewCode:
    return NewCode(account_id=account_id, user_id=user_id, decoy=decoy, case_id=case_id, factor=factor,
                   code_hash=code_hash, created_at=at, expires_at=at + timedelta(minutes=30))


async def test_a_stored_code_is_the_newest_live_one(store: Store) -> None:
    account_id = await an_account(store)
    async with store.transaction() as tx:
        code_id = await tx.codes.add(code(account_id))
        live = await tx.codes.newest_live("case-1", "phone")
        assert await tx.codes.newest_live("case-1", "email") is None
        assert await tx.codes.newest_live("case-2", "phone") is None
    assert live is not None
    assert (live.id, live.account_id, live.user_id, live.decoy, live.code_hash, live.wrong_tries) == (
        code_id, account_id, 7, False, "h", 0)
    assert (live.created_at, live.expires_at, live.used_at, live.voided_at) == (
        NOW, NOW + timedelta(minutes=30), None, None)
    assert live.expires_at.tzinfo is not None


async def test_void_then_newest(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.codes.add(code(None, code_hash="old"))
        await tx.codes.add(code(None, factor="email", code_hash="other factor"))
        await tx.codes.void_live("case-1", "phone", NOW)
        assert await tx.codes.newest_live("case-1", "phone") is None
        newer = await tx.codes.add(code(None, NOW + timedelta(minutes=1), code_hash="new"))
        live = await tx.codes.newest_live("case-1", "phone")
        assert live is not None and (live.id, live.code_hash) == (newer, "new")
        other = await tx.codes.newest_live("case-1", "email")
        assert other is not None and other.code_hash == "other factor"


async def test_of_codes_made_at_once_the_last_stored_is_newest(store: Store) -> None:
    async with store.transaction() as tx:
        await tx.codes.add(code(None, code_hash="first"))
        second = await tx.codes.add(code(None, code_hash="second"))
        live = await tx.codes.newest_live("case-1", "phone")
    assert live is not None and live.id == second


async def test_a_code_is_single_use(store: Store) -> None:
    async with store.transaction() as tx:
        code_id = await tx.codes.add(code(None))
    async with store.transaction() as tx:
        assert await tx.codes.use(code_id, NOW)
    async with store.transaction() as tx:
        assert not await tx.codes.use(code_id, NOW)  # the second use loses
        assert await tx.codes.newest_live("case-1", "phone") is None


async def test_of_two_uses_in_one_transaction_one_wins(store: Store) -> None:
    async with store.transaction() as tx:
        code_id = await tx.codes.add(code(None))
        assert [await tx.codes.use(code_id, NOW), await tx.codes.use(code_id, NOW)] == [True, False]


async def test_a_voided_or_unknown_code_cannot_be_used(store: Store) -> None:
    async with store.transaction() as tx:
        code_id = await tx.codes.add(code(None))
        await tx.codes.void_live("case-1", "phone", NOW)
        assert not await tx.codes.use(code_id, NOW)
        assert not await tx.codes.use(code_id + 100, NOW)


async def test_wrong_tries_add_up(store: Store) -> None:
    async with store.transaction() as tx:
        code_id = await tx.codes.add(code(None))
        for _ in range(3):
            await tx.codes.count_wrong(code_id)
    async with store.reading() as tx:
        live = await tx.codes.newest_live("case-1", "phone")
    assert live is not None and live.wrong_tries == 3


async def test_the_last_code_made_counts_used_and_voided_ones(store: Store) -> None:
    async with store.transaction() as tx:
        assert await tx.codes.last_created("case-1", "phone") is None
        first = await tx.codes.add(code(None))
        await tx.codes.add(code(None, NOW + timedelta(seconds=30), factor="email"))
        assert await tx.codes.use(first, NOW)
        assert await tx.codes.last_created("case-1", "phone") == NOW
        await tx.codes.add(code(None, NOW + timedelta(seconds=10)))
        await tx.codes.void_live("case-1", "phone", NOW)
        assert await tx.codes.last_created("case-1", "phone") == NOW + timedelta(seconds=10)


async def test_real_codes_are_counted_per_account_and_requester_within_the_window(store: Store) -> None:
    account_id = await an_account(store)
    other_account = await an_account(store, "john@example.com")
    async with store.transaction() as tx:
        await tx.codes.add(code(account_id, NOW - HOUR))  # exactly at the window's start: not after it
        await tx.codes.add(code(account_id, NOW - timedelta(minutes=59)))
        await tx.codes.add(code(account_id, NOW, case_id="case-2", factor="email"))
        await tx.codes.add(code(account_id, NOW, user_id=8))
        await tx.codes.add(code(account_id, NOW, decoy=True))  # decoys reach nobody: never counted
        await tx.codes.add(code(other_account, NOW))
        await tx.codes.add(code(None, NOW))
        since = NOW - HOUR
        assert await tx.codes.count_real(account_id, since) == 3
        assert await tx.codes.count_real_to(account_id, 7, "phone", since) == 1
        assert await tx.codes.count_real_to(account_id, 7, "email", since) == 1
        assert await tx.codes.count_real_to(account_id, 8, "phone", since) == 1
        assert await tx.codes.count_real(other_account, since) == 1
        assert await tx.codes.count_real(0, since) == 0  # no account: the same query, counting nothing
        assert await tx.codes.count_real(account_id, NOW - 2 * HOUR) == 4


async def test_a_transaction_that_raised_leaves_nothing(store: Store) -> None:
    async with store.transaction() as tx:
        kept = await tx.codes.add(code(None))
    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            await tx.codes.count_wrong(kept)
            assert await tx.codes.use(kept, NOW)
            await tx.codes.add(code(None, NOW + timedelta(minutes=1), case_id="case-2"))
            raise RuntimeError("abort")
    async with store.reading() as tx:
        live = await tx.codes.newest_live("case-1", "phone")
        assert live is not None and (live.id, live.wrong_tries, live.used_at) == (kept, 0, None)
        assert await tx.codes.last_created("case-2", "phone") is None
