"""The real `recovery-bot run` process, once per framework, in front of a real account service over HTTP: the stub
of docs/directory-api.yaml, which checks every request the desk makes (HMAC-signed here) and every answer against
the document. The three methods and a staff approval, with the service failing, dropping a connection after it
applied a change, and answering too late: nothing is lost, nothing applied twice, and the user hears the truth.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from flows.store.migrate import upgrade
from tests.support.botapi import BotApiServer
from tests.support.desk import ADA_TOTP, BEN_TOTP, totp_now
from tests.support.directory_service import HMAC_KEY, DirectoryService, StubAccount
from tests.support.e2e import (
    ADMIN,
    BotProcess,
    TgUser,
    greet,
    submit_ben_with_a_selfie,
    walk_backup_key_to_the_code,
    walk_phone_switch_to_the_codes,
)
from tests.support.events_receiver import EventsReceiver
from tests.test_http_directory_flows import BEING_APPLIED, CANNOT_CHECK

TIMEOUT_SECONDS = 1
EVENTS_KEY = "e2e-events-key-" + "k" * 32


async def received(receiver: EventsReceiver, count: int) -> list[str]:
    """The types of the events received, once there are `count` of them (15 s at most)."""
    for _ in range(150):
        if len(receiver.events) >= count:
            break
        await asyncio.sleep(0.1)
    return receiver.types()


@pytest.fixture
async def service() -> AsyncIterator[DirectoryService]:
    async with DirectoryService(hmac_key=HMAC_KEY) as running:
        running.add_account("ada@example.com", phone="+15551234534", totp_secret=ADA_TOTP,
                            security_question="What was your first pet's name?", security_answer="Rex")
        running.add_account("ben@example.com", phone="+442071234567", totp_secret=BEN_TOTP, identity_verified=True)
        yield running
        await running.settled()
    assert not running.violations, "\n".join(map(str, running.violations))


@pytest.fixture
async def receiver() -> AsyncIterator[EventsReceiver]:
    async with EventsReceiver(EVENTS_KEY) as running:
        yield running


@pytest.fixture
async def desk(server: BotApiServer, framework: str, tmp_path: Path, service: DirectoryService,
               receiver: EventsReceiver) -> AsyncIterator[BotProcess]:
    """The bot with no accounts of its own: every lookup, check and change goes to the service; its events go
    to the receiver."""
    process = BotProcess(server, framework, tmp_path, ACCOUNT_DIRECTORY_URL=service.url,
                         ACCOUNT_DIRECTORY_SIGNING_KEY=HMAC_KEY,
                         ACCOUNT_DIRECTORY_TIMEOUT_SECONDS=str(TIMEOUT_SECONDS),
                         EVENTS_URL=receiver.url, EVENTS_SIGNING_KEY=EVENTS_KEY)
    await upgrade(process.database_url)
    await process.start()
    yield process
    if process.process is not None:
        assert await process.stop() == 0, process.log.read_text()[-3000:]


def account(service: DirectoryService, email: str) -> StubAccount:
    return next(a for a in service.accounts.values() if a.email == email)


def kinds(service: DirectoryService, email: str) -> list[str]:
    return [change["kind"] for change in service.changes_for(account(service, email))]


async def test_method_one_survives_a_failing_service_and_a_dropped_connection(
        desk: BotProcess, server: BotApiServer, service: DirectoryService, receiver: EventsReceiver) -> None:
    user = TgUser(server, 201)
    await walk_phone_switch_to_the_codes(user)
    user.send(user.last_code("SMS"))
    await user.expect("Now send me the 6-digit code from the email")
    user.send(user.last_code("Email"))
    await user.expect("Press Submit")
    service.fail_next("changes", status=503)  # the switch: refused for now, retried after 1 to 2 s
    service.drop_after_apply_next()  # its retry: applied, but the answer never arrives
    user.tap("Submit")
    await user.expect(BEING_APPLIED)
    await user.expect("Your account now uses phone verification", timeout=30)
    assert kinds(service, "ada@example.com") == ["switch_to_phone", "lock_withdrawals"]
    assert account(service, "ada@example.com").two_factor == "phone"
    keys = [call.idempotency_key for call in service.calls_to("changes")]
    assert len(keys) == 4 and keys[0] == keys[1] == keys[2] != keys[3]
    assert sum("Your account now uses phone verification" in text for text in user.sent_texts()) == 1
    assert await received(receiver, 3) == ["case.opened", "account.two_factor_changed", "account.withdrawals_locked"]


async def test_method_three_asks_the_service_whether_the_code_is_right(
        desk: BotProcess, server: BotApiServer, service: DirectoryService) -> None:
    user = TgUser(server, 203)
    await walk_backup_key_to_the_code(user, "ben@example.com")
    user.send(totp_now(BEN_TOTP, datetime.now(UTC)))
    await user.expect("The code matches")
    assert [call.status for call in service.calls_to("totp")] == [200]


async def test_a_lookup_that_times_out_asks_to_try_again_and_loses_nothing(
        desk: BotProcess, server: BotApiServer, service: DirectoryService) -> None:
    user = TgUser(server, 204)
    await greet(user)
    user.tap("Reset with my backup key")
    await user.expect("Which email address")
    service.delay_next("lookup", seconds=TIMEOUT_SECONDS + 1)
    user.send("ada@example.com")
    await user.expect(CANNOT_CHECK)
    await service.settled()
    await asyncio.sleep(2 * TIMEOUT_SECONDS + 0.5)  # after a failure the desk stops calling for twice the timeout
    user.send("ada@example.com")
    await user.expect("install the authenticator app again")


async def test_staff_approval_resets_locks_and_enrols_through_the_service(
        desk: BotProcess, server: BotApiServer, service: DirectoryService) -> None:
    admin, user = TgUser(server, ADMIN), TgUser(server, 211)
    await submit_ben_with_a_selfie(admin, user)
    await admin.expect("Review case")
    admin.tap("✅ Approve")
    await admin.expect("approved, withdrawals locked")
    await user.expect("Good news: our staff approved your request.", timeout=30)
    key_text = await user.expect("Or type this key")
    secret = key_text.split("Or type this key: ", 1)[1].split("\n", 1)[0].replace(" ", "")
    assert account(service, "ben@example.com").two_factor == "none"
    user.mark = len(server.calls)
    user.send(totp_now(secret, datetime.now(UTC)))
    await user.expect("Your new authenticator works.", timeout=30)
    assert kinds(service, "ben@example.com") == ["reset_two_factor", "lock_withdrawals", "enrol_authenticator"]
    assert account(service, "ben@example.com").totp_secret == secret
