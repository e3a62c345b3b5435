"""Limits per account, across chats and cases, and replies that never tell whether an email is an account."""

from __future__ import annotations

import statistics
import time

from sqlalchemy import event as sqlalchemy_event
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from flows.clock import FakeClock
from flows.events import ButtonPressed, TextReceived
from flows.store.tables import accounts
from tests.support.chat import Bot, Chat, said
from tests.support.desk import ADA_TOTP, begin, code_in, totp_now
from tests.support.servers import Mailbox, SmsGateway

BACKUP = "Reset with my backup key"
PHONE = "Switch to phone verification"


async def at_backup_code(chat: Chat, email: str = "ada@example.com") -> None:
    await begin(chat, BACKUP, email)
    await chat.tap("The app is installed")
    await chat.tap("I added it")


def wrong_totp(clock: FakeClock) -> str:
    return f"{(int(totp_now(ADA_TOTP, clock.now())) + 1) % 1_000_000:06d}"


async def fail_ten_times(bot: Bot, clock: FakeClock, first_user: int = 61) -> None:
    """Two strangers, in two chats, each use up a case's five authenticator tries on Ada's account."""
    for user_id in (first_user, first_user + 1):
        stranger = bot.chat(user_id=user_id)
        await at_backup_code(stranger)
        for _ in range(5):
            await stranger.send(wrong_totp(clock))


async def test_ten_failures_from_any_chat_pause_the_account_like_an_unknown_email(
    desk: Bot, clock: FakeClock
) -> None:
    await fail_ten_times(desk, clock)
    owner, nobody = desk.chat(user_id=63), desk.chat(user_id=64)
    await at_backup_code(owner)
    await at_backup_code(nobody, "nobody@example.com")
    right = totp_now(ADA_TOTP, clock.now())
    said = await owner.send(right)
    assert said == await nobody.send(right)
    assert said[0].startswith("That code does not match.")
    clock.advance(minutes=61)  # the oldest failure is an hour old: the pause is over
    assert (await owner.send(totp_now(ADA_TOTP, clock.now())))[0].startswith("The code matches")


async def test_a_paused_account_gets_no_real_code(desk: Bot, clock: FakeClock) -> None:
    await fail_ten_times(desk, clock)
    owner, nobody = desk.chat(user_id=63), desk.chat(user_id=64)
    await begin(owner, PHONE, "ada@example.com")
    await begin(nobody, PHONE, "nobody@example.com")
    assert await owner.tap("Get Code") == await nobody.tap("Get Code")  # no code shown to either


async def test_the_pause_survives_a_restart(desk: Bot, clock: FakeClock) -> None:
    await fail_ten_times(desk, clock)
    await desk.restart()
    owner = desk.chat(user_id=63)
    await at_backup_code(owner)
    assert (await owner.send(totp_now(ADA_TOTP, clock.now())))[0].startswith("That code does not match.")


async def test_the_owner_is_emailed_at_most_once_a_day(
    desk_with_channels: Bot, clock: FakeClock, mailbox: Mailbox, gateway: SmsGateway
) -> None:
    await fail_ten_times(desk_with_channels, clock)
    [notice] = mailbox.received
    assert notice.rcpt_tos == ["ada@example.com"]
    assert mailbox.message(0)["Subject"] == "Recovery of your Acme account is paused"
    for user_id in (65, 66):  # failures during the pause, then a new pause an hour later
        more = desk_with_channels.chat(user_id=user_id)
        await at_backup_code(more)
        for _ in range(5):
            await more.send(wrong_totp(clock))
        clock.advance(minutes=61)
    assert len(mailbox.received) == 1


async def test_fifty_failures_in_a_day_pause_the_account_for_the_day(desk: Bot, clock: FakeClock) -> None:
    for round_ in range(5):
        await fail_ten_times(desk, clock, first_user=100 + 2 * round_)
        clock.advance(minutes=61)
    owner = desk.chat(user_id=63)
    await at_backup_code(owner)
    assert (await owner.send(totp_now(ADA_TOTP, clock.now())))[0].startswith("That code does not match.")
    clock.advance(hours=20)
    assert (await owner.send(totp_now(ADA_TOTP, clock.now())))[0].startswith("The code matches")


async def test_an_account_without_a_phone_answers_like_an_unknown_email(desk: Bot, db: AsyncEngine) -> None:
    async with db.begin() as conn:
        await conn.execute(update(accounts).where(accounts.c.email == "ben@example.com").values(phone=None))
    known, nobody = desk.chat(user_id=1), desk.chat(user_id=2)
    assert await begin(known, PHONE, "ben@example.com") == await begin(nobody, PHONE, "nobody@example.com")
    replies = await known.tap("Get Code")
    assert said([r for r in replies if "Email to" not in r]) == said(await nobody.tap("Get Code"))
    assert await known.send("123456") == await nobody.send("123456")


