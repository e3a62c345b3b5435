"""The engine and runner, on a real SQLite database, through a small flow: ask a name, confirm, done."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from flows.clock import FakeClock
from flows.leases import LEASE
from flows.replies import Reply, SendMessage
from flows.runner import Runner
from flows.store import tables
from flows.store.database import SqlStore, open_database
from tests.engine_flow import make_engine
from tests.support.chat import Bot, Chat, RecordingTransport, kill_delivery

pytestmark = pytest.mark.both_backends  # the engine's guarantees must hold on either database


@pytest.fixture
async def bot(db: AsyncEngine, clock: FakeClock) -> AsyncIterator[Bot]:
    bot = await Bot(db, make_engine(), clock).start()
    yield bot
    await bot.stop()


async def case_row(db: AsyncEngine) -> Any:
    async with db.connect() as conn:
        return (await conn.execute(select(tables.cases).order_by(tables.cases.c.created_at.desc()))).first()


async def count(db: AsyncEngine, table: Any) -> int:
    async with db.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def test_happy_path(bot: Bot, db: AsyncEngine) -> None:
    chat = bot.chat()
    assert await chat.send("/start") == ["What is your name?"]
    assert await chat.send("Ada") == ["Is Ada right?"]
    assert chat.buttons == ["Yes", "No", "Break"]
    await chat.tap("Yes")
    assert chat.messages[-2].text == "Is Ada right?\n\n✔ Yes"
    assert chat.messages[-2].buttons == ()
    assert chat.last == "Thanks!"
    row = await case_row(db)
    assert (row.step, row.status, row.data) == ("done", "completed", {"name": "Ada"})
    assert chat.last_answer == ""


async def test_invalid_input_reprompts_and_changes_nothing(bot: Bot, db: AsyncEngine) -> None:
    chat = bot.chat()
    await chat.send("/start")
    before = await case_row(db)
    assert await chat.send("R2-D2 !!") == ["Please answer with a text message.\n\nWhat is your name?"]  # one message
    assert await case_row(db) == before


async def test_text_where_buttons_are_expected(bot: Bot, db: AsyncEngine) -> None:
    chat = bot.chat()
    await chat.send("/start")
    await chat.send("Ada")
    before = await case_row(db)
    assert await chat.send("yes") == ["Please choose one of the buttons below.", "Is Ada right?"]
    assert chat.buttons == ["Yes", "No", "Break"]  # the prompt again, with its buttons, a message of its own
    assert await case_row(db) == before
    await chat.tap("Yes")
    assert chat.last == "Thanks!"


async def test_text_without_a_case_and_unknown_command(bot: Bot) -> None:
    chat = bot.chat()
    assert await chat.send("hello") == ["There is no recovery in progress. Send /start to begin."]
    assert await chat.send("/frobnicate") == ["I don't know that command. Send /help to see what I can do."]


async def test_same_update_twice_acts_once(bot: Bot, db: AsyncEngine) -> None:
    chat = bot.chat()
    await chat.send("/start")
    assert await chat.send("Ada", key="tg:777") == ["Is Ada right?"]
    outbox_before, row_before = await count(db, tables.outbox), await case_row(db)
    assert await chat.send("Bob", key="tg:777") == []
    assert await count(db, tables.outbox) == outbox_before
    assert await case_row(db) == row_before


async def test_same_update_twice_in_one_batch_acts_once(bot: Bot, db: AsyncEngine) -> None:
    chat = bot.chat()
    await chat.send("/start")
    await asyncio.gather(chat.send("Ada", key="tg:9"), chat.send("Ada", key="tg:9"))
    assert [m.text for m in chat.messages].count("Is Ada right?") == 1


async def test_stale_button_expires_and_changes_nothing(bot: Bot, db: AsyncEngine) -> None:
    chat = bot.chat()
    await chat.send("/start")
    await chat.send("Ada")
    old_message, old_no = chat.button("No")
    await chat.tap("No")
    await chat.send("Bob")
    before, sent = await case_row(db), len(bot.transport.log)
    assert await chat.press(old_no.data, old_message.message_id) == []
    assert chat.last_answer == "This button has expired."
    assert await case_row(db) == before
    assert len(bot.transport.log) == sent + 1  # only the answer to the button press


@pytest.mark.parametrize(
    "forge",
    [
        lambda data: "not-even-close",
        lambda data: data.replace(":yes", ":admin"),
        lambda data: "AAAAAAAAAAAA" + data[12:],
        lambda data: data.rsplit(":", 2)[0] + ":99:yes",
        lambda data: data + "x" * 100,
    ],
    ids=["garbage", "unknown-choice", "other-case", "wrong-turn", "oversized"],
)
async def test_forged_button_expires_and_changes_nothing(bot: Bot, db: AsyncEngine, forge: Any) -> None:
    chat = bot.chat()
    await chat.send("/start")
    await chat.send("Ada")
    _, yes = chat.button("Yes")
    before = await case_row(db)
    assert await chat.press(forge(yes.data)) == []
    assert chat.last_answer == "This button has expired."
    assert await case_row(db) == before


async def test_someone_elses_button_is_refused(bot: Bot, db: AsyncEngine) -> None:
    alice, mallory = bot.chat(user_id=1), bot.chat(user_id=2)
    await alice.send("/start")
    await alice.send("Ada")
    _, yes = alice.button("Yes")
    alice_case = await case_row(db)
    await mallory.send("/start")
    assert await mallory.press(yes.data) == []
    assert mallory.last_answer == "This button has expired."
    async with db.connect() as conn:
        query = select(tables.cases).where(tables.cases.c.id == alice_case.id)
        assert (await conn.execute(query)).first() == alice_case
    assert alice.buttons == ["Yes", "No", "Break"]


async def test_restart_between_steps_continues_the_case(bot: Bot) -> None:
    chat = bot.chat()
    await chat.send("/start")
    await chat.send("Ada")
    await bot.restart()
    await chat.tap("Yes")
    assert chat.last == "Thanks!"


async def test_concurrent_events_for_one_chat_never_interleave(bot: Bot, db: AsyncEngine) -> None:
    chat = bot.chat()
    await chat.send("/start")
    await chat.send("Ada")
    message, yes = chat.button("Yes")
    await asyncio.gather(*(chat.press(yes.data, message.message_id) for _ in range(5)))
    assert [m.text for m in chat.messages].count("Thanks!") == 1
    assert [a.text for a in bot.transport.answers].count("This button has expired.") == 4


async def test_two_runners_on_one_database_serialise_writes(db: AsyncEngine, db_url: str, clock: FakeClock) -> None:
    """Two desks on one database (two instances): presses of one chat's Yes and No, one on each desk at the same
    moment, in many chats. Each chat's case moves once; the other press finds its button expired."""
    second_db = open_database(db_url)
    telegram = RecordingTransport()
    first = await Bot(db, make_engine(), clock, transport=telegram).start()
    second = await Bot(second_db, make_engine(), clock, transport=telegram).start()
    try:
        for user_id in range(100, 120):
            chat = first.chat(user_id)
            await chat.send("/start")
            await chat.send("Ada")
            await second.runner.settle()  # on a shared store, the other desk's sweep may have sent the prompt
            _, yes = chat.button("Yes")
            _, no = chat.button("No")
            before = len(telegram.answers)
            other = second.chat(user_id)
            await asyncio.gather(*(c.press(b.data) for c in (chat, other) for b in (yes, no, yes)))
            await first.runner.settle()
            await second.runner.settle()
            outcomes = [a.text for a in telegram.answers[before:]]
            assert sorted(outcomes) == [""] + ["This button has expired."] * 5, (user_id, outcomes)
    finally:
        await first.stop()
        await second.stop()
        await second_db.dispose()


