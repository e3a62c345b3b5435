"""Durable timers, with a moved clock: code expiry, silence, lockouts, review SLA, restarts and crashes."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from flows.clock import FakeClock
from flows.events import FileInfo
from flows.model import Context, Outcome, Say
from flows.runner import Runner
from flows.store import tables
from flows.store.database import SqlStore, open_database
from flows.texts import Text
from tests.support.chat import Bot, Chat, RecordingTransport, said
from tests.support.desk import begin, code_in, request_codes

pytestmark = pytest.mark.both_backends  # the engine's guarantees must hold on either database


async def fire(bot: Bot, chat: Chat) -> list[str]:
    """Fire whatever timers are due and return what the chat received."""
    chat.new_messages()
    await bot.runner.fire_due_timers()
    await bot.runner.settle()
    return chat.new_messages()


async def test_codes_remind_five_minutes_before_and_offer_new_ones_at_expiry(desk: Bot, clock: FakeClock) -> None:
    chat = desk.chat()
    await begin(chat, "Switch to phone verification", "ada@example.com")
    await chat.tap("Get Code")
    clock.advance(minutes=24)
    assert await fire(desk, chat) == []
    clock.advance(minutes=1)
    assert await fire(desk, chat) == ["⏳ Your code expires at 12:30 UTC. Send it before then, or ask for a new one."]
    clock.advance(minutes=5)
    assert await fire(desk, chat) == ["⌛ Your code has expired. Press the button below to get a new one.",
                                      "Send me the 6-digit code from the SMS."]
    assert chat.buttons == ["Get new codes", "I no longer have this phone"]
    fresh = code_in(await chat.tap("Get new codes"))
    assert said(await chat.send(fresh))[0] == "The SMS code is right."


async def test_a_new_code_replaces_the_old_timers(desk: Bot, clock: FakeClock) -> None:
    chat = desk.chat()
    await begin(chat, "Switch to phone verification", "ada@example.com")
    await chat.tap("Get Code")
    clock.advance(minutes=10)
    await chat.tap("Get new codes")
    clock.advance(minutes=20)  # the first code's expiry: no message, the new code is valid until 12:40
    assert await fire(desk, chat) == []
    async with desk.db.connect() as conn:
        pending = (await conn.execute(select(func.count()).select_from(tables.timers)
                                      .where(tables.timers.c.fired_at.is_(None), tables.timers.c.kind.like("codes%"))))
        assert pending.scalar_one() == 2


async def test_a_timer_for_a_case_that_moved_on_is_dropped(desk: Bot, clock: FakeClock) -> None:
    chat = desk.chat()
    await begin(chat, "Switch to phone verification", "ada@example.com")
    replies = await chat.tap("Get Code")
    await chat.send(code_in(replies, "SMS"))
    await chat.send(code_in(replies, "Email"))
    clock.advance(minutes=31)
    assert await fire(desk, chat) == []


async def test_method_two_code_timers_follow_the_case_from_phone_to_email(desk: Bot, clock: FakeClock) -> None:
    chat = desk.chat()
    replies = await request_codes(chat, "ada@example.com", "Email address")
    await chat.send(code_in(replies, "SMS"))
    clock.advance(minutes=30)
    assert await fire(desk, chat) == ["⏳ Your code expires at 12:30 UTC. Send it before then, or ask for a new one.",
                                      "⌛ Your code has expired. Press the button below to get a new one.",
                                      "Now send me the code from the email."]  # two timers: two events


async def test_silence_brings_a_nudge_then_the_case_is_abandoned(desk: Bot, clock: FakeClock) -> None:
    chat = desk.chat()
    await begin(chat, "Reset with my backup key", "ada@example.com")
    clock.advance(minutes=59)
    assert await fire(desk, chat) == []
    clock.advance(minutes=1)
    [nudge] = await fire(desk, chat)
    assert nudge.startswith("Are you still there?") and chat.buttons == ["Continue"]
    [again] = await chat.tap("Continue")
    assert again.startswith("Step 1: install the authenticator app again.")
    clock.advance(hours=23, minutes=59)  # the tap was activity: the clock of silence starts again
    assert await fire(desk, chat) == ["Are you still there? Your recovery is waiting where you left it. "
                                      "Press Continue to see the current step again."]
    clock.advance(minutes=1)
    [closed] = await fire(desk, chat)
    assert closed.startswith("Your recovery was closed after a day without activity.")
    assert (await chat.send("/status"))[0].startswith("You have no recovery in progress.")


async def test_a_case_in_review_gets_no_nudges_and_admins_are_reminded_once(desk: Bot, clock: FakeClock) -> None:
    from tests.unit.test_method_reverify import pass_codes

    chat = desk.chat()
    await pass_codes(chat, "ben@example.com")
    await chat.tap("Send")
    await chat.tap("Next")
    await chat.send_file(FileInfo("s", "us", "photo", 10))
    await chat.tap("Submit for review")
    clock.advance(hours=23)
    assert await fire(desk, chat) == []
    clock.advance(hours=1)
    await fire(desk, chat)
    def reminders() -> list[object]:
        return [r for r in desk.transport.log if getattr(r, "chat_id", None) in (900, 901)
                and "waiting for review for more than 24 hours" in getattr(r, "text", "")]

    assert len(reminders()) == 2
    clock.advance(hours=48)
    await fire(desk, chat)
    assert len(reminders()) == 2


async def test_lockout_end_is_announced(desk: Bot, clock: FakeClock) -> None:
    chat = desk.chat()
    await begin(chat, "Switch to phone verification", "ada@example.com")
    code = code_in(await chat.tap("Get Code"))
    for _ in range(5):
        await chat.send(f"{(int(code) + 1) % 1_000_000:06d}")
    assert "New codes are paused until Jan 5, 2026 12:15 UTC (in 15 minutes)." in (await chat.send("/status"))[0]
    clock.advance(minutes=15)
    messages = said(await fire(desk, chat))
    assert messages[0] == "The pause is over: you can ask for a new code now."


async def test_detached_timer_fires_even_after_the_case_closed(desk: Bot, clock: FakeClock) -> None:
    chat = desk.chat()
    await chat.send("/start")
    await chat.send("/cancel")
    await chat.tap("Yes, cancel it")
    async with desk.db.begin() as conn:
        await conn.execute(tables.timers.insert().values(
            case_id="x" * 12, user_id=42, chat_id=42, step=None, kind="withdrawals_unlocked", payload={},
            due_at=clock.now() + timedelta(hours=48)))
    clock.advance(hours=48)
    assert await fire(desk, chat) == ["✅ The withdrawal lock on your Acme account has ended: withdrawals are "
                                      "enabled again."]


async def test_timers_due_while_down_fire_on_start_in_due_order_and_are_logged_late(
    desk: Bot, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = desk.chat(user_id=1), desk.chat(user_id=2)
    await begin(second, "Switch to phone verification", "ada@example.com")
    await second.tap("Get Code")
    clock.advance(minutes=1)
    await begin(first, "Switch to phone verification", "ben@example.com")
    await first.tap("Get Code")
    await desk.stop()
    clock.advance(hours=2)
    await desk.start()
    with caplog.at_level(logging.INFO, logger="flows.runner"):
        await desk.runner.fire_due_timers()
        await desk.runner.settle()
    # The order the timers' replies were committed in (the two chats are then delivered to at the same time).
    async with desk.db.connect() as conn:
        rows = (await conn.execute(select(tables.outbox.c.chat_id, tables.outbox.c.payload)
                                   .order_by(tables.outbox.c.id))).all()
    fired = [(chat_id, str(payload.get("text", ""))[:9]) for chat_id, payload in rows
             if str(payload.get("text", "")).startswith(("⏳", "⌛"))]
    assert fired[:2] == [(2, "⏳ Your co"), (1, "⏳ Your co")]  # in due order: the second chat's codes are older
    assert any("fires" in record.message and "late" in record.message for record in caplog.records)


class HangingAction:
    """A timer handler that never finishes: the process dies with the timer claimed but not committed."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()

    async def __call__(self, ctx: Context) -> Outcome:
        self.entered.set()
        await asyncio.Event().wait()
        return Say()


