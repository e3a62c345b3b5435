"""The aiogram 3 front end: a transport for replies and a router that feeds the desk."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Sequence
from typing import Any

from aiogram import Bot, Dispatcher, F, Router
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ParseMode
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramMigrateToChat,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramUnauthorizedError,
)
from aiogram.types import (
    BotCommand,
    BotCommandScopeAllPrivateChats,
    BotCommandScopeChat,
    BufferedInputFile,
    CallbackQuery,
    ChatMemberUpdated,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputMediaDocument,
    InputMediaPhoto,
    Message,
    Update,
)

from bot.frontends.desk import TelegramDesk
from bot.frontends.ptb import BadToken
from bot.frontends.render import send_in_pieces
from bot.frontends.updates import ALLOWED_UPDATES, DESK_BUTTONS
from flows import delivery
from flows.replies import (
    AnswerButton,
    Button,
    CopyMessage,
    DeleteMessage,
    EditMessage,
    Reply,
    SendFiles,
    SendMessage,
    SendPhoto,
)
from flows.texts import plain_text


def _markup(rows: tuple[tuple[Button, ...], ...]) -> InlineKeyboardMarkup | None:
    if not rows:
        return None
    return InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text=plain_text(b.label), callback_data=b.data) for b in row]
                         for row in rows]
    )


class AiogramTransport:
    """Delivers replies with an aiogram `Bot`, reporting Telegram's errors the way the outbox expects."""

    def __init__(self, bot: Bot) -> None:
        self.bot = bot

    async def deliver(self, reply: Reply) -> delivery.Delivered:
        try:
            return await self._send(reply)
        except TelegramRetryAfter as error:
            raise delivery.RetryAfter(float(error.retry_after)) from None
        except TelegramForbiddenError as error:
            raise delivery.RecipientBlocked(error.message) from None
        except (TelegramBadRequest, TelegramNotFound) as error:
            if "not modified" in error.message.lower():
                return None
            raise delivery.Undeliverable(error.message) from None
        except TelegramMigrateToChat as error:  # a group became a supergroup: the old id is gone for good
            raise delivery.Undeliverable(f"chat migrated to {error.migrate_to_chat_id}") from None

    async def _send(self, reply: Reply) -> delivery.Delivered:
        if isinstance(reply, SendMessage):
            return await self._send_message(reply)
        if isinstance(reply, EditMessage):
            await self.bot.edit_message_text(text=reply.text, chat_id=reply.chat_id, message_id=reply.message_id,
                                             parse_mode=ParseMode.HTML, reply_markup=_markup(reply.buttons))
        elif isinstance(reply, DeleteMessage):
            await self.bot.delete_message(reply.chat_id, reply.message_id)
        elif isinstance(reply, AnswerButton):
            await self.bot.answer_callback_query(reply.callback_id, text=reply.text or None)
        elif isinstance(reply, CopyMessage):
            return (await self.bot.copy_message(reply.chat_id, reply.from_chat_id, reply.message_id)).message_id
        elif isinstance(reply, SendFiles):
            return await self._send_files(reply)
        elif isinstance(reply, SendPhoto):
            picture = BufferedInputFile(base64.b64decode(reply.png_base64), filename="qr.png")
            sent = await self.bot.send_photo(reply.chat_id, picture, caption=reply.caption or None,
                                             parse_mode=ParseMode.HTML)
            return sent.message_id
        else:
            raise delivery.Undeliverable(f"{type(reply).__name__} does not go to Telegram")
        return None

    async def _send_files(self, reply: SendFiles) -> tuple[int, ...]:
        """One file as a photo or a document (Telegram's albums take 2-10), several as an album of that kind."""
        caption = reply.caption or None
        if len(reply.file_ids) == 1:
            if reply.media == "document":
                sent = await self.bot.send_document(reply.chat_id, reply.file_ids[0], caption=caption,
                                                    parse_mode=ParseMode.HTML)
            else:
                sent = await self.bot.send_photo(reply.chat_id, reply.file_ids[0], caption=caption,
                                                 parse_mode=ParseMode.HTML)
            return (sent.message_id,)
        media: list[InputMediaDocument] | list[InputMediaPhoto]
        if reply.media == "document":
            media = [InputMediaDocument(media=file_id, caption=caption if i == 0 else None, parse_mode=ParseMode.HTML)
                     for i, file_id in enumerate(reply.file_ids)]
        else:
            media = [InputMediaPhoto(media=file_id, caption=caption if i == 0 else None, parse_mode=ParseMode.HTML)
                     for i, file_id in enumerate(reply.file_ids)]
        return tuple(sent.message_id for sent in await self.bot.send_media_group(reply.chat_id, media))

    async def _send_message(self, reply: SendMessage) -> int:
        async def send(piece: str, last: bool) -> int:
            markup = _markup(reply.buttons) if last else None
            sent = await self.bot.send_message(reply.chat_id, piece, parse_mode=ParseMode.HTML, reply_markup=markup)
            return sent.message_id

        return await send_in_pieces(reply.text, send)


