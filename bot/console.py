"""The terminal front end: the same engine and database, with the bot's messages printed and buttons numbered.

One terminal plays two people: the user (`bot>` lines, buttons 1, 2, …) and a staff member who reviews Method 2
(`staff>` lines, buttons s1, s2, …). Each side's numbers press the buttons of the latest keyboard shown to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import mimetypes
import re
import sys
import threading
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TextIO

from flows.delivery import Delivered
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
from flows.replies import (
    AnswerButton,
    Button,
    CopyMessage,
    DeleteMessage,
    EditMessage,
    Reply,
    SendFiles,
    SendMessage,
    SendPhoto,
)
from flows.texts import plain_text

CONSOLE_USER = Sender(user_id=1, chat_id=1, language="en")
CONSOLE_STAFF = Sender(user_id=2, chat_id=2, language="en")
"""The console's one admin: a fixed id that only the console makes staff (never read from the settings)."""
STAFF_COMMANDS = ("queue", "case", "reject", "stats", "audit", "broadcast", "broadcast_cancel")
"""Commands typed in the console that the staff member sends (as in bot/run.py's ADMIN_COMMANDS)."""
STAFF_KEY = "s"  # staff buttons are typed s1, s2, …
GROUPED_KEY = re.compile(r"\b(?:[A-Z2-7]{4} ){3,}[A-Z2-7]{4}\b")  # a new authenticator key, as the bot shows it


def code_command(secret: str) -> str:
    """A command that prints the current code of a TOTP key, for trying the console without an authenticator:
    this Python (which has pyotp), named from the current folder where it is inside it."""
    python = Path(sys.executable)
    with contextlib.suppress(ValueError):
        python = Path(".") / python.relative_to(Path.cwd())
    return f"{python} -c \"import pyotp; print(pyotp.TOTP('{secret}').now())\""


class ConsoleTransport:
    """Prints replies, the staff chat's marked `staff>`; remembers each side's buttons so a typed number (or s1,
    s2 for staff) can press one."""

    def __init__(self, out: TextIO = sys.stdout) -> None:
        self.out = out
        self.keyboards: dict[str, list[tuple[int, Button]]] = {"": [], STAFF_KEY: []}
        self._next_id = 1

    @property
    def buttons(self) -> list[tuple[int, Button]]:
        """The user's buttons on screen."""
        return self.keyboards[""]

    async def deliver(self, reply: Reply) -> Delivered:
        staff = getattr(reply, "chat_id", None) == CONSOLE_STAFF.chat_id
        if isinstance(reply, SendMessage):
            message_id = self._show(staff, reply.text, reply.buttons)
            if reply.sensitive and (key := GROUPED_KEY.search(plain_text(reply.text))):
                self._print("  (console: its current code, without an authenticator app: "
                            f"{code_command(key.group(0).replace(' ', ''))})")
            return message_id
        if isinstance(reply, SendFiles):
            names = [Path(file_id.removeprefix("local:")).name for file_id in reply.file_ids]
            self._say(staff, [f"[{reply.media}] {name}" for name in names])
            return tuple(self._new_id() for _ in names)
        if isinstance(reply, SendPhoto):
            self._say(staff, [f"[picture] {plain_text(reply.caption)}".rstrip()])
            return self._new_id()
        if isinstance(reply, CopyMessage):
            self._say(staff, [f"(a copy of message {reply.message_id})"])
            return self._new_id()
        if isinstance(reply, EditMessage) and reply.buttons:
            self._show(staff, reply.text, reply.buttons, message_id=reply.message_id)
        elif isinstance(reply, AnswerButton) and reply.text:
            self._print(f"  ({plain_text(reply.text)})")
        elif isinstance(reply, DeleteMessage):
            self._print("  (a message was deleted from the staff chat)" if staff
                        else "  (a message with a secret was deleted from the chat)")
        return None

    def _show(self, staff: bool, text: str, rows: tuple[tuple[Button, ...], ...], message_id: int | None = None
              ) -> int:
        message_id = message_id or self._new_id()
        self._say(staff, plain_text(text).split("\n"))
        flat = [button for row in rows for button in row]
        if flat:
            key = STAFF_KEY if staff else ""
            self.keyboards[key] = [(message_id, button) for button in flat]
            indent = " " * len(self._prefix(staff))
            for number, button in enumerate(flat, start=1):
                self._print(f"{indent}[{key}{number}] {plain_text(button.label)}")
        return message_id

    @staticmethod
    def _prefix(staff: bool) -> str:
        return "staff> " if staff else "bot> "

    def _say(self, staff: bool, lines: list[str]) -> None:
        prefix = self._prefix(staff)
        self._print("\n" + prefix + ("\n" + " " * len(prefix)).join(lines))

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
    """What a typed line means: a button number (s1, s2 for staff's), /photo or /file PATH, a /command (staff's
    are sent by the staff member), or text. None if empty."""
    line = line.strip()
    key = f"console:{uuid.uuid4().hex}"
    if not line:
        return None
    pressed = _button(line, transport)
    if pressed is not None:
        who, (message_id, button) = pressed
        return ButtonPressed(key, who, button.data, message_id, callback_id=key)
    command = parse_command(line)
    if command is None:
        return TextReceived(key, sender, line)
    name, args = command
    if name in FILE_COMMANDS:
        return FileReceived(key, sender, local_file(args, FILE_COMMANDS[name]))
    return CommandReceived(key, CONSOLE_STAFF if name in STAFF_COMMANDS else sender, name, args)


