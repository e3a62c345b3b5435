"""The Telegram transport and front, shared by both frameworks.

Which Bot API call a reply becomes, how long texts are split, which message gets the keyboard, how files go
(one alone, several as an album) and what Telegram's refusals mean for the outbox are decided here, once.
What differs between python-telegram-bot and aiogram (their call signatures, keyboard classes and exception
types) sits behind `BotApi`, implemented by a small adapter in `ptb.py` and in `aiogram.py`.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from bot.frontends.render import send_in_pieces
from flows import delivery
from flows.chat_pace import ChatPace
from flows.replies import (
    AnswerButton,
    Button,
    CopyMessage,
    DeleteMessage,
    EditMessage,
    Reply,
    SendDocument,
    SendFiles,
    SendMessage,
    SendPhoto,
)
from flows.texts import plain_text

Media = Literal["photo", "document"]
Keyboard = tuple[tuple[tuple[str, str], ...], ...]
"""Inline keyboard rows of (label as plain text, callback data); empty for none."""
Commands = Sequence[tuple[str, str]]


class BadToken(Exception):
    """The Bot API refused the token."""


class Unreachable(Exception):
    """The Bot API server did not answer (no connection, a timeout, or a server error); the message says why and
    may hold the request's URL, so with the token: redact it before showing it."""


@dataclass(frozen=True)
class Refusal:
    """A Telegram error as the adapter classified it, free of the framework's exception types."""

    kind: Literal["retry_after", "blocked", "bad_request", "migrated"]
    message: str = ""
    retry_after: float = 0.0


class BotApi(Protocol):
    """The Bot API calls the transport makes, done by one framework; texts and captions are HTML."""

    async def send_message(self, chat_id: int, text: str, keyboard: Keyboard) -> int: ...
    async def edit_message_text(self, chat_id: int, message_id: int, text: str, keyboard: Keyboard) -> None: ...
    async def delete_message(self, chat_id: int, message_id: int) -> None: ...
    async def answer_callback_query(self, callback_id: str, text: str | None) -> None: ...
    async def copy_message(self, chat_id: int, from_chat_id: int, message_id: int) -> int: ...
    async def send_file(self, chat_id: int, media: Media, file: str | bytes, caption: str | None,
                        filename: str | None = None) -> int:
        """Send a photo or document: a file id Telegram has, or the bytes of a new file (named `filename`)."""
        ...

    async def send_album(self, chat_id: int, media: Media, file_ids: Sequence[str],
                         caption: str | None) -> tuple[int, ...]:
        """Send 2-10 files of one kind as an album; the caption goes on the first."""
        ...

    async def set_commands(self, commands: Commands, chat_id: int | None, language: str | None = None) -> None:
        """The command menu of every private chat (chat_id None), or of one chat; for users whose app is in
        `language` (None: everyone else)."""
        ...

    async def set_description(self, description: str, short_description: str, language: str | None = None) -> None:
        """What an empty chat with the bot shows, and its profile's line (plain text, 512 and 120 characters)."""
        ...

    def refusal(self, error: Exception) -> Refusal | None:
        """What a framework exception means, or None for one that is not Telegram refusing (e.g. the network)."""
        ...


def keyboard(rows: tuple[tuple[Button, ...], ...]) -> Keyboard:
    """The rows of inline buttons, labels stripped of HTML (Telegram shows button labels as plain text)."""
    return tuple(tuple((plain_text(button.label), button.data) for button in row) for row in rows)


def outbox_error(refusal: Refusal) -> Exception | None:
    """The outbox's error for a refusal; None when there is nothing to retry or report ("not modified")."""
    if refusal.kind == "retry_after":
        return delivery.RetryAfter(refusal.retry_after)
    if refusal.kind == "blocked":
        return delivery.RecipientBlocked(refusal.message)
    if refusal.kind == "bad_request" and "not modified" in refusal.message.lower():
        return None
    return delivery.Undeliverable(refusal.message)  # a bad request, or a group that became a supergroup


