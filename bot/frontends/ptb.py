"""The python-telegram-bot 22 front end: its adapter for the shared transport, and handlers that feed the desk."""

from __future__ import annotations

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
from telegram.error import BadRequest, ChatMigrated, Forbidden, InvalidToken, NetworkError, RetryAfter
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
from bot.frontends.telegram import (
    BadToken,
    Commands,
    Keyboard,
    Media,
    Refusal,
    StartUpCalls,
    TelegramTransport,
    Unreachable,
)
from bot.frontends.updates import ALLOWED_UPDATES, DESK_BUTTONS

__all__ = ["BadToken", "PtbApi", "PtbFront", "PtbTransport", "ptb_handlers"]

HTML = ParseMode.HTML


def _markup(rows: Keyboard) -> InlineKeyboardMarkup | None:
    if not rows:
        return None
    return InlineKeyboardMarkup([[InlineKeyboardButton(label, callback_data=data) for label, data in row]
                                 for row in rows])


def _retry_seconds(error: RetryAfter) -> float:
    with warnings.catch_warnings():  # PTB 22 warns that retry_after will become a timedelta; both are handled
        warnings.simplefilter("ignore")
        value: int | float | timedelta = error.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class PtbApi:
    """The shared transport's Bot API calls, made with a python-telegram-bot `Bot`."""

    def __init__(self, bot: Bot) -> None:
        self.bot = bot

    async def send_message(self, chat_id: int, text: str, keyboard: Keyboard) -> int:
        return (await self.bot.send_message(chat_id, text, parse_mode=HTML, reply_markup=_markup(keyboard))).message_id

    async def edit_message_text(self, chat_id: int, message_id: int, text: str, keyboard: Keyboard) -> None:
        await self.bot.edit_message_text(text, chat_id=chat_id, message_id=message_id, parse_mode=HTML,
                                         reply_markup=_markup(keyboard))

    async def delete_message(self, chat_id: int, message_id: int) -> None:
        await self.bot.delete_message(chat_id, message_id)

    async def answer_callback_query(self, callback_id: str, text: str | None) -> None:
        await self.bot.answer_callback_query(callback_id, text=text)

    async def copy_message(self, chat_id: int, from_chat_id: int, message_id: int) -> int:
        return (await self.bot.copy_message(chat_id, from_chat_id, message_id)).message_id

    async def send_file(self, chat_id: int, media: Media, file: str | bytes, caption: str | None,
                        filename: str | None = None) -> int:
        if media == "document":
            sent = await self.bot.send_document(chat_id, file, caption=caption, parse_mode=HTML, filename=filename)
        else:
            sent = await self.bot.send_photo(chat_id, file, caption=caption, parse_mode=HTML, filename=filename)
        return sent.message_id

    async def send_album(self, chat_id: int, media: Media, file_ids: Sequence[str],
                         caption: str | None) -> tuple[int, ...]:
        kind = InputMediaDocument if media == "document" else InputMediaPhoto
        items = [kind(file_id, caption=caption if i == 0 else None, parse_mode=HTML)
                 for i, file_id in enumerate(file_ids)]
        return tuple(sent.message_id for sent in await self.bot.send_media_group(chat_id, items))

    async def set_commands(self, commands: Commands, chat_id: int | None, language: str | None = None) -> None:
        scope = BotCommandScopeAllPrivateChats() if chat_id is None else BotCommandScopeChat(chat_id)
        await self.bot.set_my_commands([BotCommand(name, text) for name, text in commands], scope=scope,
                                       language_code=language)

    async def set_description(self, description: str, short_description: str, language: str | None = None) -> None:
        await self.bot.set_my_description(description=description, language_code=language)
        await self.bot.set_my_short_description(short_description=short_description, language_code=language)

    def refusal(self, error: Exception) -> Refusal | None:
        if isinstance(error, RetryAfter):
            return Refusal("retry_after", error.message, _retry_seconds(error))
        if isinstance(error, Forbidden):
            return Refusal("blocked", error.message)
        if isinstance(error, BadRequest):
            return Refusal("bad_request", error.message)
        if isinstance(error, ChatMigrated):  # a group became a supergroup: the old id is gone for good
            return Refusal("migrated", f"chat migrated to {error.new_chat_id}")
        return None


class PtbTransport(TelegramTransport):
    """Delivers replies with a python-telegram-bot `Bot`, reporting Telegram's errors the way the outbox expects."""

    def __init__(self, bot: Bot) -> None:
        super().__init__(PtbApi(bot))
        self.bot = bot


def ptb_handlers(desk: TelegramDesk) -> list[BaseHandler[Any, Any, Any]]:
    """Handlers to add to an existing `Application`: private messages, the desk's buttons, block/unblock."""

    async def on_update(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await desk.handle(update)

    return [
        MessageHandler(filters.ChatType.PRIVATE & ~filters.UpdateType.EDITED, on_update),
        CallbackQueryHandler(on_update, pattern=DESK_BUTTONS),
        ChatMemberHandler(on_update, ChatMemberHandler.MY_CHAT_MEMBER),
    ]


class PtbFront(StartUpCalls):
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
        except NetworkError as error:  # no connection, a timeout, or a 5xx (BadRequest is one too, but not this)
            if isinstance(error, BadRequest):
                raise
            raise Unreachable(str(error)) from None
        return str(self.application.bot.username)

    def attach(self, desk: TelegramDesk) -> None:
        self.application.add_handlers(ptb_handlers(desk))

        async def any_other_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
            await desk.handle(update)  # the engine answers "This button has expired"

        self.application.add_handler(CallbackQueryHandler(any_other_button))

    async def fetch(self, offset: int | None, wait_seconds: int) -> Sequence[Update]:
        updates: Sequence[Update] = await self.application.bot.get_updates(
            offset=offset, timeout=wait_seconds, allowed_updates=list(ALLOWED_UPDATES)
        )
        return updates

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
