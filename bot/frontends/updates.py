"""Updates to engine events. Both frameworks parse updates into objects with the Bot API's field names
(`message.from_user`, `callback_query.data`, ...), so one duck-typed translation serves both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from flows.announce import BROADCAST_DATA
from flows.engine import BUTTON_DATA
from flows.events import (
    ButtonPressed,
    ChatReturned,
    CommandReceived,
    Event,
    FileInfo,
    FileReceived,
    Sender,
    TextReceived,
    parse_command,
)
from flows.language_choice import LANGUAGE_DATA
from flows.privacy import PRIVACY_DATA
from flows.staff import REVIEW_DATA

ALLOWED_UPDATES = ("message", "callback_query", "my_chat_member")
# The desk's own buttons: a case's step buttons, staff review and broadcast buttons, and /delete's confirmation.
DESK_BUTTONS = re.compile("|".join(p.pattern for p in (BUTTON_DATA, REVIEW_DATA, BROADCAST_DATA, PRIVACY_DATA,
                                                        LANGUAGE_DATA)))


@dataclass(frozen=True)
class MembershipChanged:
    """The user blocked (or unblocked) the bot in their private chat; `returned` is the event an unblock makes."""

    chat_id: int
    blocked: bool
    returned: ChatReturned


def update_key(update: Any) -> str:
    return f"tg:{update.update_id}"


def translate_update(update: Any) -> Event | MembershipChanged | None:
    """The engine event for a Telegram update, or None for updates the desk does not handle."""
    if update.callback_query is not None:
        return _button(update)
    if update.my_chat_member is not None:
        return _membership(update_key(update), update.my_chat_member)
    message = update.message
    if message is None or message.from_user is None or message.chat.type != "private":
        return None
    return _message(update_key(update), message)


def _sender(user: Any, chat_id: int) -> Sender:
    return Sender(user_id=user.id, chat_id=chat_id, language=user.language_code)


def _button(update: Any) -> ButtonPressed:
    query = update.callback_query
    message = query.message
    chat_id = message.chat.id if message is not None else query.from_user.id
    message_id = message.message_id if message is not None else None
    return ButtonPressed(update_key(update), _sender(query.from_user, chat_id), query.data or "", message_id, query.id)


def _membership(key: str, change: Any) -> MembershipChanged | None:
    if change.chat.type != "private":
        return None
    returned = ChatReturned(key, _sender(change.from_user, change.chat.id))
    return MembershipChanged(change.chat.id, change.new_chat_member.status == "kicked", returned)


def _message(key: str, message: Any) -> Event:
    sender = _sender(message.from_user, message.chat.id)
    text = message.text or ""
    command = parse_command(text) if _starts_with_command(message) else None
    if command is not None:
        replied = message.reply_to_message.message_id if message.reply_to_message is not None else None
        return CommandReceived(key, sender, *command, message.message_id, replied, _args_html(message, text))
    if message.photo:
        largest = message.photo[-1]
        info = FileInfo(largest.file_id, largest.file_unique_id, "photo", largest.file_size, "image/jpeg")
        return FileReceived(key, sender, info, message.message_id)
    if message.document is not None:
        doc = message.document
        info = FileInfo(doc.file_id, doc.file_unique_id, "document", doc.file_size, doc.mime_type)
        return FileReceived(key, sender, info, message.message_id)
    return TextReceived(key, sender, text, message.message_id)


def _args_html(message: Any, text: str) -> str | None:
    """What follows the command, with the sender's formatting: the frameworks' own entity-to-HTML converters
    (python-telegram-bot's `text_html`, aiogram's `html_text`) make it, so it is escaped and well formed. None
    when the command itself is formatted (its HTML then does not start with it)."""
    html = next((value for name in ("text_html", "html_text")
                 if isinstance(value := getattr(message, name, None), str)), None)
    command = text.split(maxsplit=1)[0] if text.strip() else ""
    if html is None or not command or not html.startswith(command):
        return None
    return html[len(command):].strip()


def _starts_with_command(message: Any) -> bool:
    entities = message.entities or ()
    return any(entity.type == "bot_command" and entity.offset == 0 for entity in entities)