async def test_commands_close_and_reopen_cases(bot: Bot, db: AsyncEngine) -> None:
    chat = bot.chat()
    await chat.send("/start")
    assert await chat.send("/cancel") == ["Cancelled."]
    assert (await case_row(db)).status == "cancelled"
    assert await chat.send("Ada") == ["There is no recovery in progress. Send /start to begin."]
    await chat.send("/start")
    await chat.send("/start")
    async with db.connect() as conn:
        statuses = sorted((await conn.execute(select(tables.cases.c.status))).scalars())
    assert statuses == ["cancelled", "open", "replaced"]


async def test_a_failing_action_answers_and_is_not_retried(bot: Bot, db: AsyncEngine) -> None:
    chat = bot.chat()
    await chat.send("/start")
    await chat.send("Ada")
    await chat.tap("Break")
    assert chat.last.startswith("Sorry, something went wrong on our side.")
    assert (await case_row(db)).step == "confirm"
    await chat.tap("Yes")
    assert chat.last == "Thanks!"


def kill(runner: Runner, clock: FakeClock) -> None:
    """A kill -9: every task of the runner dies where it stands. On PostgreSQL the dead instance's chats are
    taken over once its delivery leases expire: the clock moves past them."""
    assert runner._writer is not None
    runner._writer.cancel()
    if kill_delivery(runner.dispatcher):
        clock.advance(seconds=LEASE.total_seconds())


