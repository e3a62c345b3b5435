"""What is stored: cases, the timers and audit lines an event adds, outbox entries, broadcasts, and a decision that
gathers them; the service's accounts and verification codes as stored. Plain data, shared by the code that makes
them and the stores that keep them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypedDict

from flows.replies import CopyMessage, Reply, SendMessage

ACTIVE = ("open", "review")
ANY_STEP = "*"
DELETE_MESSAGE = "delete_message"  # the kind of timer that deletes a delivered message (no case, no step)

RECOVERY_METHODS = ("phone", "reverify", "backup")
"""The flows that are recovery attempts (the menu, "start", is not one)."""
RECOVERED = ("completed", "approved")
"""The statuses of a case that recovered the account."""
VERIFIED_FLAG = {"phone": "phone_verified", "reverify": "email_verified"}
"""The flag in a case's data that says the method's code was accepted; a backup-key case counts as verified when it
recovered."""


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
    queued_at: datetime | None = None  # when it was committed (read back from the outbox; None when just queued)


DRAFT, RUNNING, FINISHED, CANCELLED = "draft", "running", "finished", "cancelled"
"""A broadcast's status: only a draft can start, and at most one broadcast is running."""
PENDING, SENDING, SENT, FAILED, BLOCKED, UNCERTAIN = "pending", "sending", "sent", "failed", "blocked", "uncertain"
"""A broadcast recipient's state."""
STATES = (PENDING, SENDING, SENT, FAILED, BLOCKED, UNCERTAIN)


@dataclass(frozen=True)
class BroadcastView:
    """A broadcast as stored (its text is left out of the repr, so that it cannot end up in a log by accident)."""

    id: int
    status: str
    audience: str
    language: str | None
    created_by: int
    created_at: datetime
    text: str | None = field(repr=False)
    copy_from: tuple[int, int] | None
    total: int
    status_chat_id: int | None
    status_message_id: int | None
    started_at: datetime | None
    finished_at: datetime | None

    def reply(self, chat_id: int) -> Reply:
        """The message this broadcast sends to `chat_id`."""
        if self.copy_from is not None:
            return CopyMessage(chat_id, self.copy_from[0], self.copy_from[1])
        return SendMessage(chat_id, self.text or "")


@dataclass(frozen=True)
class CaseTally:
    """The recovery cases of one method with one status: how many were started in each reporting window (by its
    label), and how many of those were verified."""

    flow: str
    status: str
    started: Mapping[str, int]
    verified: Mapping[str, int]


@dataclass(frozen=True)
class DeskTotals:
    """Cases waiting for review and the least recent update among them; the users, and those who blocked the bot."""

    pending_reviews: int
    oldest_review: datetime | None
    users: int
    blocked_users: int


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


class AccountChange(TypedDict, total=False):
    """Columns of an account to set (a change also stamps `updated_at`); what is left out stays as it is."""

    phone: str | None
    totp_secret_enc: str | None
    totp_last_step: int | None
    security_question: str | None
    security_answer_hash: str | None
    identity_verified: bool
    two_factor: str
    withdrawals_locked_until: datetime | None
    imported_at: datetime | None


@dataclass(frozen=True)
class StoredAccount:
    """An account of the service as stored: its secret only encrypted, its answer only hashed. For the directory
    and the import, never for a reply."""

    id: int
    email: str
    phone: str | None = None
    totp_secret_enc: str | None = None
    totp_last_step: int | None = None
    security_question: str | None = None
    security_answer_hash: str | None = None
    identity_verified: bool = False
    two_factor: str = "totp"
    withdrawals_locked_until: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    desk_changed_at: datetime | None = None  # the last change by the desk (not the import, not a TOTP step)
    imported_at: datetime | None = None  # the last import that set the row in full


@dataclass(frozen=True)
class NewCode:
    """A verification code to store, as its keyed hash."""

    account_id: int | None
    user_id: int
    decoy: bool
    case_id: str
    factor: str
    code_hash: str
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class StoredCode:
    """A verification code as stored."""

    id: int
    account_id: int | None
    user_id: int | None
    decoy: bool
    case_id: str
    factor: str
    code_hash: str
    created_at: datetime
    expires_at: datetime
    wrong_tries: int = 0
    used_at: datetime | None = None
    voided_at: datetime | None = None


@dataclass(frozen=True)
class QueuedChange:
    """A change to one of the service's accounts, to be sent by the change worker once (by `key`).

    `change` holds the kind and its values as JSON (a new authenticator secret only encrypted); `then` is what to
    tell the case's chat once the service confirms it (the engine's texts as JSON)."""

    key: str
    account_id: int
    remote_id: str
    change: Mapping[str, Any]
    case_id: str | None = None
    chat_id: int | None = None
    then: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StoredChange:
    """A queued change as stored: "pending" until the service confirms it ("applied") or refuses it for good
    ("failed"); `attempts` calls made so far, the next one due at `next_at`."""

    id: int
    queued: QueuedChange
    status: str
    attempts: int
    next_at: datetime
    error: str | None
    created_at: datetime
    settled_at: datetime | None


@dataclass(frozen=True)
class OutgoingEvent:
    """An event for the operator's systems (EVENTS_URL): `id` is what receivers deduplicate on."""

    id: str
    type: str
    created_at: datetime
    data: Mapping[str, Any]


@dataclass(frozen=True)
class StoredEvent:
    """An event waiting to be posted: tried `attempts` times so far, due again at `next_at`."""

    row: int
    event: OutgoingEvent
    attempts: int
    next_at: datetime
