"""A user who blocked the bot and unblocks it is told where their case stands: nothing said to them while the
bot was blocked reached them (the outbox skips a blocked chat's messages)."""

from __future__ import annotations

import re

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from flows.clock import FakeClock
from flows.events import ChatReturned
from flows.replies import SendMessage
from tests.support.chat import Bot, Chat
from tests.support.desk import totp_now
from tests.test_review import ADMIN, case_data, enrolling, submitted_case

pytestmark = pytest.mark.both_backends


async def comes_back(desk: Bot, user: Chat) -> list[str]:
    """The user unblocks the bot (Telegram's my_chat_member update)."""
    return await desk.feed(user, ChatReturned(user.key(), user.sender))


def newest_key(desk: Bot) -> str:
    keys = [r for r in desk.transport.log if isinstance(r, SendMessage) and "type this key" in r.text]
    found = re.search(r"<code>([A-Z2-7 ]+)</code>", keys[-1].text)
    assert found is not None
    return found.group(1).replace(" ", "")


async def test_back_during_the_enrolment_they_hear_the_decision_and_get_the_key_again(
        desk: Bot, db: AsyncEngine, clock: FakeClock) -> None:
    user, case_id, key = await enrolling(desk, db)
    await user.send("123456")  # one wrong try before they went away
    said = "\n".join(await comes_back(desk, user))
    assert "our staff approved your request" in said and "withdrawals are locked for 48 hours" in said
    assert "the key for your new authenticator again" in said and "Add the new key to your authenticator" in said
    assert newest_key(desk) == key  # the same key: one scanned before still works
    assert (await case_data(db, case_id))["enrol_wrong"] == 1
    assert (await user.send(totp_now(key, clock.now())))[0].startswith("✅ Your new authenticator works.")


async def test_a_new_key_on_request_replaces_the_one_waiting(desk: Bot, db: AsyncEngine, clock: FakeClock) -> None:
    user, case_id, first_key = await enrolling(desk, db)
    await user.send("123456")
    await user.tap("Send me a new key")
    second_key = newest_key(desk)
    assert second_key != first_key
    assert (await case_data(db, case_id))["enrol_wrong"] == 1  # a new key does not give the tries back
    assert (await user.send(totp_now(first_key, clock.now())))[0].startswith("That code does not match")
    assert (await user.send(totp_now(second_key, clock.now())))[0].startswith("✅ Your new authenticator works.")


async def test_back_after_a_rejection_they_hear_it_with_the_reason(desk: Bot, clock: FakeClock) -> None:
    user, admin = desk.chat(user_id=42), desk.chat(user_id=ADMIN)
    case_id = await submitted_case(desk, user)
    await admin.send(f"/reject {case_id} The selfie is blurred")
    said = "\n".join(await comes_back(desk, user))
    assert "While you were away" in said and "We could not approve" in said and "The selfie is blurred" in said
    clock.advance(days=31)
    assert await comes_back(desk, user) == []  # a month on, the old decision is not news


async def test_back_while_staff_review_they_hear_it_is_still_waiting(desk: Bot) -> None:
    user = desk.chat(user_id=42)
    await submitted_case(desk, user)
    said = await comes_back(desk, user)
    assert len(said) == 1 and "still with our staff" in said[0]


async def test_back_in_the_middle_of_a_method_they_see_where_they_left_off(desk: Bot) -> None:
    user = desk.chat(user_id=42)
    await user.send("/start")
    await user.tap("Switch to phone verification")
    said = "\n".join(await comes_back(desk, user))
    assert "Welcome back" in said and "Switch to phone verification" in said
    assert user.last.startswith("Which email address is your")  # the step's prompt again


async def test_back_with_nothing_open_nothing_is_said(desk: Bot) -> None:
    user = desk.chat(user_id=42)
    assert await comes_back(desk, user) == []
    await user.send("/start")
    await user.tap("Switch to phone verification")
    await user.send("/cancel")
    await user.tap("Yes, cancel it")
    assert await comes_back(desk, user) == []
