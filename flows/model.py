"""The vocabulary of flows: a flow is data — steps with prompts, buttons, accepted input and exits.

Step ids are stable snake_case strings and are stored in the database, so renaming one needs a migration. An id
written as "flow:step" points into another flow (used for fallbacks between recovery methods).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from types import MappingProxyType
from typing import Any

from flows.events import Event, FileInfo, FileReceived, TextReceived
from flows.records import ANY_STEP as ANY_STEP  # re-exported: the vocabulary flows are written in
from flows.records import Case
from flows.records import Effect as Effect
from flows.records import TimerSpec as TimerSpec
from flows.texts import Text

ID_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,23}$")


class Accepts(Enum):
    """The kind of message a step waits for, besides its buttons."""

    NOTHING = "nothing"
    TEXT = "text"
    FILE = "file"


@dataclass(frozen=True)
class Notice:
    """A message outside the chat — an email or an SMS — sent after the event commits."""

    channel: str
    to: str
    subject: Text
    body: Text


@dataclass(frozen=True)
class Attachment:
    """A file the platform already has: its id, and whether it arrived as a "photo" or a "document"."""

    file_id: str
    kind: str = "photo"


@dataclass(frozen=True)
class Letter:
    """A message to chats other than the event's own (staff cards, the user of a reviewed case).

    `buttons` hold (label key, callback data) pairs; `files` go first, photos and documents each in albums of
    their own (`files_of` names the case whose evidence they are). A letter with files and buttons shows its
    buttons only where every file was delivered; elsewhere it says `if_files_fail` instead. `png_base64` sends a
    picture with `text` as its caption. A `sensitive` letter is blanked in the outbox once delivered, and one
    with `delete_after` (seconds) is deleted from the chat that long after it arrived.
    """

    chat_ids: tuple[int, ...]
    text: Text
    buttons: tuple[tuple[tuple[str, str], ...], ...] = ()
    files: tuple[Attachment, ...] = ()
    files_of: str | None = None
    if_files_fail: Text | None = None
    png_base64: str | None = None
    sensitive: bool = False
    delete_after: int | None = None


AuditLine = tuple[str, str, Mapping[str, Any]]  # (action, subject, detail), written with the event


@dataclass(frozen=True)
class Goto:
    """Move the case to `step` (in this flow, or "flow:step"), saying `say` first and merging `data`; `audit`
    lines are written by the user's name."""

    step: str
    say: tuple[Text, ...] = ()
    data: Mapping[str, Any] = field(default_factory=dict)
    timers: tuple[TimerSpec, ...] = ()
    notify: tuple[Notice, ...] = ()
    letters: tuple[Letter, ...] = ()
    audit: tuple[AuditLine, ...] = ()


@dataclass(frozen=True)
class Stay:
    """Keep the case at its step. With no `data`, nothing changes: this is how invalid input is refused."""

    say: tuple[Text, ...] = ()
    data: Mapping[str, Any] = field(default_factory=dict)
    timers: tuple[TimerSpec, ...] = ()
    show_prompt: bool = True
    notify: tuple[Notice, ...] = ()
    letters: tuple[Letter, ...] = ()
    audit: tuple[AuditLine, ...] = ()


@dataclass(frozen=True)
class Begin:
    """Open a new case in `flow`, closing the chat's current case (if any) as `replaced`."""

    flow: str
    say: tuple[Text, ...] = ()
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Close:
    """Close the current case with `status` (e.g. "cancelled")."""

    status: str
    say: tuple[Text, ...] = ()
    data: Mapping[str, Any] = field(default_factory=dict)
    timers: tuple[TimerSpec, ...] = ()
    notify: tuple[Notice, ...] = ()


@dataclass(frozen=True)
class Say:
    """Only reply (to the event's chat, or to `to_chats`); nothing about the case changes."""

    say: tuple[Text, ...] = ()
    to_chats: tuple[int, ...] = ()
    letters: tuple[Letter, ...] = ()
    audit: tuple[tuple[str, str, Mapping[str, Any]], ...] = ()
    effects: tuple[Effect, ...] = ()


