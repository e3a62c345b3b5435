"""The python-telegram-bot 22 front end: a transport for replies and handlers that feed the desk."""

from __future__ import annotations

import base64
import contextlib
import warnings
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from telegram import (
    Bot,
    BotCommand,
    BotCommandScopeAllPrivateChats,
    BotCommandScopeChat,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputMediaDocument,
    InputMediaPhoto,
    Update,
)
from telegram.constants import ParseMode
from telegram.error import BadRequest, ChatMigrated, Forbidden, InvalidToken, RetryAfter
from telegram.ext import (
    Application,
    ApplicationBuilder,
    BaseHandler,
    CallbackQueryHandler,
    ChatMemberHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from bot.frontends.desk import TelegramDesk
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


class BadToken(Exception):
    """The Bot API refused the token."""


def _markup(rows: tuple[tuple[Button, ...], ...]) -> InlineKeyboardMarkup | None:
    if not rows:
        return None
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(plain_text(b.label), callback_data=b.data) for b in row] for row in rows]
    )


def _retry_seconds(error: RetryAfter) -> float:
    with warnings.catch_warnings():  # PTB 22 warns that retry_after will become a timedelta; both are handled
        warnings.simplefilter("ignore")
        value: int | float | timedelta = error.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class PtbTransport:
    """Delivers replies with a python-telegram-bot `Bot`, reporting Telegram's errors the way the outbox expects."""

    def __init__(self, bot: Bot) -> None:
        self.bot = bot

    async def deliver(self, reply: Reply) -> delivery.Delivered:
        try:
            return await self._send(reply)
        except RetryAfter as error:
            raise delivery.RetryAfter(_retry_seconds(error)) from None
        except Forbidden as error:
            raise delivery.RecipientBlocked(error.message) from None
        except BadRequest as error:
            if "not modified" in error.message.lower():
                return None
            raise delivery.Undeliverable(error.message) from None
        except ChatMigrated as error:  # a group became a supergroup: the old id is gone for good
            raise delivery.Undeliverable(f"chat migrated to {error.new_chat_id}") from None

    async def _send(self, reply: Reply) -> delivery.Delivered:
        if isinstance(reply, SendMessage):
            return await self._send_message(reply)
        if isinstance(reply, EditMessage):
            await self.bot.edit_message_text(reply.text, chat_id=reply.chat_id, message_id=reply.message_id,
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
            sent = await self.bot.send_photo(reply.chat_id, base64.b64decode(reply.png_base64),
                                             caption=reply.caption or None, parse_mode=ParseMode.HTML)
            return sent.message_id
        else:
            raise delivery.Undeliverable(f"{type(reply).__name__} does not go to Telegram")
        return None

    async def _send_files(self, reply: SendFiles) -> tuple[int, ...]:
        """One file as a photo or a document (Telegram's albums take 2-10), several as an album of that kind."""
        caption = reply.caption or None
        if len(reply.file_ids) == 1:
            send = self.bot.send_document if reply.media == "document" else self.bot.send_photo
            return ((await send(reply.chat_id, reply.file_ids[0], caption=caption,
                                parse_mode=ParseMode.HTML)).message_id,)
        kind = InputMediaDocument if reply.media == "document" else InputMediaPhoto
        media = [kind(file_id, caption=caption if i == 0 else None, parse_mode=ParseMode.HTML)
                 for i, file_id in enumerate(reply.file_ids)]
        return tuple(sent.message_id for sent in await self.bot.send_media_group(reply.chat_id, media))

    async def _send_message(self, reply: SendMessage) -> int:
        async def send(piece: str, last: bool) -> int:
            markup = _markup(reply.buttons) if last else None
            sent = await self.bot.send_message(reply.chat_id, piece, parse_mode=ParseMode.HTML, reply_markup=markup)
            return sent.message_id

        return await send_in_pieces(reply.text, send)


def ptb_handlers(desk: TelegramDesk) -> list[BaseHandler[Any, Any, Any]]:
    """Handlers to add to an existing `Application`: private messages, the desk's buttons, block/unblock."""

    async def on_update(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await desk.handle(update)

    return [
        MessageHandler(filters.ChatType.PRIVATE & ~filters.UpdateType.EDITED, on_update),
        CallbackQueryHandler(on_update, pattern=DESK_BUTTONS),
        ChatMemberHandler(on_update, ChatMemberHandler.MY_CHAT_MEMBER),
    ]


class PtbFront:
    """`recovery-bot run` on python-telegram-bot: an Application with no updater, fed by our own poller."""

    name = "python-telegram-bot"

    def __init__(self, token: str, api_url: str) -> None:
        self.application: Application[Any, Any, Any, Any, Any, Any] = (
            ApplicationBuilder().token(token).base_url(f"{api_url}/bot").base_file_url(f"{api_url}/file/bot")
            .updater(None).build()
        )
        self.transport = PtbTransport(self.application.bot)

    async def check_token(self) -> str:
        try:
            await self.application.initialize()
        except InvalidToken:
            raise BadToken("the Bot API answered Unauthorized") from None
        return str(self.application.bot.username)

    def attach(self, desk: TelegramDesk) -> None:
        self.application.add_handlers(ptb_handlers(desk))

        async def any_other_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
            await desk.handle(update)  # the engine answers "This button has expired"

        self.application.add_handler(CallbackQueryHandler(any_other_button))

    async def set_commands(self, commands: Sequence[tuple[str, str]]) -> None:
        await self.application.bot.set_my_commands(
            [BotCommand(name, description) for name, description in commands], scope=BotCommandScopeAllPrivateChats()
        )

    async def set_admin_commands(self, admin_ids: Sequence[int], commands: Sequence[tuple[str, str]]) -> None:
        for admin in admin_ids:
            with contextlib.suppress(BadRequest, Forbidden):  # an admin who never opened the bot
                await self.application.bot.set_my_commands(
                    [BotCommand(name, description) for name, description in commands], scope=BotCommandScopeChat(admin)
                )

    async def fetch(self, offset: int | None, wait_seconds: int) -> Sequence[Update]:
        return await self.application.bot.get_updates(
            offset=offset, timeout=wait_seconds, allowed_updates=list(ALLOWED_UPDATES)
        )

    async def process(self, update: Any) -> None:
        await self.application.process_update(update)

    def parse(self, data: dict[str, Any]) -> Update:
        return Update.de_json(data, self.application.bot)

    async def set_webhook(self, url: str, secret: str) -> None:
        await self.application.bot.set_webhook(url, secret_token=secret, allowed_updates=list(ALLOWED_UPDATES))

    async def delete_webhook(self) -> None:
        await self.application.bot.delete_webhook()

    async def close(self) -> None:
        await self.application.shutdown()
