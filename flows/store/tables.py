"""The tables. Every timestamp is timezone-aware UTC; Telegram ids are 64-bit."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, Index, Table, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import Field, SQLModel

from flows.store.types import JSONText, UTCDateTime


def _when(nullable: bool = False, index: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable, index=index))


class User(SQLModel, table=True):
    """Everyone who has written to the bot."""

    __tablename__ = "users"
    id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    chat_id: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    language: str | None = Field(default=None, max_length=16)
    chosen_language: str | None = Field(default=None, max_length=16)  # with /language; else Telegram's
    blocked: bool = Field(default=False)
    first_seen: datetime = _when()
    last_seen: datetime = _when()


class Account(SQLModel, table=True):
    """An account of the service the bot speaks for (the account directory)."""

    __tablename__ = "accounts"
    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=320, unique=True, index=True)
    phone: str | None = Field(default=None, max_length=32)
    totp_secret_enc: str | None = Field(default=None)
    totp_last_step: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    security_question: str | None = Field(default=None)
    security_answer_hash: str | None = Field(default=None)
    identity_verified: bool = Field(default=False)
    two_factor: str = Field(default="totp", max_length=16)
    withdrawals_locked_until: datetime | None = _when(nullable=True)
    created_at: datetime = _when()
    updated_at: datetime = _when()
    # When the desk last changed a factor, the secret or the lock, and when a CSV import last set the row in full:
    # an import does not overwrite what the desk changed since (flows/accounts_csv.py).
    desk_changed_at: datetime | None = _when(nullable=True)
    imported_at: datetime | None = _when(nullable=True)


class CaseRow(SQLModel, table=True):
    """One recovery attempt: which flow, which step, what it has collected, and how it ended."""

    __tablename__ = "cases"
    __table_args__ = (
        Index("ix_cases_chat_active", "chat_id", "status"),
        Index("ix_cases_status_updated", "status", "updated_at"),
    )
    id: str = Field(primary_key=True, max_length=16)
    user_id: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    chat_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    account_id: int | None = Field(default=None)  # the directory's: `accounts` or `directory_ids`
    flow: str = Field(max_length=32)
    step: str = Field(max_length=32)
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONText(), nullable=False))
    status: str = Field(max_length=16)
    turn: int = Field(default=0)
    created_at: datetime = _when()
    updated_at: datetime = _when()
    closed_at: datetime | None = _when(nullable=True)


class ProcessedUpdate(SQLModel, table=True):
    """An event already handled; its key makes a second delivery of the same update a no-op."""

    __tablename__ = "processed_updates"
    key: str = Field(primary_key=True, max_length=64)
    processed_at: datetime = _when(index=True)


class OutboxRow(SQLModel, table=True):
    """A reply committed with the event that caused it, delivered after the commit (and after a crash)."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_pending", "id", sqlite_where=text("delivered_at IS NULL"),
              postgresql_where=text("delivered_at IS NULL")),
        Index("ix_outbox_delivered", "delivered_at", sqlite_where=text("delivered_at IS NOT NULL"),
              postgresql_where=text("delivered_at IS NOT NULL")),  # pruning (flows/retention.py)
    )
    id: int | None = Field(default=None, primary_key=True)
    chat_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    payload: dict[str, Any] = Field(sa_column=Column(JSONText(), nullable=False))
    created_at: datetime = _when()
    delivered_at: datetime | None = _when(nullable=True)
    attempts: int = Field(default=0)
    outcome: str | None = Field(default=None, max_length=16)
    sent_message_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class DeliveryLeaseRow(SQLModel, table=True):
    """Which instance delivers a chat's replies in one lane while several share the database (flows/leases.py):
    the one whose lease runs until after now."""

    __tablename__ = "delivery_leases"
    lane: str = Field(primary_key=True, max_length=16)
    chat_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    owner: str = Field(max_length=36)
    until: datetime = _when(index=True)


