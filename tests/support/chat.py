"""A chat driver: tests talk to the bot the way a person does — send, tap a button by its label, read replies."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from bot.app import App
from flows.broadcast import BroadcastService
from flows.clock import FakeClock
from flows.delivery import Delivered, Dispatcher, Transport, Undeliverable
from flows.engine import Engine
from flows.events import ButtonPressed, CommandReceived, FileInfo, FileReceived, Sender, TextReceived, parse_command
from flows.ports import Store
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
from flows.runner import Runner, ServicesFactory
from flows.store.database import SqlStore
from flows.texts import plain_text

_keys = itertools.count(1)
PARAGRAPH = "\n\n"


def said(messages: list[str]) -> list[str]:
    """What the bot said, as paragraphs: the same however its texts were grouped into messages (texts sent back
    to back go out as one message, paragraphs apart; see flows.render.merge_messages)."""
    return [paragraph for message in messages for paragraph in message.split(PARAGRAPH)]


@dataclass
class Shown:
    """A message as it currently stands in the chat."""

    message_id: int
    text: str
    buttons: tuple[tuple[Button, ...], ...] = ()

    def labels(self) -> list[str]:
        return [b.label for row in self.buttons for b in row]


@dataclass
class RecordingTransport:
    """Delivers into memory: every chat's messages as they stand, plus a log of every reply."""

    log: list[Reply] = field(default_factory=list)
    chats: dict[int, list[Shown]] = field(default_factory=dict)
    answers: list[AnswerButton] = field(default_factory=list)
    refuses: Callable[[SendFiles], bool] | None = None  # files the platform will not send (a bad file id)
    _ids: Any = field(default_factory=lambda: itertools.count(1000))

    async def deliver(self, reply: Reply) -> Delivered:
        self.log.append(reply)
        messages = self.chats.setdefault(reply.chat_id, [])
        if isinstance(reply, SendFiles):
            if self.refuses is not None and self.refuses(reply):
                raise Undeliverable("wrong file identifier/HTTP URL specified")
            shown_files = [Shown(next(self._ids), f"[{reply.media} {file_id}]") for file_id in reply.file_ids]
            messages.extend(shown_files)
            return tuple(shown.message_id for shown in shown_files)
        if isinstance(reply, SendMessage):
            shown = Shown(next(self._ids), plain_text(reply.text), reply.buttons)
            messages.append(shown)
            return shown.message_id
        if isinstance(reply, EditMessage):
            for shown in messages:
                if shown.message_id == reply.message_id:
                    shown.text, shown.buttons = plain_text(reply.text), reply.buttons
        elif isinstance(reply, DeleteMessage):
            messages[:] = [m for m in messages if m.message_id != reply.message_id]
        elif isinstance(reply, AnswerButton):
            self.answers.append(reply)
        elif isinstance(reply, SendDocument):
            shown = Shown(next(self._ids), f"[document {reply.filename}] {plain_text(reply.caption)}")
            messages.append(shown)
            return shown.message_id
        elif isinstance(reply, SendPhoto | CopyMessage):
            shown = Shown(next(self._ids), plain_text(getattr(reply, "caption", "")))
            messages.append(shown)
            return shown.message_id
        return None


