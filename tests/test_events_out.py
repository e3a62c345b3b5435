"""Events for the operator's systems (EVENTS_URL), posted to a real receiver that checks every signature: what a
recovery sends, that a change is announced only once it is in force, that a failing receiver gets the same event
again until it takes it, that a restart loses none, and that nothing secret is in them."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from flows.clock import FakeClock
from flows.desk import build_engine
from flows.events_out import EventSender, body_of, signature
from flows.http_directory import DirectoryClient
from flows.records import OutgoingEvent
from flows.services import FlowSettings, ServiceFactory
from tests.support.chat import Bot
from tests.support.desk import SECRET_KEY, open_desk, submit_for_review
from tests.support.directory_service import TOKEN, DirectoryService
from tests.support.events_receiver import EventsReceiver
from tests.test_http_directory_flows import method_one_submitted, send_changes
from tests.test_http_directory_flows import service as service

KEY = "events-signing-key-" + "e" * 32
ADMIN = 900


@pytest.fixture
async def receiver() -> AsyncIterator[EventsReceiver]:
    async with EventsReceiver(KEY) as running:
        yield running


def with_events(desk: Bot, receiver: EventsReceiver) -> EventSender:
    sender = EventSender(desk.store, receiver.url, KEY, desk.clock)
    desk.runner.emit_events = True
    return sender


@pytest.fixture
async def table_desk(db: AsyncEngine, clock: FakeClock) -> AsyncIterator[Bot]:
    desk = await open_desk(db, clock)
    assert desk.app.services is not None
    desk.app.services.emit_events = True
    yield desk
    await desk.stop()


@pytest.fixture
async def http_desk(db: AsyncEngine, clock: FakeClock, service: DirectoryService) -> AsyncIterator[Bot]:
    settings = FlowSettings(service_name="Acme", secret_key=SECRET_KEY, admin_ids=(ADMIN,))
    client = DirectoryClient(service.url, token=TOKEN, timeout=0.5, cooldown=0)
    desk = await Bot(db, build_engine(settings), clock, ServiceFactory(settings, client, emit_events=True)).start()
    assert desk.app.change_worker is not None
    desk.app.change_worker.emit_events = True
    yield desk
    await desk.stop()
    await client.close()


async def test_method_one_sends_the_case_and_the_changes_signed(table_desk: Bot, receiver: EventsReceiver) -> None:
    sender = with_events(table_desk, receiver)
    await method_one_submitted(table_desk.chat())
    await sender.send_due()
    assert receiver.types() == ["case.opened", "account.two_factor_changed", "account.withdrawals_locked"]
    changed = [e["data"] for e in receiver.events.values() if e["type"].startswith("account.")]
    assert changed[0]["change"] == "switch_to_phone" and "until" in changed[1]
    assert all(status == 200 for _, status in receiver.deliveries)
    everything = str(list(receiver.events.values()))
    assert "@" not in everything and "+1555" not in everything and not re.search(r"\b\d{6}\b", everything)
    assert await sender.send_due() == 0
    await sender.stop()


async def test_a_failing_receiver_gets_the_same_event_until_it_takes_it(table_desk: Bot, receiver: EventsReceiver,
                                                                        clock: FakeClock) -> None:
    sender = with_events(table_desk, receiver)
    chat = table_desk.chat()
    await chat.send("/start")
    receiver.refuse_next = [500, 503]
    await sender.send_due()
    clock.advance(seconds=2)
    await sender.send_due()
    assert receiver.events == {}
    clock.advance(seconds=4)
    await sender.send_due()
    [(first, _), (second, _), (third, status)] = receiver.deliveries
    assert first == second == third and status == 200 and receiver.types() == ["case.opened"]
    await sender.stop()


async def test_a_restart_before_sending_loses_no_event(table_desk: Bot, receiver: EventsReceiver) -> None:
    with_events(table_desk, receiver)
    await table_desk.chat().send("/start")
    await table_desk.restart()
    fresh = EventSender(table_desk.store, receiver.url, KEY, table_desk.clock)
    await fresh.send_due()
    await fresh.stop()
    assert receiver.types() == ["case.opened"]


async def test_with_an_http_directory_a_change_is_announced_once_the_service_confirms_it(
        http_desk: Bot, receiver: EventsReceiver) -> None:
    sender = with_events(http_desk, receiver)
    user, admin = http_desk.chat(), http_desk.chat(user_id=ADMIN)
    await submit_for_review(user)
    case_id = re.search(r"Review case (\S+)", re.sub("<[^>]+>", "", admin.messages[-1].text))
    assert case_id is not None
    await admin.press(f"r:{case_id.group(1)}:1:approve")
    await sender.send_due()
    assert receiver.types()[-2:] == ["case.submitted", "case.approved"]
    for _ in range(2):
        await send_changes(http_desk)
    await sender.send_due()
    assert receiver.types()[-2:] == ["account.two_factor_changed", "account.withdrawals_locked"]
    assert sum(t.startswith("account.") for t in receiver.types()) == 2
    await sender.stop()


async def test_the_signature_covers_the_timestamp() -> None:
    receiver = EventsReceiver(KEY)
    event = OutgoingEvent("0b7e1f8e-0000-4000-8000-000000000001", "case.opened", FakeClock().now(), {"case": "c"})
    body, now = body_of(event), str(int(time.time()))
    assert receiver.genuine(now, body, signature(KEY.encode(), now, body))
    stale = str(int(time.time()) - 301)
    assert not receiver.genuine(stale, body, signature(KEY.encode(), stale, body))
    assert not receiver.genuine(now, body, signature(KEY.encode(), stale, body))
    assert not receiver.genuine(now, body + b" ", signature(KEY.encode(), now, body))
