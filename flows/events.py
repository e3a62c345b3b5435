"""What comes in: every input the engine reacts to, already translated from the platform's update."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class Sender:
    """The person behind an event and the chat it happened in."""

    user_id: int
    chat_id: int
    language: str | None = None


@dataclass(frozen=True)
class TextReceived:
    key: str
    sender: Sender
    text: str
    message_id: int | None = None


@dataclass(frozen=True)
class CommandReceived:
    key: str
    sender: Sender
    name: str
    args: str = ""
    message_id: int | None = None
    reply_to: int | None = None
    args_html: str | None = None
    """The arguments with the sender's own formatting, as Telegram HTML made by the framework from the
    message's entities (escaped); None where the platform gives none (then `args` is plain text)."""


@dataclass(frozen=True)
class ButtonPressed:
    key: str
    sender: Sender
    data: str
    message_id: int | None = None
    callback_id: str | None = None


@dataclass(frozen=True)
class FileInfo:
    """A photo or document as the platform describes it; the engine never downloads anything itself."""

    file_id: str
    unique_id: str
    kind: Literal["photo", "document"]
    size: int | None = None
    mime_type: str | None = None


@dataclass(frozen=True)
class FileReceived:
    key: str
    sender: Sender
    file: FileInfo
    message_id: int | None = None


@dataclass(frozen=True)
class TimerFired:
    key: str
    sender: Sender
    timer_id: int
    case_id: str
    kind: str
    payload: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class ChatReturned:
    """The user unblocked the bot: what was said to them meanwhile was not delivered."""

    key: str
    sender: Sender


def parse_command(text: str, bot_username: str | None = None) -> tuple[str, str] | None:
    """The command in a typed line, as (name, arguments): "/Start@desk_bot  again" is ("start", "again").

    The name is lowercased and loses its "@bot" suffix; the arguments are what follows the first space,
    stripped. None when the line does not start with "/", or names another bot than `bot_username`.
    """
    if not text.startswith("/"):
        return None
    head, _, args = text[1:].partition(" ")
    name, _, addressee = head.partition("@")
    if addressee and bot_username is not None and addressee.lower() != bot_username.lower():
        return None
    return name.lower(), args.strip()


UserEvent = TextReceived | CommandReceived | ButtonPressed | FileReceived | ChatReturned
Event = UserEvent | TimerFired