async def test_a_spent_quota_answers_like_an_unknown_email(desk: Bot, clock: FakeClock) -> None:
    stranger, nobody = desk.chat(user_id=1), desk.chat(user_id=2)
    await begin(stranger, PHONE, "ada@example.com")
    await begin(nobody, PHONE, "nobody@example.com")
    for chat in (stranger, nobody):
        await chat.tap("Get Code")
    for _ in range(2):  # three real codes of each factor to this requester in an hour
        clock.advance(seconds=61)
        await stranger.tap("Get new codes")
        await nobody.tap("Get new codes")
    clock.advance(seconds=61)
    assert await stranger.tap("Get new codes") == await nobody.tap("Get new codes")  # decoys only
    assert await stranger.send("123456") == await nobody.send("123456")


async def test_the_owner_who_asks_for_new_codes_gets_real_ones(desk: Bot, clock: FakeClock) -> None:
    owner = desk.chat()
    await begin(owner, PHONE, "ada@example.com")
    await owner.tap("Get Code")
    clock.advance(seconds=61)
    replies = await owner.tap("Get new codes")
    await owner.send(code_in(replies, "SMS"))
    assert said(await owner.send(code_in(replies, "Email")))[0] == "Both codes are right."


async def test_a_stranger_cannot_spend_the_owners_codes(desk: Bot, clock: FakeClock) -> None:
    stranger, owner = desk.chat(user_id=1), desk.chat(user_id=2)
    await begin(stranger, PHONE, "ada@example.com")
    await stranger.tap("Get Code")
    for _ in range(5):
        clock.advance(seconds=61)
        await stranger.tap("Get new codes")
    await begin(owner, PHONE, "ada@example.com")
    replies = await owner.tap("Get Code")
    assert said(await owner.send(code_in(replies, "SMS")))[0] == "The SMS code is right."


async def press_measured(bot: Bot, chat: Chat, label: str) -> tuple[float, list[str]]:
    """Press a button; how long its transaction took and which statements it ran (their SQL, no values)."""
    shown, button = chat.button(label)
    event = ButtonPressed(chat.key(), chat.sender, button.data, shown.message_id, callback_id="cb")
    statements: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    sqlalchemy_event.listen(bot.db.sync_engine, "before_cursor_execute", record)
    try:
        started = time.perf_counter()
        await bot.runner.handle(event)
        elapsed = time.perf_counter() - started
    finally:
        sqlalchemy_event.remove(bot.db.sync_engine, "before_cursor_execute", record)
    await bot.runner.settle()
    return elapsed, statements


async def test_sending_codes_takes_the_same_work_for_known_and_unknown_emails(
    desk: Bot, clock: FakeClock
) -> None:
    known, nobody = desk.chat(user_id=1), desk.chat(user_id=2)
    await begin(known, PHONE, "ada@example.com")
    await begin(nobody, PHONE, "nobody@example.com")
    await known.tap("Get Code")
    await nobody.tap("Get Code")
    gaps = []
    for _ in range(3):  # a loaded machine can blur one round; a real difference shows in every round
        medians, work = await timed_rounds(desk, clock, known, nobody, tries=200)
        # The same statements in the same order (the outbox rows of a real code's own message go in the same one).
        assert work["known"] == work["unknown"]
        gaps.append(abs(medians["known"] - medians["unknown"]))
        if gaps[-1] < 2.0:
            return
    raise AssertionError(f"known and unknown medians differ by {gaps} ms")


async def timed_rounds(
    bot: Bot, clock: FakeClock, known: Chat, nobody: Chat, tries: int
) -> tuple[dict[str, float], dict[str, list[str]]]:
    """Press "Get new codes" `tries` times in each chat, alternating who goes first: medians in ms, statements."""
    timings: dict[str, list[float]] = {"known": [], "unknown": []}
    work: dict[str, list[str]] = {}
    for attempt in range(tries):
        clock.advance(minutes=61)  # past the cooldown and the hourly limits: real codes each time
        pair = [("known", known), ("unknown", nobody)]
        for name, chat in pair if attempt % 2 else reversed(pair):
            elapsed, work[name] = await press_measured(bot, chat, "Get new codes")
            timings[name].append(elapsed)
    return {name: statistics.median(values) * 1000 for name, values in timings.items()}, work


async def send_measured(bot: Bot, chat: Chat, text: str) -> list[str]:
    """Send a message; the statements its transaction ran (their SQL, no values)."""
    statements: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    sqlalchemy_event.listen(bot.db.sync_engine, "before_cursor_execute", record)
    try:
        await bot.runner.handle(TextReceived(chat.key(), chat.sender, text))
    finally:
        sqlalchemy_event.remove(bot.db.sync_engine, "before_cursor_execute", record)
    await bot.runner.settle()
    return statements


async def test_a_wrong_code_takes_the_same_work_for_known_and_unknown_emails(desk: Bot) -> None:
    known, nobody = desk.chat(user_id=1), desk.chat(user_id=2)
    for chat, email in ((known, "ada@example.com"), (nobody, "nobody@example.com")):
        await begin(chat, PHONE, email)
        await chat.tap("Get Code")
    for _ in range(3):
        assert await send_measured(desk, known, "000000") == await send_measured(desk, nobody, "000000")
    known, nobody = desk.chat(user_id=3), desk.chat(user_id=4)
    for chat, email in ((known, "ada@example.com"), (nobody, "nobody@example.com")):
        await at_backup_code(chat, email)
    for _ in range(3):
        assert await send_measured(desk, known, "000000") == await send_measured(desk, nobody, "000000")
