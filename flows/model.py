"""The vocabulary of flows: a flow is data — steps with prompts, buttons, accepted input and exits.

Step ids are stable snake_case strings and are stored in the database, so renaming one needs a migration. An id
written as "flow:step" points into another flow (used for fallbacks between recovery methods).

Every way out of a step is declared once: a button's `to`, or the steps its action `leads_to`; the steps the
step's input and timer actions lead to. A flow refuses, as it is built, a target that names no step of its own,
and `check_links` refuses one into another flow that does not exist, so a wrong target fails at import. Steps
entered from outside the graph (by a command or a staff decision) are the flow's declared `entries`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from types import MappingProxyType
from typing import Any, TypeVar

from flows.events import Event, FileInfo, FileReceived, TextReceived
from flows.records import ANY_STEP as ANY_STEP  # re-exported: the vocabulary flows are written in
from flows.records import Case
from flows.records import Effect as Effect
from flows.records import TimerSpec as TimerSpec
from flows.texts import Text

ID_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,23}$")
BACK = "<back>"  # a Goto to BACK returns to the step saved in data["_return"] (used by detours like /cancel)
EXITS = "__flow_exits__"
Declared = TypeVar("Declared", bound=Callable[..., Any])


def leads_to(*targets: str) -> Callable[[Declared], Declared]:
    """Declare, on an action, the steps its `Goto`s may name; a step or button using it takes them as its exits
    (and the engine refuses any other)."""

    def declare(action: Declared) -> Declared:
        setattr(action, EXITS, tuple(targets))
        return action

    return declare


def exits_of(action: object) -> tuple[str, ...]:
    """The steps an action was declared to lead to (none for one that only stays, begins or closes)."""
    return tuple(getattr(action, EXITS, ()))


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
    picture with `text` as its caption, and `document` a file. A `sensitive` letter is blanked in the outbox once
    delivered, and one with `delete_after` (seconds) is deleted from the chat that long after it arrived.
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
    document: tuple[str, str] | None = None
    """(file name, base64 content) of a file made here, sent as a document with `text` as its caption."""


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
    language: str | None = None  # to say `say` in, when not the chats' own (just after a /language choice)


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
    """A button. It either goes straight `to` a step or lets `run` decide, going to one of the steps `run` was
    declared to lead to (see `leads_to`)."""

    id: str
    label: str
    to: str | None = None
    run: Action | None = None
    shown: Callable[[Context], bool] | None = None
    label_params: Params | None = None

    def targets(self) -> tuple[str, ...]:
        """Every step this button can lead to."""
        return ((self.to,) if self.to else ()) + exits_of(self.run)


@dataclass(frozen=True)
class Step:
    """One point in a conversation: what the bot says, which buttons it offers, what input it accepts.

    `expects` names the kind of text the step asks for ("code", "email", "answer", ...); the anti-phishing guard
    lets through only what was asked for. `on_timer` maps the timer kinds that apply at this step to their
    handlers: a timer a case sets fires only while the case is at a step that handles its kind. `code_factor`
    names the factor ("phone", "email") whose sent code the step waits for. `secrets` names the case data
    that holds a secret needed only at this step: the engine removes it from the case once the case leaves the
    step or ends, however (a confirmed code, a move to another step, a close, a cancel, an expiry, a new /start).
    """

    id: str
    prompt: str
    choices: tuple[Choice, ...] = ()
    accepts: Accepts = Accepts.NOTHING
    on_input: Action | None = None
    final: str | None = None
    prompt_params: Params | None = None
    on_timer: Mapping[str, Action] = field(default_factory=dict)
    columns: int = 1
    expects: str | None = None
    code_factor: str | None = None
    secrets: tuple[str, ...] = ()

    @property
    def exits(self) -> tuple[str, ...]:
        """The steps the step's input can lead to (declared on `on_input`)."""
        return exits_of(self.on_input)

    def timer_exits(self) -> tuple[str, ...]:
        """The steps the step's timers can lead to."""
        return tuple(target for action in self.on_timer.values() for target in exits_of(action))

    def targets(self) -> tuple[str, ...]:
        """Every step this step can lead to, by input, button or timer."""
        from_choices = tuple(target for choice in self.choices for target in choice.targets())
        return self.exits + self.timer_exits() + from_choices


