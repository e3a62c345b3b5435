"""The local Bot API server works with the real python-telegram-bot and aiogram clients, offline."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiogram
import pytest
import telegram
from aiogram import Dispatcher
from aiogram import types as aio_types
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramConflictError,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.filters import CommandStart
from aiohttp import ClientSession, web
from telegram import error as ptb_error
from telegram import ext as ptb_ext
from telegram.request import HTTPXRequest

from tests.support.botapi import SECRET_HEADER, BotApiServer, parse_html

TOKEN = "123456:TEST-token"
USER = 4242
Json = dict[str, Any]
PTB_DEPRECATION = "ignore::telegram.warnings.PTBDeprecationWarning"


# -- fixtures -------------------------------------------------------------------------------------------


@pytest.fixture
async def server() -> AsyncIterator[BotApiServer]:
    async with BotApiServer(token=TOKEN, username="recovery_test_bot", first_name="Recovery") as api:
        yield api


def ptb_bot(server: BotApiServer, token: str = TOKEN) -> telegram.Bot:
    return telegram.Bot(token, base_url=f"{server.url}/bot", base_file_url=f"{server.url}/file/bot")


class LocalSession(AiohttpSession):
    """aiogram's own session, minus the 250 ms grace sleep on close meant for draining TLS connections."""

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()


def aio_bot(server: BotApiServer, token: str = TOKEN) -> aiogram.Bot:
    return aiogram.Bot(token, session=LocalSession(api=TelegramAPIServer.from_base(server.url)))


@pytest.fixture
async def ptb(server: BotApiServer) -> AsyncIterator[telegram.Bot]:
    async with ptb_bot(server) as bot:
        yield bot


@pytest.fixture
async def aio(server: BotApiServer) -> AsyncIterator[aiogram.Bot]:
    bot = aio_bot(server)
    yield bot
    await bot.session.close()


@dataclass
class Receiver:
    """A webhook endpoint that checks the secret header like a bot framework does."""

    url: str
    secret: str | None = None
    received: list[tuple[Json, str | None]] = field(default_factory=list)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hook = Receiver(url="")

    async def handle(request: web.Request) -> web.Response:
        header = request.headers.get(SECRET_HEADER)
        if header != hook.secret:
            return web.Response(status=403)
        hook.received.append((await request.json(), header))
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    hook.url = f"http://{host}:{port}/hook"
    yield hook
    await runner.cleanup()


def ptb_keyboard(*labels: str) -> telegram.InlineKeyboardMarkup:
    buttons = [telegram.InlineKeyboardButton(label, callback_data=label.lower()) for label in labels]
    return telegram.InlineKeyboardMarkup([buttons])


def aio_keyboard(*labels: str) -> aio_types.InlineKeyboardMarkup:
    buttons = [aio_types.InlineKeyboardButton(text=label, callback_data=label.lower()) for label in labels]
    return aio_types.InlineKeyboardMarkup(inline_keyboard=[buttons])


def seconds(value: float | dt.timedelta) -> float:
    return value.total_seconds() if isinstance(value, dt.timedelta) else float(value)


# -- the HTTP surface -----------------------------------------------------------------------------------


async def test_wrong_token_and_unknown_method_answer_like_telegram(server: BotApiServer) -> None:
    async with ClientSession() as http:
        async with http.post(f"{server.url}/bot999:WRONG/getMe") as response:
            assert response.status == 401
            assert await response.json() == {"ok": False, "error_code": 401, "description": "Unauthorized"}
        async with http.get(f"{server.url}/bot{TOKEN}/getNothing") as response:
            assert response.status == 404
            body = await response.json()
    assert body == {"ok": False, "error_code": 404, "description": "Not Found: method not found"}
    assert server.calls_of("getNothing")[0].status == 404


async def test_json_bodies_and_case_insensitive_method_names(server: BotApiServer) -> None:
    async with ClientSession() as http:
        payload = {"chat_id": USER, "text": "123"}
        async with http.post(f"{server.url}/bot{TOKEN}/SENDMESSAGE", json=payload) as response:
            body = await response.json()
    assert body["ok"] and body["result"]["text"] == "123"
    assert server.calls[-1].method == "sendMessage"