def media_kind(media: str) -> Media:
    return "document" if media == "document" else "photo"


class TelegramTransport:
    """Delivers replies through a `BotApi`, reporting Telegram's errors the way the outbox expects."""

    def __init__(self, api: BotApi) -> None:
        self.api = api
        self.chat_pace = ChatPace()  # Telegram's limit in one chat, kept by the outbox's chat lane

    async def deliver(self, reply: Reply) -> delivery.Delivered:
        try:
            return await self._send(reply)
        except Exception as error:
            refusal = self.api.refusal(error)
            if refusal is None:
                raise
            mapped = outbox_error(refusal)
            if mapped is None:
                return None
            raise mapped from None

    async def _send(self, reply: Reply) -> delivery.Delivered:
        api = self.api
        if isinstance(reply, SendMessage):
            return await self._send_message(reply)
        if isinstance(reply, EditMessage):
            await api.edit_message_text(reply.chat_id, reply.message_id, reply.text, keyboard(reply.buttons))
        elif isinstance(reply, DeleteMessage):
            await api.delete_message(reply.chat_id, reply.message_id)
        elif isinstance(reply, AnswerButton):
            await api.answer_callback_query(reply.callback_id, reply.text or None)
        elif isinstance(reply, CopyMessage):
            return await api.copy_message(reply.chat_id, reply.from_chat_id, reply.message_id)
        elif isinstance(reply, SendFiles):
            return await self._send_files(reply)
        elif isinstance(reply, SendPhoto):
            picture = base64.b64decode(reply.png_base64)
            return await api.send_file(reply.chat_id, "photo", picture, reply.caption or None)
        elif isinstance(reply, SendDocument):
            content = base64.b64decode(reply.content_base64)
            return await api.send_file(reply.chat_id, "document", content, reply.caption or None, reply.filename)
        else:
            raise delivery.Undeliverable(f"{type(reply).__name__} does not go to Telegram")
        return None

    async def _send_files(self, reply: SendFiles) -> tuple[int, ...]:
        """One file as a photo or a document (Telegram's albums take 2-10), several as an album of that kind."""
        media, caption = media_kind(reply.media), reply.caption or None
        if len(reply.file_ids) == 1:
            return (await self.api.send_file(reply.chat_id, media, reply.file_ids[0], caption),)
        return await self.api.send_album(reply.chat_id, media, reply.file_ids, caption)

    async def _send_message(self, reply: SendMessage) -> int:
        """A long text goes as several messages; the keyboard goes on the last."""
        buttons = keyboard(reply.buttons)

        async def send(piece: str, last: bool) -> int:
            return await self.api.send_message(reply.chat_id, piece, buttons if last else ())

        return await send_in_pieces(reply.text, send)


async def set_admin_commands(api: BotApi, admin_ids: Sequence[int], commands: Commands,
                             language: str | None = None) -> None:
    """Each admin's own command menu; an admin who never opened the bot is skipped."""
    for admin in admin_ids:
        try:
            await api.set_commands(commands, admin, language)
        except Exception as error:
            refusal = api.refusal(error)
            if refusal is None or refusal.kind not in ("bad_request", "blocked"):
                raise


class StartUpCalls:
    """The start-up calls both fronts make alike, through their transport's `BotApi`: menus, descriptions, and
    what a failed call means."""

    transport: TelegramTransport

    async def set_commands(self, commands: Commands, language: str | None = None) -> None:
        await self.transport.api.set_commands(commands, None, language)

    async def set_admin_commands(self, admin_ids: Sequence[int], commands: Commands,
                                 language: str | None = None) -> None:
        await set_admin_commands(self.transport.api, admin_ids, commands, language)

    async def set_description(self, description: str, short_description: str, language: str | None = None) -> None:
        await self.transport.api.set_description(description, short_description, language)

    def refusal(self, error: Exception) -> Refusal | None:
        return self.transport.api.refusal(error)