class EvidenceMessageRow(SQLModel, table=True):
    """A message in a staff chat that shows a case's identity evidence, deleted when the case's documents are purged.

    A row with no `message_id` marks a purged case: its evidence delivered after the purge is deleted at once.
    """

    __tablename__ = "evidence_messages"
    id: int | None = Field(default=None, primary_key=True)
    case_id: str = Field(max_length=16, index=True)
    chat_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    message_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    created_at: datetime = _when()


class TimerRow(SQLModel, table=True):
    """A durable timer: fires once at `due_at`, while its case is still at `step` (or, with no step, regardless)."""

    __tablename__ = "timers"
    __table_args__ = (
        Index("ix_timers_pending", "due_at", sqlite_where=text("fired_at IS NULL"),
              postgresql_where=text("fired_at IS NULL")),
        Index("ix_timers_fired", "fired_at", sqlite_where=text("fired_at IS NOT NULL"),
              postgresql_where=text("fired_at IS NOT NULL")),  # pruning (flows/retention.py)
    )
    id: int | None = Field(default=None, primary_key=True)
    case_id: str = Field(max_length=16, index=True)
    user_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    chat_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    step: str | None = Field(default=None, max_length=64)
    kind: str = Field(max_length=32)
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONText(), nullable=False))
    due_at: datetime = _when()
    fired_at: datetime | None = _when(nullable=True)


class CodeRow(SQLModel, table=True):
    """A one-time verification code, kept only as a keyed hash.

    A `decoy` is issued where no real code can be (an unknown email, no phone on file, a limit reached, a paused
    account): it is stored and checked like a real one, so replies and timings do not tell the cases apart, but it
    is never delivered and never matches.
    """

    __tablename__ = "verification_codes"
    __table_args__ = (
        Index("ix_codes_account_created", "account_id", "created_at"),
        Index("ix_codes_account_user_created", "account_id", "user_id", "created_at"),
    )
    id: int | None = Field(default=None, primary_key=True)
    account_id: int | None = Field(default=None)  # the directory's: `accounts` or `directory_ids`
    user_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    decoy: bool = Field(default=False)
    case_id: str = Field(max_length=16, index=True)
    factor: str = Field(max_length=16)
    code_hash: str = Field(max_length=128)
    created_at: datetime = _when()
    expires_at: datetime = _when()
    wrong_tries: int = Field(default=0)
    used_at: datetime | None = _when(nullable=True)
    voided_at: datetime | None = _when(nullable=True)


class DirectoryIdRow(SQLModel, table=True):
    """The desk's id for an account of an HTTP directory (the service's ids are opaque strings)."""

    __tablename__ = "directory_ids"
    id: int | None = Field(default=None, primary_key=True)
    remote_id: str = Field(max_length=64, unique=True)
    created_at: datetime = _when()


class DirectoryChangeRow(SQLModel, table=True):
    """A change to a service account, sent by the change worker with `key` as its idempotency key."""

    __tablename__ = "directory_changes"
    __table_args__ = (
        Index("ix_directory_changes_pending", "next_at", sqlite_where=text("status = 'pending'"),
              postgresql_where=text("status = 'pending'")),
    )
    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=128, unique=True)
    account_id: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    remote_id: str = Field(max_length=64)
    change: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONText(), nullable=False))
    case_id: str | None = Field(default=None, max_length=16, index=True)
    chat_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    then: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONText(), nullable=False))
    status: str = Field(default="pending", max_length=16)
    attempts: int = Field(default=0)
    next_at: datetime = _when()
    error: str | None = Field(default=None, max_length=200)
    created_at: datetime = _when()
    settled_at: datetime | None = _when(nullable=True)