async def test_a_crash_between_claim_and_commit_fires_once_after_restart(
    db: AsyncEngine, db_url: str, clock: FakeClock
) -> None:
    from flows.engine import Engine
    from flows.model import Flow, Step

    async def announce(ctx: Context) -> Outcome:
        return Say(say=(Text("engine.use_buttons"),))

    flow = Flow("f", "f", "s", (Step("s", "engine.no_case"),))
    async with db.begin() as conn:
        await conn.execute(tables.timers.insert().values(case_id="c" * 12, user_id=5, chat_id=5, step=None,
                                                        kind="ping", payload={}, due_at=clock.now()))
    hang = HangingAction()
    doomed = Runner(SqlStore(db), Engine({"f": flow}, {}, timer_handlers={"ping": hang}), RecordingTransport(), clock)
    await doomed.start()
    firing = asyncio.create_task(doomed.fire_due_timers())
    await hang.entered.wait()
    firing.cancel()
    assert doomed._writer is not None
    doomed._writer.cancel()  # the crash: the transaction is abandoned mid-way and rolled back
    await asyncio.gather(firing, doomed._writer, return_exceptions=True)
    await doomed.dispatcher.stop()

    fresh_db = open_database(db_url)
    transport = RecordingTransport()
    survivor = Runner(SqlStore(fresh_db), Engine({"f": flow}, {}, timer_handlers={"ping": announce}), transport, clock)
    await survivor.start()
    assert await survivor.fire_due_timers() == 1
    assert await survivor.fire_due_timers() == 0
    await survivor.settle()
    assert [getattr(r, "text", "") for r in transport.log] == ["Please choose one of the buttons below."]
    await survivor.stop()
    await fresh_db.dispose()


async def test_status_counts_down_a_withdrawal_lock_once_the_codes_proved_the_owner(
    desk: Bot, clock: FakeClock
) -> None:
    from sqlalchemy import update

    from flows.store.tables import accounts

    async with desk.db.begin() as conn:
        await conn.execute(update(accounts).where(accounts.c.email == "ada@example.com")
                           .values(withdrawals_locked_until=clock.now() + timedelta(hours=47, minutes=30)))
    stranger, owner = desk.chat(user_id=1), desk.chat(user_id=2)
    for chat in (stranger, owner):
        await begin(chat, "Switch to phone verification", "ada@example.com")
    assert "Withdrawals are locked" not in (await stranger.send("/status"))[0]
    await owner.send(code_in(await owner.tap("Get Code")))
    status = (await owner.send("/status"))[0]
    assert "Withdrawals are locked until Jan 7, 2026 11:30 UTC (in 1 day, 23 hours)." in status