async def test_wrong_token_surfaces_in_both_libraries(server: BotApiServer) -> None:
    with pytest.raises(ptb_error.InvalidToken):
        async with ptb_bot(server, "1:BAD"):  # initialize() calls getMe, and shuts down on failure
            pass
    bot = aio_bot(server, "1:BAD")
    with pytest.raises(TelegramUnauthorizedError):
        await bot.get_me()
    await bot.session.close()


# -- python-telegram-bot --------------------------------------------------------------------------------


async def test_ptb_get_me(ptb: telegram.Bot) -> None:
    me = await ptb.get_me()
    assert (me.id, me.username, me.is_bot, ptb.username) == (123456, "recovery_test_bot", True, "recovery_test_bot")


async def test_ptb_send_edit_and_delete_with_inline_keyboard(ptb: telegram.Bot, server: BotApiServer) -> None:
    sent = await ptb.send_message(USER, "<b>Pick</b> one", parse_mode="HTML", reply_markup=ptb_keyboard("Yes", "No"))
    assert (sent.message_id, sent.text, sent.chat.type, sent.from_user.id) == (1, "Pick one", "private", 123456)
    assert sent.entities[0].type == "bold" and sent.reply_markup == ptb_keyboard("Yes", "No")
    edited = await ptb.edit_message_text("Picked", chat_id=USER, message_id=1, reply_markup=ptb_keyboard("Undo"))
    assert isinstance(edited, telegram.Message) and edited.edit_date is not None
    [shown] = server.chat_messages(USER)
    assert (shown.text, shown.labels(), shown.button("Undo")["callback_data"]) == ("Picked", ["Undo"], "undo")
    with pytest.raises(ptb_error.BadRequest, match=r"(?i)message is not modified"):
        await ptb.edit_message_reply_markup(USER, 1, reply_markup=ptb_keyboard("Undo"))
    await ptb.edit_message_reply_markup(USER, 1)
    assert server.chat_messages(USER)[0].keyboard == ()
    assert await ptb.delete_message(USER, 1)
    assert server.chat_messages(USER) == []
    second = await ptb.send_message(USER, "next")
    assert second.message_id == 2


async def test_ptb_bad_html_is_refused_like_telegram(ptb: telegram.Bot) -> None:
    with pytest.raises(ptb_error.BadRequest, match=r'(?i)Unsupported start tag "secret_key" at byte offset 4'):
        await ptb.send_message(USER, "Use <secret_key>", parse_mode="HTML")
    with pytest.raises(ptb_error.BadRequest, match=r"(?i)BUTTON_DATA_INVALID"):
        button = telegram.InlineKeyboardButton("x", callback_data="x" * 65)
        await ptb.send_message(USER, "hi", reply_markup=telegram.InlineKeyboardMarkup([[button]]))


async def test_ptb_receives_text_callback_photo_and_block(ptb: telegram.Bot, server: BotApiServer) -> None:
    server.user_sends_text(USER, "/start now", language_code="de")
    menu = await ptb.send_message(USER, "Menu", reply_markup=ptb_keyboard("Go"))
    server.user_presses_button(USER, "Go")
    server.user_sends_photo(USER, b"JPEG", caption="my id")
    server.user_blocks_bot(USER)
    text, press, photo, blocked = await ptb.get_updates(timeout=1)
    assert text.message.text == "/start now" and text.message.from_user.language_code == "de"
    assert text.message.entities[0].type == "bot_command" and text.message.entities[0].length == 6
    assert press.callback_query.data == "go" and press.callback_query.message.message_id == menu.message_id
    assert photo.message.caption == "my id" and len(photo.message.photo) == 2
    assert blocked.my_chat_member.new_chat_member.status == "kicked"
    assert await ptb.get_updates(offset=blocked.update_id + 1, timeout=0) == ()
    downloaded = await (await ptb.get_file(photo.message.photo[-1].file_id)).download_as_bytearray()
    assert bytes(downloaded) == b"JPEG"


