"""The desk in front of a real account service over HTTP (the stub of docs/directory-api.yaml, which checks every
request and response against the document): the three methods and a staff approval, and what the user is told
when the service is slow, down, drops a connection or refuses a change. Nothing is lost, nothing applied twice,
and the user is told the truth: "being applied" until the service confirms, then the usual message.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from flows.change_worker import ChangeWorker
from flows.clock import FakeClock
from flows.desk import build_engine
from flows.http_directory import DirectoryClient
from flows.moments import moment
from flows.replies import SendMessage
from flows.services import FlowSettings, ServiceFactory
from tests.support.chat import Bot, Chat, said
from tests.support.desk import ADA_TOTP, BEN_TOTP, SECRET_KEY, begin, code_in, submit_for_review, totp_now
from tests.support.directory_service import TOKEN, DirectoryService

ADMIN = 900
BEING_APPLIED = "is being applied to your Acme account"
CANNOT_CHECK = "We cannot check this with Acme right now"


@pytest.fixture
async def service(clock: FakeClock) -> AsyncIterator[DirectoryService]:
    async with DirectoryService(token=TOKEN, clock=lambda: clock.now().timestamp()) as running:
        running.add_account("ada@example.com", phone="+15551234534", totp_secret=ADA_TOTP,
                            security_question="What was your first pet's name?", security_answer="Rex")
        running.add_account("ben@example.com", phone="+442071234567", totp_secret=BEN_TOTP, identity_verified=True)
        yield running
    assert not running.violations, "\n".join(map(str, running.violations))


@pytest.fixture
async def desk(db: AsyncEngine, clock: FakeClock, service: DirectoryService) -> AsyncIterator[Bot]:
    settings = FlowSettings(service_name="Acme", secret_key=SECRET_KEY, admin_ids=(ADMIN,))
    client = DirectoryClient(service.url, token=TOKEN, timeout=0.5, cooldown=0)
    bot = await Bot(db, build_engine(settings), clock, ServiceFactory(settings, client)).start()
    yield bot
    await bot.stop()
    await client.close()


def worker(desk: Bot) -> ChangeWorker:
    assert desk.app.change_worker is not None
    return desk.app.change_worker


async def send_changes(desk: Bot) -> int:
    """One pass of the change worker, then the timers it set (what it tells the user)."""
    sent = await worker(desk).send_due()
    await desk.runner.fire_due_timers()
    await desk.runner.settle()
    return sent


async def later(desk: Bot, clock: FakeClock, seconds: float) -> int:
    clock.advance(seconds=seconds)
    return await send_changes(desk)


async def method_one_submitted(chat: Chat) -> list[str]:
    await begin(chat, "Switch to phone verification", "ada@example.com")
    replies = await chat.tap("Get Code")
    await chat.send(code_in(replies, "SMS"))
    await chat.send(code_in(replies, "Email"))
    return said(await chat.tap("Submit"))


async def test_method_one_is_applied_once_the_service_confirms(desk: Bot, service: DirectoryService,
                                                               clock: FakeClock) -> None:
    chat = desk.chat()
    submitted = await method_one_submitted(chat)
    assert any(BEING_APPLIED in line for line in submitted)
    assert not any("withdrawals stay locked until" in line or "Done." in line for line in submitted)
    assert service.applied_changes == []  # nothing reaches the service inside the decision

    assert await send_changes(desk) == 1  # one change per account at a time: the switch, then the lock
    assert await send_changes(desk) == 1
    until = clock.now() + timedelta(hours=48)
    ada = service.accounts["acc_0001"]
    assert [c["kind"] for c in service.changes_for(ada)] == ["switch_to_phone", "lock_withdrawals"]
    assert (ada.two_factor, ada.totp_secret, ada.withdrawals_locked_until) == ("phone", None, until)
    [told] = chat.new_messages()
    assert told.startswith(f"For your safety, withdrawals stay locked until {moment(until, 'en')}.")
    assert "Done. Your account now uses phone verification" in told
    assert await send_changes(desk) == 0
    assert len(service.applied_changes) == 2 and chat.new_messages() == []


async def test_a_service_that_fails_is_retried_with_the_same_key_until_it_confirms(
        desk: Bot, service: DirectoryService, clock: FakeClock) -> None:
    chat = desk.chat()
    await method_one_submitted(chat)
    service.fail_next("changes", status=500)
    service.fail_next("changes", status=503)
    await send_changes(desk)
    assert service.applied_changes == []
    assert await later(desk, clock, 1) == 0  # the retry waits (a backoff of 1 to 2 seconds)
    await later(desk, clock, 2)
    assert service.applied_changes == []
    await later(desk, clock, 4)
    await later(desk, clock, 0)
    keys = [call.idempotency_key for call in service.calls_to("changes")]
    assert keys[0] == keys[1] == keys[2] and keys[2] != keys[3]  # three tries of the switch, then the lock
    assert [c.change["kind"] for c in service.applied_changes] == ["switch_to_phone", "lock_withdrawals"]
    assert "withdrawals stay locked until" in chat.new_messages()[-1]


async def test_a_connection_dropped_after_the_change_was_applied_does_not_apply_it_twice(
        desk: Bot, service: DirectoryService, clock: FakeClock) -> None:
    chat = desk.chat()
    await method_one_submitted(chat)
    service.drop_after_apply_next()
    await send_changes(desk)
    assert [c.change["kind"] for c in service.applied_changes] == ["switch_to_phone"]  # applied, unheard of
    assert not any("withdrawals stay locked" in line for line in chat.new_messages())
    await later(desk, clock, 2)
    await later(desk, clock, 0)
    assert [c.change["kind"] for c in service.applied_changes] == ["switch_to_phone", "lock_withdrawals"]
    assert sum("withdrawals stay locked" in line for line in chat.new_messages()) == 1


async def test_a_crash_between_the_call_and_its_record_repeats_the_call_not_the_change(
        desk: Bot, service: DirectoryService, clock: FakeClock) -> None:
    await method_one_submitted(desk.chat())
    async with desk.store.reading() as tx:
        [first] = await tx.directory_changes.due(clock.now(), 10)
    from flows.changes import change_from_json

    box = desk.app.services.box if desk.app.services else None
    assert box is not None
    await worker(desk).client.apply(first.queued.remote_id, change_from_json(first.queued.change, box),
                                    first.queued.key)  # the call went out; the process died before recording it
    await desk.restart()
    await send_changes(desk)
    await send_changes(desk)
    assert [c.change["kind"] for c in service.applied_changes] == ["switch_to_phone", "lock_withdrawals"]


async def test_a_refused_change_alerts_staff_tells_the_user_and_shows_in_the_case(
        desk: Bot, service: DirectoryService, clock: FakeClock) -> None:
    chat, admin = desk.chat(), desk.chat(user_id=ADMIN)
    await method_one_submitted(chat)
    service.fail_next("changes", status=422)
    chat.new_messages()
    await send_changes(desk)
    [told] = chat.new_messages()
    assert "could not apply the change to your Acme account" in told
    case_id = re.search(r"Case (\S+): the account service refused", admin.last)
    assert case_id is not None and "switch_to_phone" in admin.last
    await send_changes(desk)  # the lock still goes through; the usual message is not sent after a refusal
    assert [c.change["kind"] for c in service.applied_changes] == ["lock_withdrawals"]
    assert chat.new_messages() == []
    shown = await admin.send(f"/case {case_id.group(1)}")
    assert any("switch_to_phone failed (HTTP 422 change_refused)" in line for line in shown)
    assert any("lock_withdrawals applied" in line for line in shown)


async def test_a_slow_lookup_answers_the_same_for_known_and_unknown_emails_and_loses_nothing(
        desk: Bot, service: DirectoryService) -> None:
    known, unknown = desk.chat(user_id=42), desk.chat(user_id=43)
    await known.send("/start")
    await known.tap("Switch to phone verification")
    await unknown.send("/start")
    await unknown.tap("Switch to phone verification")
    service.delay_next("lookup", seconds=2, times=2)
    slow_known = await known.send("ada@example.com")
    slow_unknown = await unknown.send("nobody@example.com")
    assert slow_known == slow_unknown and CANNOT_CHECK in slow_known[0]
    await service.settled()
    assert "Press Get Code" in (await known.send("ada@example.com"))[0]  # the step waited; the case is intact
    assert "Press Get Code" in (await unknown.send("nobody@example.com"))[0]


async def test_an_outage_shows_in_stats(desk: Bot, service: DirectoryService) -> None:
    admin, user = desk.chat(user_id=ADMIN), desk.chat()
    assert any("Account service: answering" in line for line in await admin.send("/stats"))
    await user.send("/start")
    await user.tap("Reset with my backup key")
    service.fail_next("lookup", status=503)
    assert CANNOT_CHECK in (await user.send("ada@example.com"))[0]
    [report] = [line for line in await admin.send("/stats") if "Account service" in line]
    assert "NOT ANSWERING (HTTP 503 unavailable; 1 failed calls in the last hour)" in report


async def test_method_three_checks_the_code_with_the_service(desk: Bot, service: DirectoryService,
                                                             clock: FakeClock) -> None:
    chat = desk.chat()
    await begin(chat, "Reset with my backup key", "ben@example.com")
    await chat.tap("The app is installed")
    await chat.tap("I added it")
    wrong = "000000" if totp_now(BEN_TOTP, clock.now()) != "000000" else "111111"
    assert said(await chat.send(wrong))[0].startswith("That code does not match.")
    assert said(await chat.send(totp_now(BEN_TOTP, clock.now())))[-1].startswith("The code matches")
    assert [call.status for call in service.calls_to("totp")] == [200, 200]


async def test_an_approval_resets_locks_and_enrols_through_the_service(
        desk: Bot, service: DirectoryService, clock: FakeClock) -> None:
    user, admin = desk.chat(), desk.chat(user_id=ADMIN)
    await submit_for_review(user)
    case_id = re.search(r"Review case (\S+)", re.sub("<[^>]+>", "", admin.messages[-1].text))
    assert case_id is not None
    user.new_messages()
    await admin.press(f"r:{case_id.group(1)}:1:approve")
    now_said = user.new_messages()
    assert any(BEING_APPLIED in line for line in now_said)
    assert not any(line.startswith("✅ Good news") for line in now_said)
    [key_message] = [r for r in desk.transport.log if isinstance(r, SendMessage) and "type this key" in r.text]
    secret = re.search(r"<code>([A-Z2-7 ]+)</code>", key_message.text).group(1).replace(" ", "")  # type: ignore[union-attr]
    for _ in range(2):
        await send_changes(desk)  # the reset, then the lock
    assert any(line.startswith("✅ Good news: our staff approved your request.") for line in user.new_messages())
    ben = service.accounts["acc_0002"]
    assert (ben.two_factor, ben.totp_secret) == ("none", None)

    assert BEING_APPLIED in (await user.send(totp_now(secret, clock.now())))[0]
    await send_changes(desk)
    assert (ben.two_factor, ben.totp_secret) == ("totp", secret)
    assert user.new_messages()[-1].startswith("✅ Your new authenticator works.")
    assert [c.change["kind"] for c in service.applied_changes] == [
        "reset_two_factor", "lock_withdrawals", "enrol_authenticator"]
