"""Rendering: texts in the reader's language, a step's prompt with its buttons, a letter as the replies that carry
it. No decisions here; the engine decides what to say, this says it."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from flows.model import Attachment, Choice, Context, Letter, Step
from flows.records import Case
from flows.replies import Button, Notify, Reply, SendCard, SendDocument, SendFiles, SendMessage, SendPhoto
from flows.texts import Text

Translator = Callable[..., str]
ALBUM_LIMIT = 10  # Telegram's sendMediaGroup takes 2-10 items
MESSAGE_LIMIT = 4096  # Telegram's limit for one message, in UTF-16 code units
PARAGRAPH = "\n\n"  # what joins two texts merged into one message


class Renderer:
    """Texts through `translator`, with `defaults` (e.g. the service's name) filled into every one."""

    def __init__(self, translator: Translator, defaults: Mapping[str, object]) -> None:
        self.translator = translator
        self.defaults = dict(defaults)

    def say(self, message: Text, language: str | None) -> str:
        return self.translator(message, language, **self.defaults)

    def prompt(self, case: Case, step: Step, ctx: Context, language: str | None) -> SendMessage:
        """The step's prompt with the buttons it shows now, bound to the case and its turn."""
        text = self.say(Text(step.prompt, step.prompt_params(ctx) if step.prompt_params else {}), language)
        shown = [c for c in step.choices if c.shown is None or c.shown(ctx)]
        buttons = [Button(self.label(c, ctx, language), f"{case.id}:{case.turn}:{c.id}") for c in shown]
        rows = tuple(tuple(buttons[i : i + step.columns]) for i in range(0, len(buttons), step.columns))
        return SendMessage(case.chat_id, text, () if step.final else rows)

    def label(self, choice: Choice, ctx: Context, language: str | None) -> str:
        params = choice.label_params(ctx) if choice.label_params else {}
        return self.say(Text(choice.label, params), language)

    def letter(self, chat_id: int, letter: Letter, language: str | None) -> list[Reply]:
        """The files first, then the message; a card keeps its buttons only where every file arrived."""
        text = self.say(letter.text, language)
        albums: list[Reply] = list(file_albums(chat_id, letter.files, letter.files_of))
        if letter.png_base64 is not None:
            return [*albums, SendPhoto(chat_id, letter.png_base64, text, sensitive=letter.sensitive,
                                       delete_after=letter.delete_after)]
        if letter.document is not None:
            name, content = letter.document
            return [*albums, SendDocument(chat_id, name, content, text, sensitive=letter.sensitive)]
        rows = tuple(tuple(Button(self.say(Text(label), language), data) for label, data in row)
                     for row in letter.buttons)
        if albums and rows:  # buttons only where the files they act on arrived
            notice = self.say(letter.if_files_fail, language) if letter.if_files_fail else ""
            fallback = f"{text}\n\n{notice}" if notice else text
            return [*albums, SendCard(chat_id, text, rows, fallback, tuple(range(-len(albums), 0)))]
        return [*albums, SendMessage(chat_id, text, rows, sensitive=letter.sensitive,
                                     delete_after=letter.delete_after)]


def file_albums(chat_id: int, files: tuple[Attachment, ...], case_id: str | None) -> list[SendFiles]:
    """Photos together, documents together (Telegram groups documents only with documents), at most
    ALBUM_LIMIT to an album; an album of one is sent as a single photo or document."""
    albums = []
    for media in ("photo", "document"):
        ids = [f.file_id for f in files if f.kind == media]
        for start in range(0, len(ids), ALBUM_LIMIT):
            albums.append(SendFiles(chat_id, media, tuple(ids[start : start + ALBUM_LIMIT]), case_id=case_id))
    return albums


def utf16_units(text: str) -> int:
    """How long Telegram counts `text`: UTF-16 code units (a character outside the BMP, e.g. most emoji, is 2)."""
    return len(text) + sum(1 for char in text if ord(char) > 0xFFFF)


def merge_messages(replies: Sequence[Reply]) -> list[Reply]:
    """One event's replies with back-to-back texts to one chat sent as one message, paragraphs apart.

    A text joins the message before it in its chat when neither has buttons, neither is sensitive nor deletes
    itself, the two differ only in text, and the joined text stays within MESSAGE_LIMIT. A message with buttons
    stays apart: a press edits it to its own prompt again, which would wipe whatever had been joined to it.
    Only a `SendMessage` merges; anything else in the chat (media, a card, an edit, a button's answer) keeps the
    texts either side of it apart. Replies that go elsewhere — another chat, or an
    email or SMS (`Notify`) — do not: whether a code also went out by SMS must not change what the chat gets.
    The merged message takes the place of the first; a card's evidence offsets are kept pointing at its files.
    """
    merged: list[Reply] = []
    moved_to: list[int] = []  # for each reply given, its index in `merged`
    open_in: dict[int, int] = {}  # chat id → index in `merged` of the message a next text may join
    for reply in replies:
        if isinstance(reply, Notify):
            moved_to.append(len(merged))
            merged.append(reply)
            continue
        at = open_in.pop(reply.chat_id, None)
        if at is not None and isinstance(reply, SendMessage):
            earlier = merged[at]
            assert isinstance(earlier, SendMessage)
            if _joinable(earlier, reply):
                merged[at] = replace(reply, text=f"{earlier.text.rstrip()}{PARAGRAPH}{reply.text.lstrip()}")
                moved_to.append(at)
                open_in[reply.chat_id] = at
                continue
        if isinstance(reply, SendCard) and any(offset < 0 for offset in reply.evidence):
            here = len(moved_to)
            reply = replace(reply, evidence=tuple(
                moved_to[here + offset] - len(merged) if offset < 0 else offset for offset in reply.evidence))
        moved_to.append(len(merged))
        merged.append(reply)
        if _open(reply):
            open_in[reply.chat_id] = len(merged) - 1
    return merged


def _open(reply: Reply) -> bool:
    """Whether a later text may join this reply."""
    return (type(reply) is SendMessage and not reply.buttons and not reply.sensitive and reply.delete_after is None
            and bool(reply.text))


def _joinable(earlier: SendMessage, later: SendMessage) -> bool:
    """Whether `later` may join `earlier` (which is open: see `_open`)."""
    return (type(later) is SendMessage and _open(earlier) and not later.buttons and not later.sensitive
            and later.delete_after is None and bool(later.text)
            and replace(earlier, text="") == replace(later, text="")
            and utf16_units(earlier.text) + utf16_units(PARAGRAPH) + utf16_units(later.text) <= MESSAGE_LIMIT)
