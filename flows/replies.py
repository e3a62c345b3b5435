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
class SendFiles:
    """Files the platform already has (by file id), all of one `media` kind ("photo" or "document"): one file
    goes on its own, 2–10 as an album. `case_id` marks a case's identity evidence: its messages are recorded so
    that purging the case's documents deletes them too."""

    chat_id: int
    media: str
    file_ids: tuple[str, ...]
    caption: str = ""
    case_id: str | None = None


@dataclass(frozen=True)
class SendCard:
    """A message whose buttons act on files sent just before it (a review card). It goes out with its buttons
    only if every reply in `evidence` was delivered to this chat; otherwise as `fallback`, without buttons.

    `evidence` holds outbox ids; until the card is queued, offsets back from it (-1: the reply just before).
    """

    chat_id: int
    text: str
    buttons: tuple[tuple[Button, ...], ...]
    fallback: str
    evidence: tuple[int, ...]

    def message(self, evidence_delivered: bool) -> SendMessage:
        """What to send, once the outcome of the evidence is known."""
        if evidence_delivered:
            return SendMessage(self.chat_id, self.text, self.buttons)
        return SendMessage(self.chat_id, self.fallback)


@dataclass(frozen=True)
class SendPhoto:
    """A picture made here (a PNG, base64-encoded). A `sensitive` one is blanked in the outbox once delivered."""

    chat_id: int
    png_base64: str
    caption: str = ""
    sensitive: bool = False
    delete_after: int | None = None


@dataclass(frozen=True)
class SendDocument:
    """A file made here (base64-encoded), sent as a document named `filename`. A `sensitive` one is blanked in the
    outbox once delivered."""

    chat_id: int
    filename: str
    content_base64: str
    caption: str = ""
    sensitive: bool = False


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


Reply = (SendMessage | EditMessage | DeleteMessage | AnswerButton | CopyMessage | SendFiles | SendCard | SendPhoto
         | SendDocument | Notify)

_KINDS: dict[str, type[Reply]] = {
    "send": SendMessage,
    "edit": EditMessage,
    "delete": DeleteMessage,
    "answer": AnswerButton,
    "copy": CopyMessage,
    "files": SendFiles,
    "card": SendCard,
    "photo": SendPhoto,
    "document": SendDocument,
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
    kind = fields.pop("kind")
    if kind == "photos":  # an album queued before files carried their kind
        kind, fields["media"] = "files", "photo"
    cls = _KINDS[kind]
    if "buttons" in fields:
        fields["buttons"] = tuple(tuple(Button(label, data) for label, data in row) for row in fields["buttons"])
    for name in ("file_ids", "evidence"):
        if name in fields:
            fields[name] = tuple(fields[name])
    return cls(**fields)