@dataclass(frozen=True)
class Flow:
    """A named graph of steps; a case starts at `start`. `entries` are the steps a case may also be sent to from
    outside the graph: by a command or a staff decision (see `entry`). `stages` group the steps, in order, into
    what /status tells the user ("step 3 of 7: your security question"): (text key, step ids), each step in one.

    Building a flow checks it: ids well formed and unique, and `start`, `entries` and every target within the
    flow naming one of its steps (targets in other flows are checked by `check_links`).
    """

    id: str
    title: str
    start: str
    steps: tuple[Step, ...]
    entries: tuple[str, ...] = ()
    stages: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def __post_init__(self) -> None:
        by_id: dict[str, Step] = {}
        for step in self.steps:
            if not ID_PATTERN.match(step.id) or step.id in by_id:
                raise ValueError(f"flow {self.id}: bad or repeated step id {step.id!r}")
            choice_ids = [choice.id for choice in step.choices]
            for choice_id in choice_ids:
                if not ID_PATTERN.match(choice_id) or choice_ids.count(choice_id) > 1:
                    raise ValueError(f"flow {self.id}, step {step.id}: bad or repeated choice id {choice_id!r}")
            by_id[step.id] = step
        object.__setattr__(self, "_by_id", by_id)
        for where, step_id in (("start", self.start), *(("entry", entry) for entry in self.entries)):
            if step_id not in by_id:
                raise ValueError(f"flow {self.id}: {where} {step_id!r} is not a step of the flow")
        for source, target in self.links():
            flow_id, step_id = qualify(self.id, target)
            if flow_id == self.id and step_id not in by_id:
                raise ValueError(f"flow {self.id}: step {source} leads to {target!r}, which is not a step")
        staged = [step_id for _, step_ids in self.stages for step_id in step_ids]
        if self.stages and sorted(staged) != sorted(by_id):
            raise ValueError(f"flow {self.id}: its stages must hold each of its steps once")

    def stage_of(self, step_id: str) -> tuple[int, str] | None:
        """The stage a step is in, as (its number from 1, its text key); None for a flow without stages."""
        for number, (key, step_ids) in enumerate(self.stages, start=1):
            if step_id in step_ids:
                return number, key
        return None

    def links(self) -> tuple[tuple[str, str], ...]:
        """(step, target) for every way out of every step, BACK left out."""
        return tuple((step.id, target) for step in self.steps for target in step.targets() if target != BACK)

    def step(self, step_id: str) -> Step:
        """The step called `step_id`; KeyError if there is none."""
        by_id: dict[str, Step] = object.__getattribute__(self, "_by_id")
        return by_id[step_id]

    def has(self, step_id: str) -> bool:
        return step_id in object.__getattribute__(self, "_by_id")

    def entry(self, step_id: str) -> str:
        """The "flow:step" reference to a declared entry; ValueError (at import, where it is used) otherwise."""
        if step_id not in self.entries:
            raise ValueError(f"flow {self.id}: {step_id!r} is not a declared entry")
        return f"{self.id}:{step_id}"

    def handling(self, kind: str) -> tuple[str, ...]:
        """The steps where a timer of `kind` applies: those that declare a handler for it."""
        return tuple(step.id for step in self.steps if kind in step.on_timer)


def check_links(flows: Iterable[Flow]) -> tuple[Flow, ...]:
    """Check that flow ids are unique and every target into another flow names a step there; the flows back."""
    every = tuple(flows)
    by_id = {flow.id: flow for flow in every}
    if len(by_id) != len(every):
        raise ValueError(f"repeated flow ids among {[flow.id for flow in every]}")
    for flow in every:
        for source, target in flow.links():
            flow_id, step_id = qualify(flow.id, target)
            if flow_id not in by_id or not by_id[flow_id].has(step_id):
                raise ValueError(f"flow {flow.id}: step {source} leads to {target!r}, which is not a step")
    return every


def qualify(flow_id: str, target: str) -> tuple[str, str]:
    """Split a step reference into (flow, step); a bare step id belongs to `flow_id`."""
    if ":" in target:
        flow, _, step = target.partition(":")
        return flow, step
    return flow_id, target
