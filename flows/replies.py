"""What goes out: rendered messages and platform actions, plain values that any front end can deliver."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Button:
    label: str
    data: str


@dataclass(frozen=True)
class SendMessage:
    """A new message. A `sensitive` one (it shows a code) is blanked in the outbox once delivered."""

    chat_id: int
    text: str
    buttons: tuple[tuple[Button, ...], ...] = ()
    sensitive: bool = False
    delete_after: int | None = None


@dataclass(frozen=True)
class EditMessage:
    """Replace a message the bot sent earlier, usually to remove the buttons that were just pressed."""

    chat_id: int
    message_id: int
    text: str
    buttons: tuple[tuple[Button, ...], ...] = ()


@dataclass(frozen=True)
class DeleteMessage:
    chat_id: int
    message_id: int


@dataclass(frozen=True)
class AnswerButton:
    """Acknowledge a button press (Telegram shows a spinner until this arrives)."""

    chat_id: int
    callback_id: str
    text: str = ""


@dataclass(frozen=True)
class CopyMessage:
    """Copy a message (text, media, formatting) from another chat, as broadcasts do."""

    chat_id: int
    from_chat_id: int
    message_id: int


@dataclass(frozen=True)
class SendPhotos:
    """Photos the platform already has (by file id), as one album."""

    chat_id: int
    file_ids: tuple[str, ...]
    caption: str = ""


@dataclass(frozen=True)
class SendPhoto:
    """A picture made here (a PNG, base64-encoded). A `sensitive` one is blanked in the outbox once delivered."""

    chat_id: int
    png_base64: str
    caption: str = ""
    sensitive: bool = False
    delete_after: int | None = None


@dataclass(frozen=True)
class Notify:
    """A message outside the chat (an email over SMTP, an SMS through the webhook) for the user of `chat_id`.

    It carries a code, so it is `sensitive`: blanked in the outbox once delivered.
    """

    chat_id: int
    channel: str
    to: str
    subject: str
    body: str
    sensitive: bool = True


Reply = SendMessage | EditMessage | DeleteMessage | AnswerButton | CopyMessage | SendPhotos | SendPhoto | Notify

_KINDS: dict[str, type[Reply]] = {
    "send": SendMessage,
    "edit": EditMessage,
    "delete": DeleteMessage,
    "answer": AnswerButton,
    "copy": CopyMessage,
    "photos": SendPhotos,
    "photo": SendPhoto,
    "notify": Notify,
}
_NAMES = {cls: name for name, cls in _KINDS.items()}


def reply_to_json(reply: Reply) -> dict[str, Any]:
    """A JSON-ready dict for the outbox."""
    body: dict[str, Any] = {"kind": _NAMES[type(reply)], **reply.__dict__}
    if "buttons" in body:
        body["buttons"] = [[[b.label, b.data] for b in row] for row in body["buttons"]]
    return body


def reply_from_json(body: dict[str, Any]) -> Reply:
    """The inverse of `reply_to_json`."""
    fields = dict(body)
    cls = _KINDS[fields.pop("kind")]
    if "buttons" in fields:
        fields["buttons"] = tuple(tuple(Button(label, data) for label, data in row) for row in fields["buttons"])
    if "file_ids" in fields:
        fields["file_ids"] = tuple(fields["file_ids"])
    return cls(**fields)