def aiogram_router(desk: TelegramDesk) -> Router:
    """A router to include in an existing `Dispatcher`: private messages, the desk's buttons, block/unblock."""
    router = Router(name="recovery-desk")

    async def on_message(message: Message, event_update: Update) -> None:
        await desk.handle(event_update)

    async def on_button(query: CallbackQuery, event_update: Update) -> None:
        await desk.handle(event_update)

    async def on_membership(change: ChatMemberUpdated, event_update: Update) -> None:
        await desk.handle(event_update)

    router.message.register(on_message, F.chat.type == "private")
    router.callback_query.register(on_button, F.data.regexp(DESK_BUTTONS))
    router.my_chat_member.register(on_membership)
    return router


class AiogramFront:
    """`recovery-bot run` on aiogram: a Dispatcher fed by our own poller (or webhook)."""

    name = "aiogram"

    def __init__(self, token: str, api_url: str) -> None:
        session = AiohttpSession(api=TelegramAPIServer.from_base(api_url))
        self.bot = Bot(token, session=session)
        self.dispatcher = Dispatcher()
        self.transport = AiogramTransport(self.bot)

    async def check_token(self) -> str:
        try:
            me = await self.bot.get_me()
        except (TelegramUnauthorizedError, TelegramNotFound):
            raise BadToken("the Bot API answered Unauthorized") from None
        return str(me.username)

    def attach(self, desk: TelegramDesk) -> None:
        self.dispatcher.include_router(aiogram_router(desk))

        async def any_other_button(query: CallbackQuery, event_update: Update) -> None:
            await desk.handle(event_update)  # the engine answers "This button has expired"

        self.dispatcher.callback_query.register(any_other_button)

    async def set_commands(self, commands: Sequence[tuple[str, str]]) -> None:
        await self.bot.set_my_commands(
            [BotCommand(command=name, description=text) for name, text in commands],
            scope=BotCommandScopeAllPrivateChats(),
        )

    async def set_admin_commands(self, admin_ids: Sequence[int], commands: Sequence[tuple[str, str]]) -> None:
        for admin in admin_ids:
            with contextlib.suppress(TelegramBadRequest, TelegramForbiddenError):  # never opened the bot
                await self.bot.set_my_commands([BotCommand(command=n, description=d) for n, d in commands],
                                               scope=BotCommandScopeChat(chat_id=admin))

    async def fetch(self, offset: int | None, wait_seconds: int) -> Sequence[Update]:
        return await self.bot.get_updates(offset=offset, timeout=wait_seconds, allowed_updates=list(ALLOWED_UPDATES),
                                          request_timeout=wait_seconds + 10)

    async def process(self, update: Any) -> None:
        await self.dispatcher.feed_update(self.bot, update)

    def parse(self, data: dict[str, Any]) -> Update:
        return Update.model_validate(data, context={"bot": self.bot})

    async def set_webhook(self, url: str, secret: str) -> None:
        await self.bot.set_webhook(url, secret_token=secret, allowed_updates=list(ALLOWED_UPDATES))

    async def delete_webhook(self) -> None:
        await self.bot.delete_webhook()

    async def close(self) -> None:
        await self.bot.session.close()