class Chat:
    """One person in one private chat with the bot."""

    def __init__(self, bot: Bot, user_id: int = 42, language: str | None = "en") -> None:
        self.bot = bot
        self.sender = Sender(user_id=user_id, chat_id=user_id, language=language)
        self.seen_upto = 0

    @property
    def messages(self) -> list[Shown]:
        return self.bot.transport.chats.get(self.sender.chat_id, [])

    def key(self) -> str:
        return f"test:{next(_keys)}"

    async def send(self, text: str, key: str | None = None) -> list[str]:
        """Type a message (a leading slash makes it a command); returns the bot's new messages."""
        command = parse_command(text)
        if command is not None:
            event: Any = CommandReceived(key or self.key(), self.sender, *command)
        else:
            event = TextReceived(key or self.key(), self.sender, text)
        return await self.bot.feed(self, event)

    async def send_file(self, file: FileInfo) -> list[str]:
        return await self.bot.feed(self, FileReceived(self.key(), self.sender, file))

    def button(self, label: str) -> tuple[Shown, Button]:
        """The newest button whose label contains `label`, and the message it sits on."""
        for shown in reversed(self.messages):
            for row in shown.buttons:
                for button in row:
                    if label in button.label:
                        return shown, button
        raise AssertionError(f"no button {label!r}; buttons: {self.buttons}")

    async def tap(self, label: str) -> list[str]:
        shown, button = self.button(label)
        return await self.press(button.data, shown.message_id)

    async def press(self, data: str, message_id: int | None = None, key: str | None = None) -> list[str]:
        """Press a button by its raw data (tests use this to replay old or forged buttons)."""
        event = ButtonPressed(key or self.key(), self.sender, data, message_id, callback_id=f"cb{next(_keys)}")
        return await self.bot.feed(self, event)

    @property
    def last(self) -> str:
        """The newest message's last paragraph (the newest thing said; usually the current step's prompt)."""
        return said([self.messages[-1].text])[-1]

    @property
    def paragraphs(self) -> list[str]:
        """The whole chat as it stands, as paragraphs (see `said`)."""
        return said([shown.text for shown in self.messages])

    @property
    def last_message(self) -> str:
        """The newest message, whole."""
        return self.messages[-1].text

    @property
    def buttons(self) -> list[str]:
        return self.messages[-1].labels() if self.messages else []

    @property
    def last_answer(self) -> str:
        mine = [a for a in self.bot.transport.answers if a.chat_id == self.sender.chat_id]
        return mine[-1].text if mine else ""

    def new_messages(self) -> list[str]:
        fresh = [m.text for m in self.messages[self.seen_upto :]]
        self.seen_upto = len(self.messages)
        return fresh


class Bot:
    """The desk as every entry point assembles it (bot.app.App) over one store, with a recording transport;
    `restart()` keeps the store. Timers fire only when a test fires them (`runner.fire_due_timers()`), by the
    fake clock."""

    def __init__(
        self,
        store: Store | AsyncEngine,
        engine: Engine,
        clock: FakeClock,
        services: ServicesFactory | None = None,
        channels: Transport | None = None,
        transport: RecordingTransport | None = None,
    ) -> None:
        self.db = store if isinstance(store, AsyncEngine) else None  # for tests that read SQL themselves
        self.store: Store = SqlStore(store) if isinstance(store, AsyncEngine) else store
        self.engine = engine
        self.clock = clock
        self.transport = transport or RecordingTransport()  # two desks on one database share one: one Telegram

        async def pass_time(seconds: float) -> None:  # broadcasts pace themselves by the clock: move it
            self.clock.advance(seconds=max(0.0, seconds))
            await asyncio.sleep(0)

        self.app = App(self.store, engine, services, clock, channels, broadcast_rate=1000, broadcast_sleep=pass_time)

    @property
    def runner(self) -> Runner:
        return self.app.runner

    @property
    def broadcasts(self) -> BroadcastService:
        return self.app.broadcasts

    async def start(self) -> Bot:
        await self.app.start(self.transport, fire_timers=False)
        return self

    async def stop(self) -> None:
        await self.app.stop()

    async def restart(self) -> None:
        """Stop cleanly and start again on the same store (the transport keeps the chat history)."""
        await self.app.stop()
        await self.app.start(self.transport, fire_timers=False)
        await self.runner.settle()

    async def feed(self, chat: Chat, event: Any) -> list[str]:
        chat.new_messages()
        await self.runner.handle(event)
        await self.runner.settle()
        return chat.new_messages()

    def chat(self, user_id: int = 42, language: str | None = "en") -> Chat:
        return Chat(self, user_id, language)


def kill_delivery(dispatcher: Dispatcher) -> bool:
    """A kill -9 of delivery: every task of both lanes (workers, recorder, leases) dies where it stands, nothing
    flushed or given up. Returns whether the lanes held delivery leases (a store shared by instances)."""
    lanes = (dispatcher.chat, dispatcher.out_of_band)
    leases = [lane.leases.task for lane in lanes if lane.leases is not None]
    for task in (*[t for lane in lanes for t in (*lane.tasks, lane.recorder.task)], *leases):
        assert task is not None
        task.cancel()
    return bool(leases)