async def test_ptb_long_poll_wakes_when_an_update_arrives(ptb: telegram.Bot, server: BotApiServer) -> None:
    poll = asyncio.create_task(ptb.get_updates(timeout=5))
    await server.wait_for(lambda call: call.method == "getUpdates", finished=False)
    started = asyncio.get_running_loop().time()
    server.user_sends_text(USER, "hello")
    [update] = await poll
    assert update.message.text == "hello"
    assert asyncio.get_running_loop().time() - started < 1


async def test_ptb_duplicate_delivery_and_offset(ptb: telegram.Bot, server: BotApiServer) -> None:
    first = server.user_sends_text(USER, "once")
    [update] = await ptb.get_updates(timeout=0)
    assert await ptb.get_updates(offset=update.update_id + 1, timeout=0) == ()
    server.enqueue(first)
    [again] = await ptb.get_updates(offset=update.update_id + 1, timeout=0)
    assert again.update_id == update.update_id


async def test_ptb_get_file_and_download(ptb: telegram.Bot, server: BotApiServer) -> None:
    server.add_file("DOC-1", b"recovery codes", file_unique_id="U1", path="documents/codes.txt")
    file = await ptb.get_file("DOC-1")
    assert (file.file_unique_id, file.file_size) == ("U1", 14)
    assert bytes(await file.download_as_bytearray()) == b"recovery codes"
    with pytest.raises(ptb_error.BadRequest, match=r"(?i)invalid file_id"):
        await ptb.get_file("nope")


async def test_ptb_answer_callback_query(ptb: telegram.Bot, server: BotApiServer) -> None:
    await ptb.send_message(USER, "Menu", reply_markup=ptb_keyboard("Go"))
    server.user_presses(USER, 1, "go")
    [update] = await ptb.get_updates(timeout=0)
    assert await update.callback_query.answer("Done", show_alert=True)
    answer = server.calls_of("answerCallbackQuery")[-1]
    assert answer.params == {"callback_query_id": update.callback_query.id, "text": "Done", "show_alert": True}
    with pytest.raises(ptb_error.BadRequest, match=r"(?i)query is too old"):
        await ptb.answer_callback_query("unknown")


@pytest.mark.filterwarnings(PTB_DEPRECATION)
async def test_ptb_flood_wait_and_blocked_user(ptb: telegram.Bot, server: BotApiServer) -> None:
    server.fail_next("sendMessage", status=429, retry_after=7)
    with pytest.raises(ptb_error.RetryAfter) as flood:
        await ptb.send_message(USER, "hi")
    assert seconds(flood.value.retry_after) == 7
    server.fail_next("sendMessage", status=403)
    with pytest.raises(ptb_error.Forbidden, match=r"(?i)bot was blocked by the user"):
        await ptb.send_message(USER, "hi")
    server.block(USER)
    with pytest.raises(ptb_error.Forbidden):
        await ptb.send_message(USER, "hi")
    server.unblock(USER)
    assert (await ptb.send_message(USER, "hi")).text == "hi"


async def test_ptb_uploads_albums_copies_and_commands(ptb: telegram.Bot, server: BotApiServer) -> None:
    photo = await ptb.send_photo(USER, b"PNGDATA", caption="<i>scan</i>", parse_mode="HTML")
    assert photo.caption == "scan" and photo.caption_entities[0].type == "italic"
    assert server.calls_of("sendPhoto")[0].uploads["photo"].content == b"PNGDATA"
    document = await ptb.send_document(USER, io.BytesIO(b"a,b"), filename="codes.csv")
    assert (document.document.file_name, document.document.mime_type) == ("codes.csv", "text/csv")
    album = await ptb.send_media_group(
        USER,
        [telegram.InputMediaPhoto(b"ONE"), telegram.InputMediaPhoto(photo.photo[-1].file_id, caption="two")],
    )
    assert len(album) == 2 and album[0].media_group_id == album[1].media_group_id
    copied = await ptb.copy_message(USER, from_chat_id=USER, message_id=photo.message_id)
    assert server.chat_messages(USER)[-1].message_id == copied.message_id
    assert server.chat_messages(USER)[-1].text == "scan"
    await ptb.set_my_commands([("start", "Begin recovery")], language_code="en")
    assert [c.command for c in await ptb.get_my_commands(language_code="en")] == ["start"]
    await ptb.delete_my_commands(language_code="en")
    assert await ptb.get_my_commands(language_code="en") == ()