class HangingTransport(RecordingTransport):
    """Never finishes a delivery: a process killed at this moment has committed but not delivered."""

    async def deliver(self, reply: Reply) -> int | None:
        await asyncio.Event().wait()
        return None


async def test_crash_after_commit_before_delivery_delivers_after_restart(
    db: AsyncEngine, clock: FakeClock
) -> None:
    from flows.events import Sender, TextReceived

    engine = make_engine()
    doomed = Runner(SqlStore(db), engine, HangingTransport(), clock)
    await doomed.start()
    sender = Sender(42, 42, "en")
    from flows.events import CommandReceived

    await doomed.handle(CommandReceived("k1", sender, "start"))
    await doomed.handle(TextReceived("k2", sender, "Ada"))
    kill(doomed, clock)  # the "crash": tasks die where they stand; nothing is flushed or cleaned up

    survivor = Bot(db, engine, clock)
    await survivor.start()
    await survivor.runner.settle()
    chat: Chat = survivor.chat()
    assert [m.text for m in chat.messages] == ["What is your name?", "Is Ada right?"]
    await survivor.restart()
    assert len(survivor.transport.log) == 2  # delivered once, not again on the next start
    await survivor.stop()


class KilledAfter(RecordingTransport):
    """Sends `sends` replies; every send after those hangs: a process killed with those sends in flight."""

    def __init__(self, sends: int) -> None:
        super().__init__()
        self.sends = sends
        self.in_flight: list[Reply] = []
        self.hung = asyncio.Event()

    async def deliver(self, reply: Reply) -> int | None:
        if len(self.log) >= self.sends:
            self.in_flight.append(reply)
            self.hung.set()
            await asyncio.Event().wait()
        sent = await super().deliver(reply)
        assert sent is None or isinstance(sent, int)
        return sent


async def every_chat_left_hangs(replies: list[SendMessage], transport: KilledAfter) -> None:
    """Wait until each chat with replies still to go has one send hanging: the doomed run can do no more."""
    while {r.chat_id for r in transport.in_flight} != {r.chat_id for r in replies if r not in transport.log}:
        transport.hung.clear()
        await transport.hung.wait()


async def test_a_kill_in_the_middle_of_a_group_repeats_only_the_sends_in_flight(
    db: AsyncEngine, db_url: str, clock: FakeClock
) -> None:
    news = [SendMessage(chat, f"news {n} for {chat}") for n in range(1, 11) for chat in (1, 2, 3)]
    async with SqlStore(db).transaction() as tx:
        await tx.outbox.add(news, clock.now())
    doomed_transport = KilledAfter(sends=13)
    doomed = Runner(SqlStore(db), make_engine(), doomed_transport, clock)
    await doomed.start()  # delivers what the outbox holds
    await asyncio.wait_for(every_chat_left_hangs(news, doomed_transport), timeout=10)
    await doomed.dispatcher.chat.recorder.flushed()  # what returned is recorded as it returned
    kill(doomed, clock)  # nothing is flushed or cleaned up

    fresh_db = open_database(db_url)
    transport = RecordingTransport()
    fresh = Runner(SqlStore(fresh_db), make_engine(), transport, clock)
    await fresh.start()
    await fresh.settle()
    await fresh.stop()
    await fresh_db.dispose()

    repeated = [reply for reply in transport.log if reply in doomed_transport.log]
    assert repeated == []  # none of the 13 that returned before the kill goes again
    assert sorted(transport.log, key=str) == sorted(  # the rest go once: those in flight and those after them
        [reply for reply in news if reply not in doomed_transport.log], key=str)
    assert all(reply in transport.log for reply in doomed_transport.in_flight)
    print(f"killed after 13 of 30 sends: {len(doomed_transport.in_flight)} in flight, sent again after the restart;"
          f" {len(repeated)} of the others")
    for chat in (1, 2, 3):
        shown = [r for r in (*doomed_transport.log, *transport.log) if r.chat_id == chat]
        assert shown == [reply for reply in news if reply.chat_id == chat]