class OutgoingEventRow(SQLModel, table=True):
    """An event for EVENTS_URL: posted until the receiver answers 2xx (or gives an answer retrying cannot change)."""

    __tablename__ = "outgoing_events"
    __table_args__ = (
        Index("ix_outgoing_events_pending", "next_at", sqlite_where=text("closed_at IS NULL"),
              postgresql_where=text("closed_at IS NULL")),
    )
    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(max_length=36, unique=True)
    type: str = Field(max_length=40)
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONText(), nullable=False))
    created_at: datetime = _when()
    attempts: int = Field(default=0)
    next_at: datetime = _when()
    error: str | None = Field(default=None, max_length=200)
    outcome: str | None = Field(default=None, max_length=16)
    closed_at: datetime | None = _when(nullable=True)


class FailedCheck(SQLModel, table=True):
    """A failed check of an account's factor (a code, an authenticator code, the security answer), from any chat.

    Counted per account over a rolling hour and day, so the limit holds across cases and Telegram users.
    """

    __tablename__ = "failed_checks"
    __table_args__ = (Index("ix_failed_checks_account_at", "account_id", "at"),)
    id: int | None = Field(default=None, primary_key=True)
    account_id: int | None = Field(default=None)  # None: an email that is no account
    factor: str = Field(max_length=16)
    user_id: int = Field(sa_column=Column(BigInteger, nullable=False))
    case_id: str = Field(max_length=16)
    at: datetime = _when()


class BroadcastRow(SQLModel, table=True):
    """An announcement to many users: a durable job that survives restarts."""

    __tablename__ = "broadcasts"
    __table_args__ = (  # one broadcast runs at a time, even with two writers side by side (flows/store/broadcasts.py)
        Index("ux_broadcasts_one_running", "status", unique=True, sqlite_where=text("status = 'running'"),
              postgresql_where=text("status = 'running'")),
    )
    id: int | None = Field(default=None, primary_key=True)
    created_by: int = Field(sa_column=Column(BigInteger, nullable=False))
    created_at: datetime = _when()
    text: str | None = Field(default=None)
    from_chat_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    from_message_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    audience: str = Field(max_length=32)
    language: str | None = Field(default=None, max_length=16)
    status: str = Field(max_length=16, index=True)
    total: int = Field(default=0)
    status_chat_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    status_message_id: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    started_at: datetime | None = _when(nullable=True)
    finished_at: datetime | None = _when(nullable=True)


class BroadcastDeliveryRow(SQLModel, table=True):
    """One recipient of a broadcast: pending, sending, sent, failed, blocked or uncertain."""

    __tablename__ = "broadcast_deliveries"
    __table_args__ = (Index("ix_broadcast_deliveries_state", "broadcast_id", "state"),)
    broadcast_id: int = Field(foreign_key="broadcasts.id", primary_key=True)
    chat_id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    state: str = Field(max_length=16)
    attempts: int = Field(default=0)
    updated_at: datetime | None = _when(nullable=True)


class AuditRow(SQLModel, table=True):
    """Who did what, when, to what."""

    __tablename__ = "audit_log"
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _when(index=True)
    actor: str = Field(max_length=64)
    action: str = Field(max_length=64)
    subject: str = Field(max_length=64)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONText(), nullable=False))


metadata = SQLModel.metadata


def _table(model: type[SQLModel]) -> Table:
    table: Table = model.__table__  # type: ignore[attr-defined]
    return table


# The tables as SQLAlchemy Core objects, for the adapters' statements.
users = _table(User)
accounts = _table(Account)
cases = _table(CaseRow)
processed = _table(ProcessedUpdate)
outbox = _table(OutboxRow)
evidence_messages = _table(EvidenceMessageRow)
delivery_leases = _table(DeliveryLeaseRow)
timers = _table(TimerRow)
codes = _table(CodeRow)
failed_checks = _table(FailedCheck)
directory_ids = _table(DirectoryIdRow)
directory_changes = _table(DirectoryChangeRow)
outgoing_events = _table(OutgoingEventRow)
broadcasts = _table(BroadcastRow)
broadcast_deliveries = _table(BroadcastDeliveryRow)
audit = _table(AuditRow)


def upsert(conn: AsyncConnection, table: Table) -> Any:
    """The dialect's INSERT, the one with `on_conflict_do_update`."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)
