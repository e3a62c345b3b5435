"""The terminal front end: the same engine and database, with the bot's messages printed and buttons numbered."""

from __future__ import annotations

import asyncio
import hashlib
import mimetypes
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from flows.events import (
    ButtonPressed,
    CommandReceived,
    Event,
    FileInfo,
    FileReceived,
    Sender,
    TextReceived,
    parse_command,
)
from flows.replies import AnswerButton, Button, DeleteMessage, EditMessage, Reply, SendMessage
from flows.texts import plain_text

CONSOLE_USER = Sender(user_id=1, chat_id=1, language="en")


class ConsoleTransport:
    """Prints replies; remembers the buttons on screen so a typed number can press one."""

    def __init__(self, out: TextIO = sys.stdout) -> None:
        self.out = out
        self.buttons: list[tuple[int, Button]] = []
        self._next_id = 1

    async def deliver(self, reply: Reply) -> int | None:
        if isinstance(reply, SendMessage):
            return self._show(reply.text, reply.buttons)
        if isinstance(reply, EditMessage) and reply.buttons:
            self._show(reply.text, reply.buttons, message_id=reply.message_id)
        elif isinstance(reply, AnswerButton) and reply.text:
            self._print(f"  ({plain_text(reply.text)})")
        elif isinstance(reply, DeleteMessage):
            self._print("  (a message with a secret was deleted from the chat)")
        return None

    def _show(self, text: str, rows: tuple[tuple[Button, ...], ...], message_id: int | None = None) -> int:
        message_id = message_id or self._new_id()
        self._print("\nbot> " + plain_text(text).replace("\n", "\n     "))
        flat = [button for row in rows for button in row]
        if flat:
            self.buttons = [(message_id, button) for button in flat]
            for number, button in enumerate(flat, start=1):
                self._print(f"     [{number}] {plain_text(button.label)}")
        return message_id

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _print(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()


FILE_COMMANDS = {"photo": "photo", "file": "document"}


class ConsoleInputError(ValueError):
    """A typed line the console itself cannot turn into an event (e.g. a missing file)."""


def to_event(line: str, transport: ConsoleTransport, sender: Sender = CONSOLE_USER) -> Event | None:
    """What a typed line means: a button number, /photo or /file PATH, a /command, or text. None if empty."""
    line = line.strip()
    key = f"console:{uuid.uuid4().hex}"
    if not line:
        return None
    if line.isdigit() and 1 <= int(line) <= len(transport.buttons):
        message_id, button = transport.buttons[int(line) - 1]
        return ButtonPressed(key, sender, button.data, message_id, callback_id=key)
    command = parse_command(line)
    if command is None:
        return TextReceived(key, sender, line)
    name, args = command
    if name in FILE_COMMANDS:
        return FileReceived(key, sender, local_file(args, FILE_COMMANDS[name]))
    return CommandReceived(key, sender, name, args)


def local_file(path_text: str, kind: str) -> FileInfo:
    """A file on this machine described the way Telegram describes an upload."""
    path = Path(path_text).expanduser()
    if not path_text or not path.is_file():
        raise ConsoleInputError(f"no such file: {path_text or '(none given)'} — try /photo path/to/picture.jpg")
    content = path.read_bytes()
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    unique = hashlib.sha256(content).hexdigest()[:16]
    return FileInfo(f"local:{path.resolve()}", unique, "photo" if kind == "photo" else "document",
                    size=len(content), mime_type=mime)


async def read_lines(handle: Callable[[str], asyncio.Future[None] | object], stdin: TextIO = sys.stdin) -> None:
    """Feed stdin to `handle` line by line until end of input or /quit."""
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, stdin.readline)
        if not line or line.strip() in ("/quit", "/exit"):
            return
        result = handle(line)
        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
            await result