@dataclass(frozen=True)
class OnCase:
    """A staff decision: apply `outcome` to the target case (its replies go to that case's chat), then tell the
    staff member `tell` in their own chat. `audit` lines are (action, subject, detail)."""

    outcome: Goto | Stay | Close
    tell: tuple[Text, ...] = ()
    audit: tuple[tuple[str, str, Mapping[str, Any]], ...] = ()


Outcome = Goto | Stay | Begin | Close | Say | OnCase


@dataclass(frozen=True)
class Context:
    """What an action sees: the event, the time, the case (read-only data) and the app's services."""

    event: Event
    now: datetime
    case: Case | None
    services: Any
    language: str | None
    choice: Choice | None = None
    target: Case | None = None

    @property
    def data(self) -> Mapping[str, Any]:
        return MappingProxyType(self.case.data if self.case else {})

    @property
    def text(self) -> str:
        return self.event.text if isinstance(self.event, TextReceived) else ""

    @property
    def file(self) -> FileInfo | None:
        return self.event.file if isinstance(self.event, FileReceived) else None


Action = Callable[["Context"], Awaitable[Outcome]]
Params = Callable[["Context"], Mapping[str, object]]


@dataclass(frozen=True)
class Choice:
    """A button. It either goes straight `to` a step or lets `run` decide, returning one of `exits`."""

    id: str
    label: str
    to: str | None = None
    run: Action | None = None
    exits: tuple[str, ...] = ()
    shown: Callable[[Context], bool] | None = None
    label_params: Params | None = None

    def targets(self) -> tuple[str, ...]:
        """Every step this button can lead to."""
        return ((self.to,) if self.to else ()) + self.exits


@dataclass(frozen=True)
class Step:
    """One point in a conversation: what the bot says, which buttons it offers, what input it accepts.

    `expects` names the kind of text the step asks for ("code", "email", "answer", ...); the anti-phishing guard
    lets through only what was asked for.
    """

    id: str
    prompt: str
    choices: tuple[Choice, ...] = ()
    accepts: Accepts = Accepts.NOTHING
    on_input: Action | None = None
    exits: tuple[str, ...] = ()
    final: str | None = None
    prompt_params: Params | None = None
    on_timer: Mapping[str, Action] = field(default_factory=dict)
    columns: int = 1
    expects: str | None = None

    def targets(self) -> tuple[str, ...]:
        """Every step this step can lead to, by input, button or timer."""
        from_choices = tuple(target for choice in self.choices for target in choice.targets())
        return self.exits + from_choices


@dataclass(frozen=True)
class Flow:
    """A named graph of steps; a case starts at `start`."""

    id: str
    title: str
    start: str
    steps: tuple[Step, ...]

    def __post_init__(self) -> None:
        by_id: dict[str, Step] = {}
        for step in self.steps:
            if not ID_PATTERN.match(step.id) or step.id in by_id:
                raise ValueError(f"flow {self.id}: bad or repeated step id {step.id!r}")
            for choice in step.choices:
                if not ID_PATTERN.match(choice.id):
                    raise ValueError(f"flow {self.id}, step {step.id}: bad choice id {choice.id!r}")
            by_id[step.id] = step
        object.__setattr__(self, "_by_id", by_id)

    def step(self, step_id: str) -> Step:
        """The step called `step_id`; KeyError if there is none."""
        by_id: dict[str, Step] = object.__getattribute__(self, "_by_id")
        return by_id[step_id]

    def has(self, step_id: str) -> bool:
        return step_id in object.__getattribute__(self, "_by_id")


def qualify(flow_id: str, target: str) -> tuple[str, str]:
    """Split a step reference into (flow, step); a bare step id belongs to `flow_id`."""
    if ":" in target:
        flow, _, step = target.partition(":")
        return flow, step
    return flow_id, target
