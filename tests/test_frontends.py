"""The pieces of the Telegram front ends on their own: update translation, message splitting, error mapping."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator
from typing import Any, cast

import aiogram
import pytest
import telegram
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiohttp import test_utils
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.frontends import polling
from bot.frontends.aiogram import AiogramTransport
from bot.frontends.desk import TelegramDesk
from bot.frontends.ptb import PtbTransport
from bot.frontends.render import split_text, utf16_length
from bot.frontends.telegram import BotApi, Refusal, TelegramTransport, Unreachable
from bot.frontends.updates import MembershipChanged, translate_update
from bot.frontends.webhook import SECRET_HEADER, webhook_app
from bot.run import Front, bot_description, check_token_patiently, patiently
from flows import delivery
from flows.clock import FakeClock
from flows.events import ButtonPressed, CommandReceived, FileReceived, TextReceived
from flows.replies import AnswerButton, Button, CopyMessage, EditMessage, Reply, SendFiles, SendMessage, SendPhoto
from tests.engine_flow import make_engine
from tests.support.botapi import BotApiServer
from tests.support.chat import Bot, RecordingTransport
from tests.support.e2e import TOKEN

USER = {"id": 7, "is_bot": False, "first_name": "Ada", "language_code": "de"}
PRIVATE = {"id": 7, "type": "private", "first_name": "Ada"}


def message(**content: Any) -> dict[str, Any]:
    return {"update_id": 55, "message": {"message_id": 3, "date": 0, "chat": PRIVATE, "from": USER, **content}}


def parsed(update: dict[str, Any]) -> list[Any]:
    """The same raw update as each framework parses it."""
    bot = telegram.Bot(TOKEN)
    return [telegram.Update.de_json(update, bot), aiogram.types.Update.model_validate(update)]


@pytest.mark.parametrize("framework", [0, 1], ids=["ptb", "aiogram"])
def test_updates_become_events_alike_in_both_frameworks(framework: int) -> None:
    command = message(text="/start@acme_desk_bot again", entities=[{"type": "bot_command", "offset": 0,
                                                                     "length": 19}])
    event = translate_update(parsed(command)[framework])
    assert event == CommandReceived("tg:55", event.sender, "start", "again", 3,  # type: ignore[union-attr]
                                    args_html="again")
    assert (event.sender.user_id, event.sender.chat_id, event.sender.language) == (7, 7, "de")  # type: ignore[union-attr]

    text = translate_update(parsed(message(text="/not a command"))[framework])
    assert isinstance(text, TextReceived) and text.text == "/not a command"

    document = message(document={"file_id": "F", "file_unique_id": "U", "file_size": 10, "mime_type": "image/png"})
    doc = translate_update(parsed(document)[framework])
    assert isinstance(doc, FileReceived) and (doc.file.kind, doc.file.mime_type, doc.file.size) == (
        "document", "image/png", 10)

    photo = message(photo=[{"file_id": "s", "file_unique_id": "us", "width": 9, "height": 9, "file_size": 1},
                           {"file_id": "L", "file_unique_id": "uL", "width": 99, "height": 99, "file_size": 99}])
    pic = translate_update(parsed(photo)[framework])
    assert isinstance(pic, FileReceived) and (pic.file.file_id, pic.file.kind) == ("L", "photo")

    group = message(text="hi", chat={"id": -100, "type": "group", "title": "staff"})
    assert translate_update(parsed(group)[framework]) is None

    press = {"update_id": 56, "callback_query": {"id": "q1", "from": USER, "chat_instance": "x", "data": "abc",
                                                 "message": {"message_id": 9, "date": 0, "chat": PRIVATE}}}
    assert translate_update(parsed(press)[framework]) == ButtonPressed(
        "tg:56", translate_update(parsed(press)[framework]).sender, "abc", 9, "q1")  # type: ignore[union-attr]

    member = {"user": {"id": 1, "is_bot": True, "first_name": "Desk"}, "status": "member"}
    kicked = {"user": {"id": 1, "is_bot": True, "first_name": "Desk"}, "status": "kicked", "until_date": 0}
    change = {"update_id": 57, "my_chat_member": {"chat": PRIVATE, "from": USER, "date": 0,
                                                  "old_chat_member": member, "new_chat_member": kicked}}
    blocked = translate_update(parsed(change)[framework])
    assert isinstance(blocked, MembershipChanged) and (blocked.chat_id, blocked.blocked) == (7, True)
    unblock = {"update_id": 58, "my_chat_member": {"chat": PRIVATE, "from": USER, "date": 0,
                                                   "old_chat_member": kicked, "new_chat_member": member}}
    unblocked = translate_update(parsed(unblock)[framework])
    assert isinstance(unblocked, MembershipChanged) and not unblocked.blocked
    assert (unblocked.returned.key, unblocked.returned.sender.chat_id) == ("tg:58", 7)


@pytest.mark.parametrize("framework", [0, 1], ids=["ptb", "aiogram"])
def test_a_commands_arguments_keep_their_formatting_as_escaped_html(framework: int) -> None:
    typed = "/broadcast @open Fees < 1% and bold"
    entities = [{"type": "bot_command", "offset": 0, "length": 10}, {"type": "bold", "offset": 31, "length": 4}]
    event = translate_update(parsed(message(text=typed, entities=entities))[framework])
    assert isinstance(event, CommandReceived) and event.args == "@open Fees < 1% and bold"
    assert event.args_html == "@open Fees &lt; 1% and <b>bold</b>"
    bold_command = [{"type": "bot_command", "offset": 0, "length": 10}, {"type": "bold", "offset": 0, "length": 10}]
    formatted = translate_update(parsed(message(text=typed, entities=bold_command))[framework])
    assert isinstance(formatted, CommandReceived) and formatted.args_html is None


@given(st.text(alphabet=st.sampled_from(["a", "b", " ", "\n", "😀", "é"]), max_size=3000))
def test_split_text_keeps_every_piece_under_the_limit(text: str) -> None:
    pieces = split_text(text, limit=200)
    assert all(utf16_length(piece) <= 200 for piece in pieces)
    assert "".join(pieces).replace(" ", "").replace("\n", "") == text.replace(" ", "").replace("\n", "")


def test_split_text_prefers_paragraphs() -> None:
    text = ("a" * 3000) + "\n\n" + ("b" * 3000)
    assert split_text(text) == ["a" * 3000, "b" * 3000]
    assert split_text("short") == ["short"]


@pytest.fixture
async def server() -> AsyncIterator[BotApiServer]:
    async with BotApiServer(token=TOKEN) as api:
        yield api


async def transports(server: BotApiServer) -> tuple[PtbTransport, AiogramTransport]:
    ptb = telegram.Bot(TOKEN, base_url=f"{server.url}/bot", base_file_url=f"{server.url}/file/bot")
    aio = aiogram.Bot(TOKEN, session=AiohttpSession(api=TelegramAPIServer.from_base(server.url)))
    return PtbTransport(ptb), AiogramTransport(aio)


@pytest.mark.parametrize("framework", [0, 1], ids=["ptb", "aiogram"])
async def test_transports_map_telegram_errors_for_the_outbox(server: BotApiServer, framework: int) -> None:
    transport = (await transports(server))[framework]
    buttons = ((Button("Yes", "c:1:yes"),),)
    message_id = await transport.deliver(SendMessage(7, "<b>Hi</b> &amp; welcome", buttons))
    assert server.chat_messages(7)[-1].text == "Hi & welcome"
    assert message_id is not None
    same = EditMessage(7, message_id, "<b>Hi</b> &amp; welcome", buttons)
    assert await transport.deliver(same) is None  # "message is not modified" is not an error
    with pytest.raises(delivery.Undeliverable):
        await transport.deliver(EditMessage(7, 999, "gone"))
    server.fail_next("sendMessage", status=429, retry_after=4)
    with pytest.raises(delivery.RetryAfter) as wait:
        await transport.deliver(SendMessage(7, "x"))
    assert wait.value.seconds == 4
    server.block(7)
    with pytest.raises(delivery.RecipientBlocked):
        await transport.deliver(SendMessage(7, "x"))
    with pytest.raises(delivery.Undeliverable):
        await transport.deliver(AnswerButton(7, "no-such-query", "late"))
    server.unblock(7)
    copied = await transport.deliver(CopyMessage(9, 7, message_id))
    assert server.chat_messages(9)[-1].text == "Hi & welcome" and copied == server.chat_messages(9)[-1].message_id
    server.user_sends_photo(7, file_id="ID-FRONT")
    server.user_sends_photo(7, file_id="ID-BACK")
    album = await transport.deliver(SendFiles(9, "photo", ("ID-FRONT", "ID-BACK"), "<b>case</b> 1"))
    assert [m.raw["photo"][-1]["file_id"] for m in server.chat_messages(9)[-2:]] == ["ID-FRONT", "ID-BACK"]
    assert album == tuple(m.message_id for m in server.chat_messages(9)[-2:])
    server.user_sends_document(7, file_id="ID-SCAN", file_name="scan.png")
    [scan] = await transport.deliver(SendFiles(9, "document", ("ID-SCAN",)))  # type: ignore[misc]
    assert server.chat_messages(9)[-1].raw["document"]["file_id"] == "ID-SCAN" == server.calls[-1].params["document"]
    assert scan == server.chat_messages(9)[-1].message_id
    with pytest.raises(delivery.Undeliverable):
        await transport.deliver(SendFiles(9, "photo", ("ID-SCAN",)))
    png = base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()
    await transport.deliver(SendPhoto(9, png, "scan me"))
    assert server.chat_messages(9)[-1].text == "scan me"
    long_id = await transport.deliver(SendMessage(8, "word " * 1500, buttons))
    shown = server.chat_messages(8)
    assert len(shown) == 2 and shown[-1].message_id == long_id and shown[-1].labels() == ["Yes"]
    await close(transport)


async def close(transport: PtbTransport | AiogramTransport) -> None:
    if isinstance(transport, AiogramTransport):
        await transport.bot.session.close()
    else:
        await transport.bot.shutdown()


class FlakyTransport(RecordingTransport):
    """Fails the first `failures` deliveries the way a dropped connection does."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def deliver(self, reply: Reply) -> delivery.Delivered:
        if self.failures:
            self.failures -= 1
            raise ConnectionResetError("connection reset by peer")
        return await super().deliver(reply)


