"""The account directory on the migrated SQLite database: lookups, secrets at rest, answers, locks, masking."""

from __future__ import annotations

import base64
import hashlib
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from flows.clock import FakeClock
from flows.directory import (
    ENROL_AUTHENTICATOR,
    LOCK_WITHDRAWALS,
    RESET_TWO_FACTOR,
    SWITCH_TO_PHONE,
    Change,
    DecryptError,
    SecretBox,
    hash_answer,
    mask_email,
    mask_phone,
    verify_answer,
)
from flows.otp import time_step
from flows.store.accounts import SqlAccounts
from flows.store.tables import accounts
from flows.table_directory import TableDirectory
from tests.support.desk import totp_now

SECRET_KEY = "x" * 40
BOX = SecretBox(SECRET_KEY)
TOTP = "JBSWY3DPEHPK3PXP"


async def add_account(conn: AsyncConnection, clock: FakeClock, email: str, **values: Any) -> int:
    row = {"email": email, "identity_verified": False, "two_factor": "phone", "created_at": clock.now(),
           "updated_at": clock.now(), **values}
    result = await conn.execute(accounts.insert().returning(accounts.c.id), row)
    return int(result.scalar_one())


async def raw_row(conn: AsyncConnection, account_id: int) -> tuple[Any, ...]:
    result = await conn.exec_driver_sql("SELECT * FROM accounts WHERE id = ?", (account_id,))
    return tuple(result.one())


async def test_find_by_email_ignores_case_and_spaces(db: AsyncEngine, clock: FakeClock) -> None:
    async with db.begin() as conn:
        account_id = await add_account(conn, clock, "jane.doe@example.com", phone="+15551234534")
        directory = TableDirectory(SqlAccounts(conn), BOX, clock.now())
        found = await directory.find_by_email("  Jane.DOE@Example.com ")
        assert found is not None
        assert (found.id, found.email, found.phone, found.has_totp) == (account_id, "jane.doe@example.com",
                                                                        "+15551234534", False)
        assert await directory.find_by_email("john@example.com") is None
        assert await directory.get(account_id) == found
        assert await directory.get(account_id + 1) is None


async def test_totp_secret_is_encrypted_at_rest(db: AsyncEngine, clock: FakeClock) -> None:
    async with db.begin() as conn:
        account_id = await add_account(conn, clock, "jane@example.com")
        directory = TableDirectory(SqlAccounts(conn), BOX, clock.now())
        view = await directory.apply(account_id, Change(ENROL_AUTHENTICATOR, secret="jbsw-y3dp ehpk-3pxp"), "k1")
        assert TOTP not in repr(await raw_row(conn, account_id))
        assert await directory.totp_secret(account_id) == TOTP
        assert view is not None and (view.has_totp, view.two_factor) == (True, "totp")


async def test_a_different_secret_key_cannot_decrypt(db: AsyncEngine, clock: FakeClock) -> None:
    async with db.begin() as conn:
        account_id = await add_account(conn, clock, "jane@example.com", totp_secret_enc=BOX.encrypt(TOTP))
        other = TableDirectory(SqlAccounts(conn), SecretBox("y" * 40), clock.now())
        with pytest.raises(DecryptError):
            await other.totp_secret(account_id)
    with pytest.raises(DecryptError):
        SecretBox("y" * 40).decrypt(BOX.encrypt(TOTP))
    assert BOX.encrypt(TOTP) != BOX.encrypt(TOTP)


async def test_an_invalid_secret_is_refused(db: AsyncEngine, clock: FakeClock) -> None:
    async with db.begin() as conn:
        account_id = await add_account(conn, clock, "jane@example.com")
        with pytest.raises(ValueError):
            await TableDirectory(SqlAccounts(conn), BOX, clock.now()).apply(
                account_id, Change(ENROL_AUTHENTICATOR, secret="JBSW0Y3DPEHPK3PX"), "k1")


async def test_a_totp_code_is_accepted_once(db: AsyncEngine, clock: FakeClock) -> None:
    async with db.begin() as conn:
        account_id = await add_account(conn, clock, "jane@example.com", totp_secret_enc=BOX.encrypt(TOTP))
        bare_id = await add_account(conn, clock, "john@example.com")
        directory = TableDirectory(SqlAccounts(conn), BOX, clock.now())
        code = totp_now(TOTP, clock.now())
        assert not await directory.verify_totp(account_id, "000000" if code != "000000" else "111111")
        assert await directory.verify_totp(account_id, code)
        assert not await directory.verify_totp(account_id, code)  # replayed
        assert not await directory.verify_totp(bare_id, code)
        assert not await directory.verify_totp(account_id + 99, code)
        assert (await raw_row(conn, account_id))[4] == time_step(clock.now())


async def test_enrolling_remembers_the_step_the_new_key_was_proved_with(db: AsyncEngine, clock: FakeClock) -> None:
    async with db.begin() as conn:
        account_id = await add_account(conn, clock, "jane@example.com")
        directory = TableDirectory(SqlAccounts(conn), BOX, clock.now())
        step = time_step(clock.now())
        await directory.apply(account_id, Change(ENROL_AUTHENTICATOR, secret=TOTP, accepted_step=step), "k1")
        assert not await directory.verify_totp(account_id, totp_now(TOTP, clock.now()))


