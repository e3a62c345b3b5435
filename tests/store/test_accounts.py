"""The accounts port on every adapter: exact lookups, conditional updates that only move forward, all or nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.exc import IntegrityError

from flows.directory import SecretBox
from flows.ports import Store
from flows.table_directory import TableDirectory

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=5)


async def seeded(store: Store, *emails: str) -> dict[str, int]:
    async with store.transaction() as tx:
        await tx.accounts.add({email: {"phone": "+15550100", "two_factor": "phone"} for email in emails}, NOW)
        return {email: found.id for email, found in (await tx.accounts.by_emails(emails)).items()}


async def test_added_accounts_read_back_with_their_defaults_and_times(store: Store) -> None:
    ids = await seeded(store, "jane@example.com", "john@example.com")
    async with store.reading() as tx:
        jane = await tx.accounts.by_id(ids["jane@example.com"])
        assert jane is not None and jane == await tx.accounts.by_email("jane@example.com")
        assert (jane.email, jane.phone, jane.two_factor, jane.identity_verified, jane.totp_secret_enc) == (
            "jane@example.com", "+15550100", "phone", False, None)
        assert (jane.created_at, jane.updated_at, jane.withdrawals_locked_until) == (NOW, NOW, None)
        assert jane.created_at is not None and jane.created_at.tzinfo is not None
        assert [a.email for a in await tx.accounts.all()] == ["jane@example.com", "john@example.com"]
        assert await tx.accounts.count() == 2
        assert ids["jane@example.com"] >= 1  # NO_ACCOUNT (0) is never an id


async def test_lookups_match_the_stored_email_exactly(store: Store) -> None:
    await seeded(store, "jane@example.com")
    async with store.reading() as tx:
        assert await tx.accounts.by_email("Jane@example.com") is None  # the directory lower-cases, not the port
        assert await tx.accounts.by_email("jane@example.co") is None
        assert await tx.accounts.by_id(0) is None
        assert set(await tx.accounts.by_emails(["jane@example.com", "JANE@example.com", "x@example.com"])) == {
            "jane@example.com"}


async def test_the_directory_finds_an_email_whatever_its_case(store: Store) -> None:
    ids = await seeded(store, "jane.doe@example.com")
    async with store.reading() as tx:
        found = await TableDirectory(tx.accounts, SecretBox("x" * 40), NOW).find_by_email("  Jane.DOE@Example.com ")
    assert found is not None and found.id == ids["jane.doe@example.com"]


async def test_many_emails_are_looked_up_at_once(store: Store) -> None:
    emails = [f"user{i}@example.com" for i in range(1200)]  # more than one IN (...) list
    await seeded(store, *emails)
    async with store.reading() as tx:
        assert len(await tx.accounts.by_emails(emails)) == 1200


async def test_an_email_already_on_file_is_refused(store: Store) -> None:
    await seeded(store, "jane@example.com")
    with pytest.raises((IntegrityError, ValueError)):
        await seeded(store, "jane@example.com")
    async with store.reading() as tx:
        assert await tx.accounts.count() == 1


async def test_a_change_sets_only_its_columns_and_stamps_the_time(store: Store) -> None:
    ids = await seeded(store, "a@example.com", "b@example.com")
    a, b = ids["a@example.com"], ids["b@example.com"]
    async with store.transaction() as tx:
        await tx.accounts.change({a: {"phone": None}, b: {"two_factor": "totp", "totp_secret_enc": "sealed"},
                                  999: {"phone": None}}, LATER)
    async with store.reading() as tx:
        changed_a, changed_b = await tx.accounts.by_id(a), await tx.accounts.by_id(b)
        assert await tx.accounts.by_id(999) is None
    assert changed_a is not None and changed_b is not None
    assert (changed_a.phone, changed_a.two_factor, changed_a.updated_at, changed_a.created_at) == (
        None, "phone", LATER, NOW)
    assert (changed_b.phone, changed_b.two_factor, changed_b.totp_secret_enc) == ("+15550100", "totp", "sealed")


async def test_the_withdrawal_lock_only_extends(store: Store) -> None:
    account_id = (await seeded(store, "a@example.com"))["a@example.com"]
    async with store.transaction() as tx:
        extend = tx.accounts.extend_withdrawal_lock
        assert await extend(account_id, NOW + timedelta(hours=48), LATER) == NOW + timedelta(hours=48)
        assert await extend(account_id, NOW + timedelta(hours=24), LATER) == NOW + timedelta(hours=48)
        assert await extend(account_id, NOW + timedelta(hours=72), LATER) == NOW + timedelta(hours=72)
        assert await extend(0, NOW, LATER) is None
    async with store.reading() as tx:
        found = await tx.accounts.by_id(account_id)
    assert found is not None and found.withdrawals_locked_until == NOW + timedelta(hours=72)


async def test_a_shorter_lock_changes_nothing_not_even_the_time(store: Store) -> None:
    account_id = (await seeded(store, "a@example.com"))["a@example.com"]
    async with store.transaction() as tx:
        await tx.accounts.extend_withdrawal_lock(account_id, NOW + timedelta(hours=48), NOW)
        await tx.accounts.extend_withdrawal_lock(account_id, NOW + timedelta(hours=1), LATER)
        await tx.accounts.advance_totp_step(account_id, 10, NOW)
        await tx.accounts.advance_totp_step(account_id, 9, LATER)
        found = await tx.accounts.by_id(account_id)
    assert found is not None and found.updated_at == NOW


async def test_the_totp_step_never_moves_back(store: Store) -> None:
    account_id = (await seeded(store, "a@example.com"))["a@example.com"]
    async with store.transaction() as tx:
        for step in (100, 99, 100, 101, 7):
            await tx.accounts.advance_totp_step(account_id, step, LATER)
        found = await tx.accounts.by_id(account_id)
        assert found is not None and found.totp_last_step == 101
        await tx.accounts.change({account_id: {"totp_last_step": None}}, LATER)  # a new secret starts over
        await tx.accounts.advance_totp_step(account_id, 5, LATER)
        found = await tx.accounts.by_id(account_id)
    assert found is not None and found.totp_last_step == 5


async def test_a_transaction_that_raised_leaves_nothing(store: Store) -> None:
    account_id = (await seeded(store, "a@example.com"))["a@example.com"]
    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            await tx.accounts.add({"b@example.com": {}}, LATER)
            await tx.accounts.change({account_id: {"phone": None}}, LATER)
            await tx.accounts.extend_withdrawal_lock(account_id, LATER, LATER)
            await tx.accounts.advance_totp_step(account_id, 3, LATER)
            raise RuntimeError("abort")
    async with store.reading() as tx:
        assert [a.email for a in await tx.accounts.all()] == ["a@example.com"]
        found = await tx.accounts.by_id(account_id)
    assert found is not None
    assert (found.phone, found.withdrawals_locked_until, found.totp_last_step, found.updated_at) == (
        "+15550100", None, None, NOW)


async def test_a_change_by_the_desk_is_stamped_and_one_by_the_import_is_not(store: Store) -> None:
    ids = await seeded(store, "desk@example.com", "import@example.com")
    async with store.transaction() as tx:
        await tx.accounts.change({ids["desk@example.com"]: {"two_factor": "none"}}, LATER)
        await tx.accounts.change({ids["import@example.com"]: {"phone": "+15550111", "imported_at": LATER}}, LATER,
                                 by_import=True)
        by_desk, by_import = await tx.accounts.by_id(ids["desk@example.com"]), await tx.accounts.by_id(
            ids["import@example.com"])
    assert by_desk is not None and (by_desk.desk_changed_at, by_desk.imported_at) == (LATER, None)
    assert by_import is not None and (by_import.desk_changed_at, by_import.imported_at) == (None, LATER)


async def test_a_longer_lock_is_the_desks_change_and_a_totp_step_is_not(store: Store) -> None:
    ids = await seeded(store, "locked@example.com", "stepped@example.com")
    locked, stepped = ids["locked@example.com"], ids["stepped@example.com"]
    async with store.transaction() as tx:
        await tx.accounts.extend_withdrawal_lock(locked, NOW + timedelta(hours=48), NOW)
        await tx.accounts.extend_withdrawal_lock(locked, NOW + timedelta(hours=1), LATER)  # shorter: no change
        await tx.accounts.advance_totp_step(stepped, 10, LATER)
        found_locked, found_stepped = await tx.accounts.by_id(locked), await tx.accounts.by_id(stepped)
    assert found_locked is not None and found_locked.desk_changed_at == NOW
    assert found_stepped is not None and found_stepped.desk_changed_at is None
