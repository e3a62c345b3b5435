"""Method 1 — Switch to phone verification, as a user lives it."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from flows.clock import FakeClock
from flows.store.tables import CodeRow
from tests.support.chat import Bot
from tests.support.desk import account, begin, code_in

METHOD = "Switch to phone verification"



async def test_start_greets_warns_and_offers_three_methods(desk: Bot) -> None:
    chat = desk.chat()
    [greeting] = await chat.send("/start")
    assert "Acme account recovery desk" in greeting
    assert "never asks for your password, a 2FA code or your backup key" in greeting
    assert chat.buttons == [METHOD, "Security Check Not Available", "Reset with my backup key"]


async def test_happy_path_switches_the_account_to_phone(desk: Bot, db: AsyncEngine) -> None:
    chat = desk.chat()
    assert await begin(chat, METHOD, "Ada@Example.com ") == [
        "Press Get Code and we will send a 6-digit code by SMS to the phone number on file."]
    replies = await chat.tap("Get Code")
    assert "SMS to +1•••••34:" in replies[1] and "Never share this code" in replies[1]
    assert replies[-1] == "Send me the 6-digit code from the SMS."
    assert await chat.send(code_in(replies)) == [
        "The code is right.", "Press Submit to switch your account to phone verification."]
    [done] = await chat.tap("Submit")
    assert done.startswith("Done. Your account now uses phone verification")
    assert (await account(db, "ada@example.com")).two_factor == "phone"  # type: ignore[attr-defined]


async def test_wrong_codes_count_down_then_lock_and_offer_method_two(desk: Bot) -> None:
    chat = desk.chat()
    await begin(chat, METHOD, "ada@example.com")
    code = code_in(await chat.tap("Get Code"))
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    assert (await chat.send(wrong))[0] == "That code is not right. You have 4 tries left."
    for _ in range(3):
        await chat.send(wrong)
    assert (await chat.send(wrong))[0].startswith("Too many wrong codes.")
    assert "Security Check Not Available" in chat.buttons
    await chat.tap("Security Check Not Available")
    assert "withdrawals will be disabled for 48 hours" in chat.last


async def test_expired_code_offers_a_new_one(desk: Bot, clock: FakeClock) -> None:
    chat = desk.chat()
    await begin(chat, METHOD, "ada@example.com")
    code = code_in(await chat.tap("Get Code"))
    clock.advance(minutes=31)
    assert (await chat.send(code))[0] == "That code has expired. Press the button to get a new one."
    fresh = code_in(await chat.tap("Get a new code"))
    assert (await chat.send(fresh))[0] == "The code is right."


async def test_resend_within_the_cooldown_says_when(desk: Bot, clock: FakeClock) -> None:
    chat = desk.chat()
    await begin(chat, METHOD, "ada@example.com")
    first = code_in(await chat.tap("Get Code"))
    clock.advance(seconds=20)
    wait = "A code was sent a moment ago. You can ask for a new one in 41 seconds."
    assert (await chat.tap("Get a new code"))[0] == wait
    clock.advance(seconds=41)
    second = code_in(await chat.tap("Get a new code"))
    assert (await chat.send(first))[0] == "That code is not right. You have 4 tries left."
    assert (await chat.send(second))[0] == "The code is right."


async def test_lost_phone_goes_to_method_two(desk: Bot) -> None:
    chat = desk.chat()
    await begin(chat, METHOD, "ada@example.com")
    await chat.tap("I no longer have this phone")
    assert "withdrawals will be disabled" in chat.last


async def test_unknown_email_gets_the_same_replies_and_no_code(desk: Bot, db: AsyncEngine) -> None:
    known, unknown = desk.chat(user_id=1), desk.chat(user_id=2)
    assert await begin(known, METHOD, "ada@example.com") == await begin(unknown, METHOD, "nobody@example.com")
    known_replies = await known.tap("Get Code")
    unknown_replies = await unknown.tap("Get Code")
    without_sms = [r for r in known_replies if "SMS to" not in r]
    assert without_sms == unknown_replies
    wrong = f"{(int(code_in(known_replies)) + 1) % 1_000_000:06d}"
    assert await unknown.send(wrong) == await known.send(wrong)
    async with db.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(CodeRow))).scalar_one() == 1


async def test_after_a_lockout_new_codes_wait_fifteen_minutes(desk: Bot, clock: FakeClock) -> None:
    chat = desk.chat()
    await begin(chat, METHOD, "ada@example.com")
    code = code_in(await chat.tap("Get Code"))
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(5):
        await chat.send(wrong)
    clock.advance(minutes=5)
    await chat.tap("Ask for a new code")
    assert (await chat.tap("Get Code"))[0] == (
        "For your safety, new codes are paused after too many wrong ones. You can ask again after 12:15 UTC.")
    clock.advance(minutes=11)
    fresh = code_in(await chat.tap("Get Code"))
    assert (await chat.send(fresh))[0] == "The code is right."


async def test_the_hourly_code_limit_answers_like_any_send(desk: Bot, clock: FakeClock, db: AsyncEngine) -> None:
    known, unknown = desk.chat(user_id=1), desk.chat(user_id=2)
    await begin(known, METHOD, "ada@example.com")
    await begin(unknown, METHOD, "nobody@example.com")
    for attempt in range(6):
        said_known = await known.tap("Get")
        said_unknown = await unknown.tap("Get")
        if attempt == 5:  # the 6th code in an hour is not sent, and nothing says so
            assert said_known == said_unknown
        clock.advance(seconds=61)
    async with db.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(CodeRow))).scalar_one() == 5