async def test_security_answers_are_hashed_with_a_pepper_and_normalised(db: AsyncEngine, clock: FakeClock) -> None:
    stored = hash_answer("the cat", BOX.answer_pepper)
    assert stored.startswith("scrypt-hmac$16384$8$1$") and "cat" not in stored
    assert not verify_answer("the cat", stored, SecretBox("y" * 40).answer_pepper)  # the database alone is not enough
    async with db.begin() as conn:
        account_id = await add_account(conn, clock, "jane@example.com", security_question="Pet?",
                                       security_answer_hash=stored)
        bare_id = await add_account(conn, clock, "john@example.com")
        directory = TableDirectory(SqlAccounts(conn), BOX, clock.now())
        assert await directory.verify_security_answer(account_id, "  The  CAT ")
        assert await directory.verify_security_answer(account_id, "ＴＨＥ\tcat")
        assert not await directory.verify_security_answer(account_id, "the dog")
        assert not await directory.verify_security_answer(bare_id, "")
        assert not await directory.verify_security_answer(account_id + 99, "the cat")


def test_hashes_made_before_the_pepper_still_verify() -> None:
    salt = b"0123456789abcdef"
    digest = hashlib.scrypt(b"the cat", salt=salt, n=2**14, r=8, p=1, maxmem=64 * 1024 * 1024, dklen=32)
    old = "$".join(["scrypt", "16384", "8", "1", base64.b64encode(salt).decode(), base64.b64encode(digest).decode()])
    assert verify_answer("The Cat", old, BOX.answer_pepper)
    assert not verify_answer("the dog", old, BOX.answer_pepper)


@pytest.mark.parametrize("stored", ["", "scrypt$1$2$3", "bcrypt$16384$8$1$AAAA$AAAA", "scrypt$x$8$1$AAAA$AAAA",
                                    "scrypt$16384$8$1$!!$AAAA", "scrypt$99999999999999999999999$8$1$AAAA$AAAA",
                                    "scrypt-hmac$1$2$3"])
def test_malformed_hashes_never_match(stored: str) -> None:
    assert not verify_answer("", stored, BOX.answer_pepper)


async def test_withdrawal_lock_is_never_shortened(db: AsyncEngine, clock: FakeClock) -> None:
    now = clock.now()
    async with db.begin() as conn:
        account_id = await add_account(conn, clock, "jane@example.com")
        directory = TableDirectory(SqlAccounts(conn), BOX, now)

        async def lock(account: int, hours: int) -> object:
            after = await directory.apply(account, Change(LOCK_WITHDRAWALS, until=now + timedelta(hours=hours)), "k")
            return after and after.withdrawals_locked_until

        assert await lock(account_id, 48) == now + timedelta(hours=48)
        assert await lock(account_id, 24) == now + timedelta(hours=48)
        assert await lock(account_id, 72) == now + timedelta(hours=72)
        until = await directory.withdrawal_lock(account_id)
        assert until == now + timedelta(hours=72) and until.tzinfo is not None
        assert await lock(account_id + 1, 48) is None
        assert await directory.withdrawal_lock(account_id + 1) is None


async def test_switching_and_resetting_the_second_factor(db: AsyncEngine, clock: FakeClock) -> None:
    async with db.begin() as conn:
        phone_id = await add_account(conn, clock, "a@example.com", totp_secret_enc=BOX.encrypt(TOTP),
                                     totp_last_step=7, two_factor="totp")
        reset_id = await add_account(conn, clock, "b@example.com", totp_secret_enc=BOX.encrypt(TOTP),
                                     totp_last_step=7, two_factor="totp")
        clock.advance(minutes=5)
        directory = TableDirectory(SqlAccounts(conn), BOX, clock.now())
        await directory.apply(phone_id, Change(SWITCH_TO_PHONE), "k1")
        await directory.apply(reset_id, Change(RESET_TWO_FACTOR), "k2")
        views = {view.id: view for view in await directory.list_accounts()}
        assert [(v.two_factor, v.has_totp) for v in views.values()] == [("phone", False), ("none", False)]
        assert [(await raw_row(conn, account))[4] for account in (phone_id, reset_id)] == [None, None]
        assert await directory.totp_secret(reset_id) is None


async def test_list_accounts_in_creation_order(db: AsyncEngine, clock: FakeClock) -> None:
    async with db.begin() as conn:
        for email in ("c@example.com", "a@example.com", "b@example.com"):
            await add_account(conn, clock, email)
        listed = await TableDirectory(SqlAccounts(conn), BOX, clock.now()).list_accounts()
    assert [view.email for view in listed] == ["c@example.com", "a@example.com", "b@example.com"]


@pytest.mark.parametrize(("email", "masked"), [
    ("jane.doe@example.com", "j•••@example.com"), ("j@example.com", "j•••@example.com"), ("nobody", "n•••"),
])
def test_mask_email(email: str, masked: str) -> None:
    assert mask_email(email) == masked


@pytest.mark.parametrize(("phone", "masked"), [
    ("+15551234534", "+1•••••34"), ("+44 20 7946 0958", "+4•••••58"), ("5551234534", "5•••••34"), ("+123", "+•••••"),
])
def test_mask_phone(phone: str, masked: str) -> None:
    assert mask_phone(phone) == masked