def _button(line: str, transport: ConsoleTransport) -> tuple[Sender, tuple[int, Button]] | None:
    """The button a typed `3` (the user's) or `s3` (staff's) names, and who presses it."""
    staff = line[:1].lower() == STAFF_KEY
    number = line[1:] if staff else line
    keyboard = transport.keyboards[STAFF_KEY if staff else ""]
    if not number.isdigit() or not 1 <= int(number) <= len(keyboard):
        return None
    return (CONSOLE_STAFF if staff else CONSOLE_USER), keyboard[int(number) - 1]


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


PROMPT = "> "


def is_terminal(stdin: TextIO) -> bool:
    try:
        return stdin.isatty()
    except (AttributeError, ValueError):
        return False


def line_editing(stdin: TextIO) -> bool:
    """Line editing and history (in memory only: typed answers and codes are not written to a file) with the
    standard library's readline, where stdin is this process's terminal and readline exists."""
    if stdin is not sys.stdin or not is_terminal(stdin):
        return False
    try:
        import readline  # noqa: F401  (importing it is what gives input() editing and history)
    except ImportError:
        return False
    return True


def _read_one(stdin: TextIO, edit: bool) -> str:
    """One line, "" at end of input (Ctrl-D)."""
    if not edit:
        return stdin.readline()
    try:
        return input(PROMPT) + "\n"
    except EOFError:
        return ""


async def next_line(stdin: TextIO, edit: bool) -> str:
    """The next line, read in a daemon thread only once asked for (a line may depend on what was printed): a read
    still blocked when the console leaves (Ctrl-C) never holds the process up."""
    loop = asyncio.get_running_loop()
    line: asyncio.Future[str] = loop.create_future()

    def settle(result: str | BaseException) -> None:
        if line.done():
            return
        if isinstance(result, BaseException):
            line.set_exception(result)
        else:
            line.set_result(result)

    def read() -> None:
        try:
            result: str | BaseException = _read_one(stdin, edit)
        except Exception as error:  # e.g. stdin closed under us
            result = error
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits for it any more
            loop.call_soon_threadsafe(settle, result)

    threading.Thread(target=read, name="console-stdin", daemon=True).start()
    return await line


async def read_lines(handle: Callable[[str], Awaitable[None]], stdin: TextIO = sys.stdin) -> None:
    """Feed stdin to `handle` line by line until end of input (Ctrl-D) or /quit."""
    edit = line_editing(stdin)
    while True:
        line = await next_line(stdin, edit)
        if not line or line.strip() in ("/quit", "/exit"):
            return
        await handle(line)
