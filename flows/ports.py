"""What the flows need from storage, as small protocols; `flows/store/` holds the adapters (SQL, and in memory).

A `Store` hands out transactions. Everything read or written through one `Tx` commits together or not at all,
and two write transactions never interleave (SQLite takes its write lock at BEGIN; the in-memory adapter holds a
lock), so a read inside a transaction is still true when the transaction writes. Nothing here commits on its
own: the caller owns the transaction, one per batch of events.

`flows/` outside `flows/store/` knows storage only through these protocols (a test checks that it imports no
SQLAlchemy). `tests/store/` holds the contract every adapter must pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from typing import Protocol

from flows.events import Sender
from flows.records import AuditEntry, AuditRecord, Case, CaseTally, DeskTotals, DueTimer, NewTimer, Pending
from flows.replies import Reply


class UpdateLog(Protocol):
    """Which updates (and timer firings) were acted on: the same key is acted on once."""

    async def claim(self, keys: Sequence[str], now: datetime) -> set[str]:
        """Record `keys` as processed; return those that were not processed before (repeats count once)."""
        ...


class Users(Protocol):
    """The people who wrote to the bot, and whether they blocked it."""

    async def touch(self, senders: Iterable[Sender], now: datetime) -> None:
        """Create or refresh the users behind these events; writing to the bot also means it is not blocked."""
        ...

    async def set_blocked(self, chat_id: int, blocked: bool) -> None:
        """Remember whether the user behind a private chat has blocked the bot."""
        ...

    async def blocked_among(self, chat_ids: Iterable[int]) -> set[int]:
        """Which of these chats belong to users who blocked the bot."""
        ...

    async def known(self, user_ids: Iterable[int]) -> set[int]:
        """Which of these users have written to the bot."""
        ...


class Cases(Protocol):
    async def active(self, chat_ids: Iterable[int]) -> dict[int, Case]:
        """The active (open or in review) case of each chat that has one."""
        ...

    async def by_id(self, case_ids: Iterable[str]) -> dict[str, Case]:
        """Cases by id, whatever their status."""
        ...

    async def save(self, changed: Iterable[Case]) -> None:
        """Insert new cases and update changed ones (by id)."""
        ...

    async def in_review(self, limit: int) -> list[Case]:
        """Cases waiting for review, oldest (least recently updated) first."""
        ...


class Timers(Protocol):
    async def add(self, new: Sequence[NewTimer]) -> None:
        """Schedule timers; a `replace` spec first drops the case's unfired timers of the same kind (and of the
        same batch, only the last such spec per case and kind is kept)."""
        ...

    async def schedule_deletions(self, sent: Sequence[tuple[int, int, int]], now: datetime) -> None:
        """Timers that delete delivered messages: (chat id, message id, seconds after `now`)."""
        ...

    async def due(self, now: datetime, limit: int) -> list[DueTimer]:
        """Unfired timers due by `now`, in due order (ties by id)."""
        ...

    async def next_due(self) -> datetime | None:
        """When the earliest unfired timer is due."""
        ...

    async def unfired(self, timer_ids: Sequence[int]) -> set[int]:
        """Which of these timers still exist and have not fired."""
        ...

    async def mark_fired(self, timer_ids: Sequence[int], now: datetime) -> None:
        """Mark timers fired; one already fired keeps its first time."""
        ...


class Outbox(Protocol):
    """Replies committed with their event, delivered after it."""

    async def add(self, replies: Sequence[Reply], now: datetime) -> list[Pending]:
        """Queue replies; returns them with ids that grow in queue order. A `SendCard` whose evidence names
        earlier replies of the same batch by negative offset comes back naming them by id."""
        ...

    async def pending(self, limit: int = 10_000) -> list[Pending]:
        """Replies queued and not yet delivered, oldest first."""
        ...

    async def outcomes(self, row_ids: Sequence[int]) -> dict[int, str | None]:
        """How these entries went ("sent", "failed", ...; None while undelivered)."""
        ...

    async def mark_delivered(self, results: Sequence[tuple[int, str, int | None]], now: datetime) -> None:
        """Close entries: (id, outcome, the message id the platform gave)."""
        ...

    async def redact(self, entries: Sequence[Pending]) -> None:
        """Blank the text of delivered entries that carried a secret."""
        ...


class Evidence(Protocol):
    """The staff messages that show a case's identity evidence, so they can be deleted when it is purged."""

    async def record(self, shown: Sequence[tuple[str, int, tuple[int, ...]]], now: datetime) -> None:
        """(case id, chat id, message ids) delivered; those of a case already purged are deleted at once."""
        ...

    async def forget(self, case_id: str, now: datetime) -> None:
        """Delete the messages recorded for the case (timers due now) and mark it purged."""
        ...

    async def shown(self, case_id: str, chat_id: int, since: datetime | None) -> bool:
        """Whether the case's evidence reached `chat_id` (recorded at or after `since`)."""
        ...


class Audit(Protocol):
    async def add(self, entries: Sequence[AuditEntry], now: datetime) -> None: ...

    async def recent(self, limit: int) -> list[AuditRecord]:
        """The latest lines, newest first."""
        ...


class Statistics(Protocol):
    """Numbers for the staff's report, counted where the rows are: no case data (no email, phone number or
    answer) comes out, only counts and durations (in SQL, one statement per method)."""

    async def tally(self, windows: Mapping[str, datetime], now: datetime) -> list[CaseTally]:
        """The cases of the recovery methods (`RECOVERY_METHODS`) per method and status: for each window (label →
        its first moment; every window ends at `now`, both ends included), how many were created in it, and how
        many of those were verified (`VERIFIED_FLAG` true in the case's data; a backup-key case when recovered).
        A method and status with no case in any window is left out."""
        ...

    async def recovery_times(self, since: datetime, now: datetime) -> dict[str, list[timedelta]]:
        """Per method, from creation to closing, how long each recovered case created in [since, now] took (in
        no particular order; a method without one is left out)."""
        ...

    async def totals(self) -> DeskTotals:
        """How many cases wait for review and the oldest of their last updates; users, and blocked users."""
        ...


class Tx(Protocol):
    """One transaction's view of every port."""

    @property
    def updates(self) -> UpdateLog: ...
    @property
    def users(self) -> Users: ...
    @property
    def cases(self) -> Cases: ...
    @property
    def timers(self) -> Timers: ...
    @property
    def outbox(self) -> Outbox: ...
    @property
    def evidence(self) -> Evidence: ...
    @property
    def audit(self) -> Audit: ...
    @property
    def statistics(self) -> Statistics: ...


class Store(Protocol):
    def transaction(self) -> AbstractAsyncContextManager[Tx]:
        """A transaction that may write; commits when the block ends, rolls back if it raises."""
        ...

    def reading(self) -> AbstractAsyncContextManager[Tx]:
        """A transaction for reading only (it may run beside a writer, and sees what was committed)."""
        ...

    async def forget_overwritten(self) -> None:
        """Leave no older copy of overwritten rows (redacted secrets) in the store's files (SQLite's write-ahead
        log); nothing to do where there is none."""
        ...

    async def close(self) -> None: ...
