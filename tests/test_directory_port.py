"""The directory port's contract, on both adapters: the built-in accounts table, and a service over HTTP (the
stub of docs/directory-api.yaml, a real server checking every request and response against the document).

What a flow may rely on, whichever the operator runs: lookups ignore case; an unknown account answers like a
known one would (None, False, nothing changed); a code works once; a lock only extends; changes do what they say.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from flows.directory import (
    ENROL_AUTHENTICATOR,
    LOCK_WITHDRAWALS,
    NO_ACCOUNT,
    REMOVE_PHONE,
    RESET_TWO_FACTOR,
    SWITCH_TO_PHONE,
    AccountDirectory,
    Change,
    SecretBox,
    hash_answer,
)
from flows.http_directory import DirectoryClient, HttpDirectory
from flows.store.memory import MemoryStore
from flows.table_directory import TableDirectory
from tests.support.desk import totp_now
from tests.support.directory_service import TOKEN, DirectoryService

SECRET = "JBSWY3DPEHPK3PXP"
NEW_SECRET = "KRSXG5CTMVRXEZLUKRSXG5CT"
BOX = SecretBox("x" * 40)


@dataclass
class Accounts:
    """One adapter under test: add accounts the way its owner would, and open the port in a transaction."""

    adding: Callable[..., Awaitable[None]]
    open: Callable[[], AbstractAsyncContextManager[AccountDirectory]]
    now: Callable[[], datetime]


async def _table(store: MemoryStore) -> Accounts:
    now = datetime.now(UTC)

    async def add(email: str, phone: str | None = None, totp_secret: str | None = None,
                  question: str | None = None, answer: str | None = None, two_factor: str | None = None) -> None:
        async with store.transaction() as tx:
            await tx.accounts.add({email: {
                "phone": phone, "totp_secret_enc": BOX.encrypt(totp_secret) if totp_secret else None,
                "security_question": question,
                "security_answer_hash": hash_answer(answer, BOX.answer_pepper) if answer else None,
                "two_factor": two_factor or ("totp" if totp_secret else "phone" if phone else "none"),
            }}, now)

    @asynccontextmanager
    async def open_port() -> AsyncIterator[AccountDirectory]:
        async with store.transaction() as tx:
            yield TableDirectory(tx.accounts, BOX, datetime.now(UTC))

    return Accounts(add, open_port, lambda: datetime.now(UTC))


def _http(service: DirectoryService, client: DirectoryClient, store: MemoryStore) -> Accounts:
    async def add(email: str, phone: str | None = None, totp_secret: str | None = None,
                  question: str | None = None, answer: str | None = None, two_factor: str | None = None) -> None:
        service.add_account(email, phone=phone, totp_secret=totp_secret, security_question=question,
                            security_answer=answer, two_factor=two_factor)

    @asynccontextmanager
    async def open_port() -> AsyncIterator[AccountDirectory]:
        async with store.transaction() as tx:
            yield HttpDirectory(client, tx.directory_ids, datetime.now(UTC))

    return Accounts(add, open_port, lambda: datetime.now(UTC))


@pytest.fixture(params=["table", "http"])
async def accounts(request: pytest.FixtureRequest) -> AsyncIterator[Accounts]:
    store = MemoryStore()
    if request.param == "table":
        yield await _table(store)
        return
    async with DirectoryService(token=TOKEN) as service:
        client = DirectoryClient(service.url, token=TOKEN, timeout=5)
        try:
            yield _http(service, client, store)
        finally:
            await client.close()
        assert not service.violations, "\n".join(map(str, service.violations))


async def add(accounts: Accounts, email: str, **values: object) -> None:
    await accounts.adding(email, **values)


async def test_lookup_ignores_case_and_spaces_and_an_unknown_email_finds_nothing(accounts: Accounts) -> None:
    await add(accounts, "jane.doe@example.com", phone="+15551234534", totp_secret=SECRET, question="First pet?",
              answer="the cat")
    async with accounts.open() as directory:
        found = await directory.find_by_email("  Jane.Doe@EXAMPLE.com ")
        assert found is not None
        assert (found.email, found.phone, found.has_totp, found.two_factor, found.security_question) == (
            "jane.doe@example.com", "+15551234534", True, "totp", "First pet?")
        assert await directory.get(found.id) == found
        assert await directory.find_by_email("nobody@example.com") is None
        assert await directory.get(NO_ACCOUNT) is None
        assert await directory.withdrawal_lock(NO_ACCOUNT) is None


async def test_a_totp_code_works_once_and_never_for_another_account(accounts: Accounts) -> None:
    await add(accounts, "jane@example.com", totp_secret=SECRET)
    await add(accounts, "john@example.com", phone="+15550000001")
    async with accounts.open() as directory:
        jane = await directory.find_by_email("jane@example.com")
        john = await directory.find_by_email("john@example.com")
        assert jane is not None and john is not None
        code = totp_now(SECRET, accounts.now())
        assert not await directory.verify_totp(john.id, code)
        assert not await directory.verify_totp(NO_ACCOUNT, code)
        assert await directory.verify_totp(jane.id, code)
        assert not await directory.verify_totp(jane.id, code)  # the same code again: a replay


async def test_security_answers_are_compared_loosely_and_unknown_accounts_never_match(accounts: Accounts) -> None:
    await add(accounts, "jane@example.com", phone="+15550000001", question="First pet?", answer="The Cat")
    async with accounts.open() as directory:
        jane = await directory.find_by_email("jane@example.com")
        assert jane is not None
        assert await directory.verify_security_answer(jane.id, "  the   CAT ")
        assert not await directory.verify_security_answer(jane.id, "the dog")
        assert not await directory.verify_security_answer(NO_ACCOUNT, "the cat")


async def test_changes_do_what_they_say(accounts: Accounts) -> None:
    await add(accounts, "a@example.com", phone="+15550000001", totp_secret=SECRET)
    await add(accounts, "b@example.com", phone="+15550000002", totp_secret=SECRET)
    async with accounts.open() as directory:
        a = await directory.find_by_email("a@example.com")
        b = await directory.find_by_email("b@example.com")
        assert a is not None and b is not None
        switched = await directory.apply(a.id, Change(SWITCH_TO_PHONE), "case-1:switch")
        assert switched is not None and (switched.two_factor, switched.has_totp) == ("phone", False)
        reset = await directory.apply(b.id, Change(RESET_TWO_FACTOR), "case-2:reset")
        assert reset is not None and (reset.two_factor, reset.has_totp) == ("none", False)
        enrolled = await directory.apply(b.id, Change(ENROL_AUTHENTICATOR, secret=NEW_SECRET), "case-2:enrol")
        assert enrolled is not None and (enrolled.two_factor, enrolled.has_totp) == ("totp", True)
        assert await directory.verify_totp(b.id, totp_now(NEW_SECRET, accounts.now()))
        without_phone = await directory.apply(b.id, Change(REMOVE_PHONE), "case-2:phone")
        assert without_phone is not None and without_phone.phone is None
        assert await directory.apply(NO_ACCOUNT, Change(RESET_TWO_FACTOR), "case-3:reset") is None


async def test_a_withdrawal_lock_only_extends(accounts: Accounts) -> None:
    await add(accounts, "jane@example.com", phone="+15550000001")
    now = accounts.now().replace(microsecond=0)
    async with accounts.open() as directory:
        jane = await directory.find_by_email("jane@example.com")
        assert jane is not None
        for key, hours in (("k1", 48), ("k2", 24), ("k3", 72)):
            await directory.apply(jane.id, Change(LOCK_WITHDRAWALS, until=now + timedelta(hours=hours)), key)
        assert await directory.withdrawal_lock(jane.id) == now + timedelta(hours=72)
        found = await directory.get(jane.id)
        assert found is not None and found.withdrawals_locked_until == now + timedelta(hours=72)
