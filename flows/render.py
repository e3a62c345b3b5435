"""Rendering: texts in the reader's language, a step's prompt with its buttons, a letter as the replies that carry
it. No decisions here; the engine decides what to say, this says it."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from flows.model import Attachment, Choice, Context, Letter, Step
from flows.records import Case
from flows.replies import Button, Reply, SendCard, SendFiles, SendMessage, SendPhoto
from flows.texts import Text

Translator = Callable[..., str]
ALBUM_LIMIT = 10  # Telegram's sendMediaGroup takes 2-10 items


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