async def test_ptb_webhook(ptb: telegram.Bot, server: BotApiServer, receiver: Receiver) -> None:
    receiver.secret = "s3cret_token"
    await ptb.set_webhook(receiver.url, secret_token="s3cret_token")
    assert (await ptb.get_webhook_info()).url == receiver.url
    with pytest.raises(ptb_error.Conflict, match=r"(?i)webhook is active"):
        await ptb.get_updates(timeout=0)
    update = server.user_sends_text(USER, "/start")
    assert (await ptb.get_webhook_info()).pending_update_count == 1
    assert await server.push_update_to_webhook(update) == 200
    assert receiver.received == [(update, "s3cret_token")]
    assert (await ptb.get_webhook_info()).pending_update_count == 0
    receiver.secret = "other"
    assert await server.push_update_to_webhook(update) == 403
    await ptb.delete_webhook()
    assert await ptb.get_updates(timeout=0) == ()


async def test_ptb_application_runs_a_button_flow(server: BotApiServer) -> None:
    async def start(update: telegram.Update, _: ptb_ext.ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        await update.effective_message.reply_text("Reset 2FA?", reply_markup=ptb_keyboard("Yes", "No"))

    async def pressed(update: telegram.Update, _: ptb_ext.ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        assert query is not None
        await query.answer()
        await query.edit_message_text(f"You chose {query.data}")

    app = ptb_ext.Application.builder().bot(ptb_bot(server)).build()
    app.add_handlers([ptb_ext.CommandHandler("start", start), ptb_ext.CallbackQueryHandler(pressed)])
    async with app:
        await app.start()
        assert app.updater is not None
        await app.updater.start_polling(timeout=dt.timedelta(seconds=5))
        server.user_sends_text(USER, "/start")
        await server.wait_for_call("sendMessage", chat_id=USER)
        server.user_presses_button(USER, "Yes")
        await server.wait_for_call("editMessageText", chat_id=USER)
        await app.updater.stop()
        await app.stop()
    assert [m.text for m in server.chat_messages(USER)] == ["/start", "You chose yes"]
    assert server.calls_of("answerCallbackQuery")[0].ok


# -- aiogram --------------------------------------------------------------------------------------------


async def test_aiogram_get_me(aio: aiogram.Bot) -> None:
    me = await aio.get_me()
    assert (me.id, me.username, me.is_bot) == (123456, "recovery_test_bot", True)


async def test_aiogram_send_and_edit_with_inline_keyboard(aio: aiogram.Bot, server: BotApiServer) -> None:
    sent = await aio.send_message(USER, "<b>Pick</b>", parse_mode="HTML", reply_markup=aio_keyboard("Yes"))
    assert (sent.message_id, sent.text, sent.entities[0].type) == (1, "Pick", "bold")
    assert sent.reply_markup is not None
    assert sent.reply_markup.model_dump() == aio_keyboard("Yes").model_dump()
    edited = await aio.edit_message_text(text="Done", chat_id=USER, message_id=1, reply_markup=aio_keyboard("Undo"))
    assert isinstance(edited, aio_types.Message) and edited.text == "Done"
    assert server.last_bot_message(USER).labels() == ["Undo"]
    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await aio.edit_message_text(text="Done", chat_id=USER, message_id=1, reply_markup=aio_keyboard("Undo"))
    with pytest.raises(TelegramBadRequest, match="message to edit not found"):
        await aio.edit_message_text(text="x", chat_id=USER, message_id=99)


async def test_aiogram_receives_text_callback_and_photo(aio: aiogram.Bot, server: BotApiServer) -> None:
    server.user_sends_text(USER, "/start")
    await aio.send_message(USER, "Menu", reply_markup=aio_keyboard("Go"))
    server.user_presses_button(USER, "Go")
    server.user_sends_photo(USER, b"JPEG", width=640, height=480)
    server.user_sends_document(USER, b"%PDF", file_name="id.pdf")
    text, press, photo, document = await aio.get_updates(timeout=1)
    assert text.message is not None and text.message.text == "/start"
    assert press.callback_query is not None and press.callback_query.data == "go"
    assert photo.message is not None and photo.message.photo is not None
    assert (photo.message.photo[-1].width, photo.message.photo[-1].height) == (640, 480)
    assert document.message is not None and document.message.document is not None
    assert document.message.document.mime_type == "application/pdf"
    file = await aio.get_file(photo.message.photo[-1].file_id)
    assert file.file_path is not None
    downloaded = await aio.download_file(file.file_path)
    assert downloaded is not None and downloaded.read() == b"JPEG"


async def test_aiogram_answer_callback_query(aio: aiogram.Bot, server: BotApiServer) -> None:
    await aio.send_message(USER, "Menu", reply_markup=aio_keyboard("Go"))
    server.user_presses(USER, 1, "go")
    [update] = await aio.get_updates(timeout=0)
    assert update.callback_query is not None
    assert await aio.answer_callback_query(update.callback_query.id, text="ok")
    assert server.calls_of("answerCallbackQuery")[-1].params["text"] == "ok"


async def test_aiogram_flood_wait_and_blocked_user(aio: aiogram.Bot, server: BotApiServer) -> None:
    server.fail_next("sendMessage", status=429, retry_after=3)
    with pytest.raises(TelegramRetryAfter) as flood:
        await aio.send_message(USER, "hi")
    assert flood.value.retry_after == 3
    server.user_blocks_bot(USER)
    with pytest.raises(TelegramForbiddenError, match="bot was blocked by the user"):
        await aio.send_message(USER, "hi")
    server.user_unblocks_bot(USER)
    assert (await aio.send_message(USER, "hi")).text == "hi"


async def test_aiogram_uploads(aio: aiogram.Bot, server: BotApiServer) -> None:
    photo = await aio.send_photo(USER, aio_types.BufferedInputFile(b"PNG", filename="scan.png"), caption="scan")
    assert photo.photo is not None and photo.caption == "scan"
    album = await aio.send_media_group(
        USER,
        media=[
            aio_types.InputMediaDocument(media=aio_types.BufferedInputFile(b"A", filename="a.pdf")),
            aio_types.InputMediaDocument(media=aio_types.BufferedInputFile(b"B", filename="b.txt")),
        ],
    )
    assert [m.message_id for m in album] == [2, 3]
    assert album[1].document is not None and album[1].document.file_name == "b.txt"
    file = await aio.get_file(photo.photo[-1].file_id)
    assert file.file_path is not None
    downloaded = await aio.download_file(file.file_path)
    assert downloaded is not None and downloaded.read() == b"PNG"


async def test_albums_and_file_kinds_are_refused_like_telegram(
    ptb: telegram.Bot, aio: aiogram.Bot, server: BotApiServer
) -> None:
    photo = server.user_sends_photo(USER, file_id="PHOTO-1")["message"]["photo"][-1]["file_id"]
    scan = server.user_sends_document(USER, file_id="DOC-1", file_name="scan.jpg")["message"]["document"]["file_id"]
    with pytest.raises(ptb_error.BadRequest, match="2-10"):
        await ptb.send_media_group(USER, [telegram.InputMediaPhoto(photo)])
    with pytest.raises(TelegramBadRequest, match="2-10"):
        await aio.send_media_group(USER, media=[aio_types.InputMediaPhoto(media=photo)] * 11)
    with pytest.raises(ptb_error.BadRequest, match="only with documents"):
        await ptb.send_media_group(USER, [telegram.InputMediaPhoto(photo), telegram.InputMediaDocument(scan)])
    with pytest.raises(ptb_error.BadRequest, match=r"(?i)can.t use file of type document as photo"):
        await ptb.send_photo(USER, scan)
    with pytest.raises(TelegramBadRequest, match=r"(?i)can.t use file of type document as photo"):
        await aio.send_photo(USER, scan)
    with pytest.raises(TelegramBadRequest, match='message #2 with the error message "wrong file identifier'):
        await aio.send_media_group(USER, media=[aio_types.InputMediaPhoto(media=photo),
                                                aio_types.InputMediaPhoto(media=scan)])
    shown = len(server.chat_messages(USER))
    assert (await ptb.send_document(USER, scan)).document.file_id == scan  # type: ignore[union-attr]
    album = await aio.send_media_group(USER, media=[aio_types.InputMediaDocument(media=scan)] * 2)
    assert [m.document.file_id for m in album if m.document] == [scan, scan]
    assert (await ptb.send_photo(USER, photo)).photo[-1].file_id == photo
    assert len(server.chat_messages(USER)) == shown + 4  # nothing refused was stored


async def test_aiogram_webhook(aio: aiogram.Bot, server: BotApiServer, receiver: Receiver) -> None:
    receiver.secret = "hook-secret"
    assert await aio.set_webhook(receiver.url, secret_token="hook-secret")
    with pytest.raises(TelegramConflictError):
        await aio.get_updates()
    update = server.user_sends_text(USER, "via webhook")
    assert await server.push_update_to_webhook(update) == 200
    assert receiver.received == [(update, "hook-secret")]
    assert await aio.delete_webhook()
    assert (await aio.get_webhook_info()).url == ""


async def test_aiogram_dispatcher_runs_a_button_flow(aio: aiogram.Bot, server: BotApiServer) -> None:
    dispatcher = Dispatcher()

    @dispatcher.message(CommandStart())
    async def start(message: aio_types.Message) -> None:
        await message.answer("Reset 2FA?", reply_markup=aio_keyboard("Yes", "No"))

    @dispatcher.callback_query()
    async def pressed(query: aio_types.CallbackQuery) -> None:
        await query.answer()
        assert isinstance(query.message, aio_types.Message)
        await query.message.edit_text(f"You chose {query.data}")

    polling = asyncio.create_task(dispatcher.start_polling(aio, handle_signals=False, polling_timeout=5))
    server.user_sends_text(USER, "/start")
    await server.wait_for_call("sendMessage", chat_id=USER)
    server.user_presses_button(USER, "No")
    await server.wait_for_call("editMessageText", chat_id=USER)
    await dispatcher.stop_polling()
    await polling
    assert server.last_bot_message(USER).text == "You chose no"
    assert sorted(server.calls_of("getUpdates")[0].params["allowed_updates"]) == ["callback_query", "message"]


# -- server-side details --------------------------------------------------------------------------------


def test_html_entities_use_utf16_offsets_and_merge_pre_code() -> None:
    text, entities = parse_html('🔑 <b>key</b> &lt;3 <pre><code class="language-py">x = 1</code></pre>')
    assert text == "🔑 key <3 x = 1"
    assert entities == [
        {"type": "bold", "offset": 3, "length": 3},
        {"type": "pre", "language": "py", "offset": 10, "length": 5},
    ]


async def test_fail_next_counts_and_wait_for_reports_what_it_saw(ptb: telegram.Bot, server: BotApiServer) -> None:
    server.fail_next("getMe", status=502, count=2)
    for _ in range(2):
        with pytest.raises(ptb_error.NetworkError):
            await ptb.get_me()
    assert (await ptb.get_me()).id == 123456
    with pytest.raises(TimeoutError, match="getMe:502"):
        await server.wait_for(lambda call: call.method == "sendMessage", timeout=0.05)


# -- faults on the Telegram side ------------------------------------------------------------------------


def quick_ptb_bot(server: BotApiServer, read_timeout: float) -> telegram.Bot:
    request = HTTPXRequest(read_timeout=read_timeout)
    return telegram.Bot(TOKEN, base_url=f"{server.url}/bot", request=request, get_updates_request=HTTPXRequest())


async def test_5xx_answers_are_server_errors_in_both_libraries(ptb: telegram.Bot, aio: aiogram.Bot,
                                                              server: BotApiServer) -> None:
    server.fail_next("sendMessage", status=503)
    with pytest.raises(ptb_error.NetworkError, match="Service Unavailable"):
        await ptb.send_message(USER, "hi")
    server.fail_next("sendMessage", status=500)
    with pytest.raises(TelegramServerError, match="Internal Server Error"):
        await aio.send_message(USER, "hi")
    assert [c.status for c in server.calls_of("sendMessage")] == [503, 500]
    assert server.chat_messages(USER) == []


async def test_a_stalled_call_times_out_in_both_libraries_and_is_not_processed(server: BotApiServer) -> None:
    server.stall_next("sendMessage", seconds=30, count=2)
    async with quick_ptb_bot(server, read_timeout=0.3) as ptb:
        with pytest.raises(ptb_error.TimedOut):
            await ptb.send_message(USER, "hi")
    aio = aiogram.Bot(TOKEN, session=LocalSession(api=TelegramAPIServer.from_base(server.url), timeout=0.3))
    mark = len(server.calls)
    with pytest.raises(TelegramNetworkError, match="timeout"):
        await aio.send_message(USER, "hi")
    await server.wait_for(lambda c: c.method == "sendMessage", since=mark)  # the stall sees the client gone
    assert [(c.status, c.client_gone) for c in server.calls_of("sendMessage")] == [(0, True), (0, True)]
    assert server.chat_messages(USER) == []
    assert (await aio.send_message(USER, "hi")).text == "hi"  # the stall was for two calls only
    await aio.session.close()


async def test_a_stall_ends_with_the_connection_dropped(ptb: telegram.Bot, aio: aiogram.Bot,
                                                        server: BotApiServer) -> None:
    server.stall_next("sendMessage", seconds=0.2, count=2)
    with pytest.raises(ptb_error.NetworkError):
        await ptb.send_message(USER, "hi")
    with pytest.raises(TelegramNetworkError):
        await aio.send_message(USER, "hi")
    assert [(c.status, c.client_gone) for c in server.calls_of("sendMessage")] == [(0, False), (0, False)]
    assert server.chat_messages(USER) == []


async def test_a_reset_connection_is_a_network_error_and_the_call_is_not_processed(
        ptb: telegram.Bot, aio: aiogram.Bot, server: BotApiServer) -> None:
    server.reset_next("sendMessage", count=2)
    with pytest.raises(ptb_error.NetworkError):
        await ptb.send_message(USER, "hi")
    with pytest.raises(TelegramNetworkError):
        await aio.send_message(USER, "hi")
    assert server.chat_messages(USER) == []
    assert (await ptb.send_message(USER, "hi")).text == "hi"
    assert [c.status for c in server.calls_of("sendMessage")] == [0, 0, 200]


async def test_a_reset_get_updates_confirms_nothing(ptb: telegram.Bot, server: BotApiServer) -> None:
    first = server.user_sends_text(USER, "one")
    [update] = await ptb.get_updates(timeout=0)
    server.reset_next("getUpdates")
    with pytest.raises(ptb_error.NetworkError):
        await ptb.get_updates(offset=update.update_id + 1, timeout=0)
    assert [u.update_id for u in await ptb.get_updates(timeout=0)] == [first["update_id"]]  # still there


async def test_faults_of_one_method_come_in_the_order_asked(ptb: telegram.Bot, server: BotApiServer) -> None:
    server.reset_next("getMe")
    server.fail_next("getMe", status=502)
    server.stall_next("getMe", seconds=0.05)
    for _ in range(3):
        with pytest.raises(ptb_error.NetworkError):
            await ptb.get_me()
    assert (await ptb.get_me()).id == 123456
    assert [c.status for c in server.calls_of("getMe")][-4:] == [0, 502, 0, 200]


async def test_descriptions_are_kept_within_telegrams_limits(ptb: telegram.Bot, server: BotApiServer) -> None:
    await ptb.set_my_description(description="The official desk.")
    await ptb.set_my_short_description(short_description="Official.")
    assert (await ptb.get_my_description()).description == "The official desk."
    assert (await ptb.get_my_short_description()).short_description == "Official."
    with pytest.raises(ptb_error.BadRequest):
        await ptb.set_my_short_description(short_description="x" * 121)