async def test_network_errors_are_retried_and_nothing_is_lost(db: AsyncEngine, clock: FakeClock,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(delivery, "MAX_BACKOFF", 0.05)
    bot = Bot(db, make_engine(), clock)
    bot.transport = FlakyTransport(failures=3)
    await bot.start()
    chat = bot.chat()
    await asyncio.wait_for(chat.send("/start"), timeout=10)
    assert [m.text for m in chat.messages] == ["What is your name?"]
    await bot.stop()


async def test_refused_webhook_requests_are_logged_once_a_minute_with_a_count(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    async def never(update: Any) -> None:
        raise AssertionError("a refused request was processed")

    desk = cast(TelegramDesk, None)  # a refused request never reaches the desk
    app = webhook_app("/hook", "right-secret", dict, never, desk, clock=clock)
    async with test_utils.TestClient(test_utils.TestServer(app)) as http:
        async def knock(secret: str = "wrong") -> None:
            response = await http.post("/hook", json={"update_id": 1}, headers={SECRET_HEADER: secret})
            assert response.status == 401

        def lines() -> list[str]:
            return [r.getMessage() for r in caplog.records if "without the right secret token" in r.getMessage()]

        with caplog.at_level(logging.WARNING, logger="bot.frontends.webhook"):
            for _ in range(5):
                await knock()
            assert len(lines()) == 1 and "more" not in lines()[0]
            clock.advance(seconds=59)
            await knock()
            assert len(lines()) == 1
            clock.advance(seconds=2)
            await knock()
            assert len(lines()) == 2 and "and 5 more since the last such line" in lines()[1]
            clock.advance(minutes=1)
            await knock()
            assert len(lines()) == 3 and "more" not in lines()[2]


class RefusingApi:
    """A `BotApi` whose send_message fails as told; records the calls it gets."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.sent: list[tuple[int, str, Any]] = []

    async def send_message(self, chat_id: int, text: str, keyboard: Any) -> int:
        if self.error is not None:
            raise self.error
        self.sent.append((chat_id, text, keyboard))
        return len(self.sent)

    def refusal(self, error: Exception) -> Refusal | None:
        return error.args[0] if error.args and isinstance(error.args[0], Refusal) else None


async def test_the_shared_transport_puts_the_keyboard_on_the_last_piece_with_plain_labels() -> None:
    api = RefusingApi()
    transport = TelegramTransport(cast(BotApi, api))
    last = await transport.deliver(SendMessage(7, "word " * 1500, ((Button("<b>Yes</b> &amp; go", "c:1"),),)))
    assert last == 2 and [keyboard for _, _, keyboard in api.sent] == [(), ((("Yes & go", "c:1"),),)]


@pytest.mark.parametrize(("refusal", "raised"), [
    (Refusal("retry_after", "flood", 4.0), delivery.RetryAfter),
    (Refusal("blocked", "bot was blocked by the user"), delivery.RecipientBlocked),
    (Refusal("bad_request", "chat not found"), delivery.Undeliverable),
    (Refusal("migrated", "chat migrated to -100"), delivery.Undeliverable),
    (Refusal("bad_request", "Bad Request: message is not modified"), None),
    (None, ConnectionResetError),  # not Telegram refusing: the outbox retries it as a network fault
])
async def test_the_shared_transport_classifies_refusals_for_the_outbox(
        refusal: Refusal | None, raised: type[Exception] | None) -> None:
    error = ConnectionResetError(refusal) if refusal is None else RuntimeError(refusal)
    transport = TelegramTransport(cast(BotApi, RefusingApi(error)))
    if raised is None:
        assert await transport.deliver(SendMessage(7, "x")) is None
        return
    with pytest.raises(raised):
        await transport.deliver(SendMessage(7, "x"))


class FlakyFront:
    """A front whose Bot API is unreachable for the first `down` token checks."""

    def __init__(self, down: int) -> None:
        self.down = down
        self.checks = 0

    async def check_token(self) -> str:
        self.checks += 1
        if self.checks <= self.down:
            raise Unreachable("httpx.ConnectError: All connection attempts failed")
        return "recovery_desk_bot"


async def test_the_token_check_waits_longer_each_time_the_bot_api_is_unreachable(
        caplog: pytest.LogCaptureFixture) -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    front = FlakyFront(down=2)
    assert await check_token_patiently(cast(Front, front), sleep) == "recovery_desk_bot"
    assert front.checks == 3 and waits == [1.0, 2.0]
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "cannot reach the Telegram Bot API (try 1 of 3)", "cannot reach the Telegram Bot API (try 2 of 3)"]


async def test_the_token_check_gives_up_after_three_tries() -> None:
    async def sleep(seconds: float) -> None:
        pass

    front = FlakyFront(down=5)
    with pytest.raises(Unreachable, match="All connection attempts failed"):
        await check_token_patiently(cast(Front, front), sleep)
    assert front.checks == 3


@pytest.mark.parametrize(("draw", "low_or_high"), [(0.0, 0.8), (1.0, 1.2)])
async def test_get_updates_failures_back_off_doubling_with_jitter(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, draw: float, low_or_high: float) -> None:
    stopping = asyncio.Event()
    fetches = 0

    async def fetch(offset: int | None, wait_seconds: int) -> list[Any]:
        nonlocal fetches
        fetches += 1
        if fetches > 7:
            stopping.set()
            return []
        raise ConnectionResetError("Connection reset by peer")

    pauses: list[float] = []

    async def sleep_unless(event: asyncio.Event, seconds: float) -> None:
        pauses.append(seconds)

    monkeypatch.setattr(polling, "_sleep_unless", sleep_unless)
    desk = cast(TelegramDesk, type("Desk", (), {"failed": set()})())
    await polling.Poller(fetch, polling_process, desk, rng=lambda: draw).run(stopping)
    assert pauses == pytest.approx([low_or_high * seconds for seconds in (1, 2, 4, 8, 16, 30, 30)])
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 7 and all(record.exc_info is None for record in warnings)  # a line each, no traceback
    assert "ConnectionResetError" in warnings[0].getMessage()


async def polling_process(update: Any) -> None:
    raise AssertionError("no update was fetched")


async def test_a_start_up_call_is_tried_again_while_telegram_fails_it(caplog: pytest.LogCaptureFixture) -> None:
    told_to_wait = RuntimeError("Flood control exceeded")
    failures: list[Exception] = [ConnectionResetError("Connection reset by peer"), TimeoutError("Timed out"),
                                 told_to_wait]
    waits: list[float] = []

    async def set_menu() -> None:
        if failures:
            raise failures.pop(0)

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    def refusal(error: Exception) -> Refusal | None:
        return Refusal("retry_after", str(error), 7.0) if error is told_to_wait else None

    await patiently("setting the command menu", set_menu, refusal, sleep, rng=lambda: 0.5)
    assert waits == [1.0, 2.0, 7.0]
    assert len(caplog.records) == 3 and all(record.exc_info is None for record in caplog.records)


async def test_a_start_up_call_telegram_refuses_for_good_is_not_tried_again() -> None:
    async def set_menu() -> None:
        raise RuntimeError("Bad Request: BOT_COMMAND_INVALID")

    async def sleep(seconds: float) -> None:
        raise AssertionError("not tried again")

    with pytest.raises(RuntimeError, match="BOT_COMMAND_INVALID"):
        await patiently("setting the command menu", set_menu, lambda error: Refusal("bad_request", str(error)), sleep)


def test_the_bots_description_is_plain_text_within_telegrams_limits() -> None:
    description, short = bot_description("Acme & Sons " * 20)
    assert len(description) <= 512 and len(short) <= 120 and short.endswith("…")
    assert "&amp;" not in description
    assert bot_description("Acme")[1] == "The official recovery desk of Acme. We never ask for your password or codes."
