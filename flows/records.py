"""What is stored: cases, the timers and audit lines an event adds, outbox entries, and a decision that gathers
them. Plain data, shared by the engine that makes them and the stores that keep them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flows.replies import Reply

ACTIVE = ("open", "review")
ANY_STEP = "*"


@dataclass(frozen=True)
class TimerSpec:
    """Ask the engine to fire `kind` at `due` for this case.

    The timer applies while the case is at a step that declares a handler for `kind` (`Step.on_timer`), in the
    flow the case is in when the timer is set; `any_step` makes it apply at any step while the case is open. A
    `detached` timer fires whatever became of the case (for notices such as "withdrawals are enabled again");
    the engine's `timer_handlers` handle it. `replace` drops the case's earlier unfired timers of the same kind.
    """

    kind: str
    due: datetime
    payload: Mapping[str, Any] = field(default_factory=dict)
    any_step: bool = False
    detached: bool = False
    replace: bool = False

    def binding(self, handled_at: tuple[str, ...]) -> str | None:
        """What the timers table stores: the steps it applies at (`handled_at`), "*" for any, None when
        detached."""
        if self.detached:
            return None
        return ANY_STEP if self.any_step else ",".join(handled_at)


@dataclass(frozen=True)
class Effect:
    """Something to do after the event commits, outside the transaction (e.g. start a broadcast). At most once:
    a crash between the commit and the effect loses it, so effects are for things the user can simply retry."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Case:
    """One recovery attempt as stored: where it stands and what it has collected so far."""

    id: str
    user_id: int
    chat_id: int
    flow: str
    step: str
    data: dict[str, Any] = field(default_factory=dict)
    status: str = "open"
    turn: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None
    closed_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.status in ACTIVE


@dataclass(frozen=True)
class NewTimer:
    """A timer to schedule: `step` is what it is bound to (see `TimerSpec.binding`)."""

    case_id: str
    user_id: int
    chat_id: int
    step: str | None
    spec: TimerSpec


@dataclass(frozen=True)
class DueTimer:
    """A stored timer that has fallen due."""

    id: int
    case_id: str
    user_id: int
    chat_id: int
    step: str | None
    kind: str
    payload: dict[str, Any]
    due_at: datetime


@dataclass(frozen=True)
class AuditEntry:
    actor: str
    action: str
    subject: str
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditRecord:
    """An audit line as stored."""

    id: int
    at: datetime
    actor: str
    action: str
    subject: str
    detail: Mapping[str, Any]


@dataclass(frozen=True)
class Pending:
    """An outbox entry waiting for delivery."""

    id: int
    chat_id: int
    reply: Reply


@dataclass
class Decision:
    """Everything one event changes: the case(s) to save, replies for the outbox, timers and audit lines."""

    cases: list[Case] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list)
    timers: list[NewTimer] = field(default_factory=list)
    audit: list[AuditEntry] = field(default_factory=list)
    effects: list[Effect] = field(default_factory=list)

    @property
    def case(self) -> Case | None:
        """The chat's case after the event (the last one touched)."""
        return self.cases[-1] if self.cases else None
