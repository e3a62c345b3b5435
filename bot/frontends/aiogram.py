"""The aiogram 3 front end: its adapter for the shared transport, and a router that feeds the desk."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

from aiogram import Bot, Dispatcher, F, Router, methods
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ParseMode
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramMigrateToChat,
    TelegramNetworkError,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.methods import Response, TelegramMethod
from aiogram.types import (
    BotCommand,
    BotCommandScopeAllPrivateChats,
    BotCommandScopeChat,
    BufferedInputFile,
    CallbackQuery,
    ChatMemberUpdated,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    Update,
)
from aiogram.utils.media_group import MediaGroupBuilder

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

__all__ = ["AiogramApi", "AiogramFront", "AiogramTransport", "BadToken", "aiogram_router", "keep_response_models"]

HTML = ParseMode.HTML
REQUEST_TIMEOUT = 10.0
"""Seconds a Bot API call may take in all before it counts as failed and is retried. aiogram's own default is
60 s: a stalled connection would hold a chat's replies for a minute. (python-telegram-bot gives up after 5 s
without an answer byte.) A poll for updates is allowed its long-poll wait on top."""


@cache
def keep_response_models() -> dict[Any, type[Response[Any]]]:
    """aiogram's `Response[T]` model for the result type of every Bot API method, built once and kept.

    aiogram's session parses each answer with `Response[method.__returning__]`; pydantic caches parametrised
    models only weakly, so whenever the collector has run the next call builds the model and its schema again
    (~10 % of an aiogram bot's CPU under load). Holding them here makes every later `Response[T]` a cache hit.
    """
    returning = {kind.__returning__ for kind in vars(methods).values()
                 if isinstance(kind, type) and issubclass(kind, TelegramMethod) and kind is not TelegramMethod}
    return {result: Response[result] for result in returning}  # type: ignore[valid-type]


def _markup(rows: Keyboard) -> InlineKeyboardMarkup | None:
    if not rows:
        return None
    return InlineKeyboardMarkup(inline_keyboard=[[InlineKeyboardButton(text=label, callback_data=data)
                                                  for label, data in row] for row in rows])


class AiogramApi:
    """The shared transport's Bot API calls, made with an aiogram `Bot`."""

    def __init__(self, bot: Bot) -> None:
        self.bot = bot

    async def send_message(self, chat_id: int, text: str, keyboard: Keyboard) -> int:
        return (await self.bot.send_message(chat_id, text, parse_mode=HTML, reply_markup=_markup(keyboard))).message_id

    async def edit_message_text(self, chat_id: int, message_id: int, text: str, keyboard: Keyboard) -> None:
        await self.bot.edit_message_text(text=text, chat_id=chat_id, message_id=message_id, parse_mode=HTML,
                                         reply_markup=_markup(keyboard))

    async def delete_message(self, chat_id: int, message_id: int) -> None:
        await self.bot.delete_message(chat_id, message_id)

    async def answer_callback_query(self, callback_id: str, text: str | None) -> None:
        await self.bot.answer_callback_query(callback_id, text=text)

    async def copy_message(self, chat_id: int, from_chat_id: int, message_id: int) -> int:
        return (await self.bot.copy_message(chat_id, from_chat_id, message_id)).message_id

    async def send_file(self, chat_id: int, media: Media, file: str | bytes, caption: str | None,
                        filename: str | None = None) -> int:
        upload = file if isinstance(file, str) else BufferedInputFile(file, filename=filename or "qr.png")
        if media == "document":
            return (await self.bot.send_document(chat_id, upload, caption=caption, parse_mode=HTML)).message_id
        return (await self.bot.send_photo(chat_id, upload, caption=caption, parse_mode=HTML)).message_id

    async def send_album(self, chat_id: int, media: Media, file_ids: Sequence[str],
                         caption: str | None) -> tuple[int, ...]:
        album = MediaGroupBuilder()
        add = album.add_document if media == "document" else album.add_photo
        for i, file_id in enumerate(file_ids):
            add(media=file_id, caption=caption if i == 0 else None, parse_mode=HTML)
        items: Any = album.build()  # aiogram's builder types its list narrower than send_media_group takes it
        return tuple(sent.message_id for sent in await self.bot.send_media_group(chat_id, items))

    async def set_commands(self, commands: Commands, chat_id: int | None, language: str | None = None) -> None:
        scope = BotCommandScopeAllPrivateChats() if chat_id is None else BotCommandScopeChat(chat_id=chat_id)
        await self.bot.set_my_commands([BotCommand(command=name, description=text) for name, text in commands],
                                       scope=scope,
                                       language_code=language)

    async def set_description(self, description: str, short_description: str, language: str | None = None) -> None:
        await self.bot.set_my_description(description=description, language_code=language)
        await self.bot.set_my_short_description(short_description=short_description, language_code=language)

    def refusal(self, error: Exception) -> Refusal | None:
        if isinstance(error, TelegramRetryAfter):
            return Refusal("retry_after", error.message, float(error.retry_after))
        if isinstance(error, TelegramForbiddenError):
            return Refusal("blocked", error.message)
        if isinstance(error, TelegramBadRequest | TelegramNotFound):
            return Refusal("bad_request", error.message)
        if isinstance(error, TelegramMigrateToChat):  # a group became a supergroup: the old id is gone for good
            return Refusal("migrated", f"chat migrated to {error.migrate_to_chat_id}")
        return None


class AiogramTransport(TelegramTransport):
    """Delivers replies with an aiogram `Bot`, reporting Telegram's errors the way the outbox expects."""

    def __init__(self, bot: Bot) -> None:
        super().__init__(AiogramApi(bot))
        self.bot = bot
        keep_response_models()


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


class AiogramFront(StartUpCalls):
    """`recovery-bot run` on aiogram: a Dispatcher fed by our own poller (or webhook)."""

    name = "aiogram"

    def __init__(self, token: str, api_url: str) -> None:
        session = AiohttpSession(api=TelegramAPIServer.from_base(api_url), timeout=REQUEST_TIMEOUT)
        self.bot = Bot(token, session=session)
        self.dispatcher = Dispatcher()
        self.transport = AiogramTransport(self.bot)

    async def check_token(self) -> str:
        try:
            me = await self.bot.get_me()
        except (TelegramUnauthorizedError, TelegramNotFound):
            raise BadToken("the Bot API answered Unauthorized") from None
        except (TelegramNetworkError, TelegramServerError) as error:
            raise Unreachable(str(error)) from None
        return str(me.username)

    def attach(self, desk: TelegramDesk) -> None:
        self.dispatcher.include_router(aiogram_router(desk))

        async def any_other_button(query: CallbackQuery, event_update: Update) -> None:
            await desk.handle(event_update)  # the engine answers "This button has expired"

        self.dispatcher.callback_query.register(any_other_button)

    async def fetch(self, offset: int | None, wait_seconds: int) -> Sequence[Update]:
        return await self.bot.get_updates(offset=offset, timeout=wait_seconds, allowed_updates=list(ALLOWED_UPDATES),
                                          request_timeout=int(wait_seconds + REQUEST_TIMEOUT))

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