async def test_timer_fires_once_and_only_while_the_case_waits(bot: Bot, clock: FakeClock) -> None:
    chat = bot.chat()
    await chat.send("/start")
    await chat.send("Ada")
    assert await bot.runner.fire_due_timers() == 0
    clock.advance(minutes=5)
    chat.new_messages()
    assert await bot.runner.fire_due_timers() == 1
    await bot.runner.settle()
    assert chat.new_messages() == ["Please choose one of the buttons below."]
    assert await bot.runner.fire_due_timers() == 0

    await chat.tap("No")
    await chat.send("Bob")  # a new reminder for the new visit to "confirm"
    await chat.tap("Yes")
    clock.advance(minutes=10)
    assert await bot.runner.fire_due_timers() == 1
    await bot.runner.settle()
    assert chat.new_messages() == []  # the case moved on: dropped without a message


async def test_a_command_may_send_a_case_only_to_a_declared_entry() -> None:
    from datetime import UTC, datetime

    from flows.engine import Engine, FlowError
    from flows.events import CommandReceived, Sender
    from flows.model import Context, Goto, Outcome
    from flows.records import Case
    from tests.engine_flow import SIGNUP

    async def jump(ctx: Context) -> Outcome:
        return Goto("done")  # not an entry of the flow

    engine = Engine({"signup": SIGNUP}, {"jump": jump})
    case = Case("c" * 12, 5, 5, "signup", "ask_name")
    with pytest.raises(FlowError, match="not a declared entry"):
        await engine.decide(CommandReceived("k", Sender(5, 5), "jump"), case, None, datetime(2030, 1, 1, tzinfo=UTC))


async def test_a_timer_applies_at_the_steps_that_handle_its_kind() -> None:
    from datetime import UTC, datetime

    from flows.events import Sender, TextReceived
    from flows.records import Case

    now = datetime(2030, 1, 1, tzinfo=UTC)
    case = Case("c" * 12, 5, 5, "signup", "ask_name")
    decision = await make_engine().decide(TextReceived("k", Sender(5, 5), "Ada"), case, None, now)
    assert [timer.step for timer in decision.timers] == ["confirm"]  # the step with on_timer={"nudge": ...}


async def test_a_timer_no_step_handles_is_refused() -> None:
    from datetime import UTC, datetime, timedelta

    from flows.engine import Engine, FlowError
    from flows.events import CommandReceived, Sender
    from flows.model import Context, Outcome, Stay, TimerSpec
    from flows.records import Case
    from tests.engine_flow import SIGNUP

    async def stray(ctx: Context) -> Outcome:
        return Stay(timers=(TimerSpec("unhandled", ctx.now + timedelta(minutes=1)),))

    engine = Engine({"signup": SIGNUP}, {"stray": stray})
    case = Case("c" * 12, 5, 5, "signup", "ask_name")
    with pytest.raises(FlowError, match="handles a 'unhandled' timer"):
        await engine.decide(CommandReceived("k", Sender(5, 5), "stray"), case, None, datetime(2030, 1, 1, tzinfo=UTC))


async def test_a_step_secret_goes_when_the_case_moves_to_another_step_and_stays_while_it_stays() -> None:
    """Switching method (any move off the step) removes what `Step.secrets` names; staying keeps it."""
    from datetime import UTC, datetime

    from flows.engine import Engine
    from flows.events import Sender, TextReceived
    from flows.model import Accepts, Context, Flow, Goto, Outcome, Step, leads_to
    from flows.records import Case
    from tests.engine_flow import texts_for_tests

    @leads_to("hold", "other")
    async def route(ctx: Context) -> Outcome:
        return Goto("other" if ctx.text == "switch" else "hold", data={"seen": ctx.text})

    flow = Flow(id="f", title="f", start="hold", steps=(
        Step("hold", prompt="test.ask_name", accepts=Accepts.TEXT, on_input=route, secrets=("token",)),
        Step("other", prompt="test.done"),
    ))
    engine = Engine({"f": flow}, {}, translator=texts_for_tests)
    now = datetime(2030, 1, 1, tzinfo=UTC)

    staying = await engine.decide(TextReceived("k1", Sender(5, 5), "again"),
                                  Case("c" * 12, 5, 5, "f", "hold", data={"token": "enc"}), None, now)
    [kept] = staying.cases
    assert (kept.step, kept.data.get("token")) == ("hold", "enc")

    leaving = await engine.decide(TextReceived("k2", Sender(5, 5), "switch"),
                                  Case("d" * 12, 5, 5, "f", "hold", data={"token": "enc"}), None, now)
    [moved] = leaving.cases
    assert moved.step == "other" and "token" not in moved.data and moved.data["seen"] == "switch"
