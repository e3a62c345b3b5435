"""What the flows need from storage, as small protocols; `flows/store/` holds the adapters (SQL, and in memory).

A `Store` hands out transactions. Everything read or written through one `Tx` commits together or not at all,
and two write transactions never interleave, whatever process opened them (SQLite takes its write lock at BEGIN,
PostgreSQL an advisory lock; the in-memory adapter holds a lock), so a read inside a transaction is still true
when the transaction writes. Nothing here commits on its own: the caller owns the transaction, one per batch of
events.

`flows/` outside `flows/store/` knows storage only through these protocols (a test checks that it imports no
SQLAlchemy). `tests/store/` holds the contract every adapter must pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from typing import Protocol

from flows.events import Sender
from flows.records import (
    AccountChange,
    AuditEntry,
    AuditRecord,
    BroadcastView,
    Case,
    CaseTally,
    DeskTotals,
    DueTimer,
    NewCode,
    NewTimer,
    OutgoingEvent,
    Pending,
    QueuedChange,
    StoredAccount,
    StoredChange,
    StoredCode,
    StoredEvent,
)
from flows.replies import Reply


class StoreUnavailable(Exception):
    """The database could not do the work (full, locked past the wait, read-only, unreachable): nothing of the
    transaction was kept. The message is one line naming the cause, with no data of the transaction in it."""


class UpdateLog(Protocol):
    """Which updates (and timer firings) were acted on: the same key is acted on once."""

    async def claim(self, keys: Sequence[str], now: datetime) -> set[str]:
        """Record `keys` as processed; return those that were not processed before (repeats count once)."""
        ...

    async def prune(self, before: datetime, limit: int) -> int:
        """Forget up to `limit` keys processed before `before`, oldest first; returns how many. A key forgotten
        is acted on again, so `before` must lie further back than any redelivery (flows/retention.py)."""
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

    async def choose_language(self, user_id: int, language: str) -> None:
        """The language the user chose (/language); it wins over their Telegram app's from then on."""
        ...

    async def languages(self, user_ids: Iterable[int]) -> dict[int, str]:
        """The language to write to each of these users in: the one they chose, else their Telegram app's (users
        with neither, or unknown, are left out)."""
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

    async def latest(self, chat_id: int) -> Case | None:
        """The chat's most recently updated case, whatever its status; None if it has none."""
        ...

    async def of_user(self, user_id: int, limit: int) -> list[Case]:
        """The user's cases, whatever their status, newest first, at most `limit`."""
        ...


class Erasure(Protocol):
    async def erase_user(self, user_id: int, now: datetime) -> int:
        """Delete what the desk keeps about a user: their cases (and the cases' unfired timers and evidence rows),
        the delivered replies to their chat and their user row; returns how many cases went. Audit lines, code
        fingerprints and failed-check counts stay: they protect accounts."""
        ...


class Timers(Protocol):
    async def add(self, new: Sequence[NewTimer]) -> None:
        """Schedule timers; a `replace` spec first closes the case's unfired timers of the same kind, so they never
        fire (closed, not deleted: their ids are never given again), and of the same batch only the last such
        spec per case and kind is kept."""
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

    async def prune(self, before: datetime, limit: int) -> int:
        """Delete up to `limit` timers fired before `before`, oldest first; returns how many. Unfired timers stay,
        and so does the newest row, so that no id (a timer's update key is `timer:{id}`) is ever given again."""
        ...


class Outbox(Protocol):
    """Replies committed with their event, delivered after it."""

    async def add(self, replies: Sequence[Reply], now: datetime) -> list[Pending]:
        """Queue replies; returns them with ids that grow in queue order. A `SendCard` whose evidence names
        earlier replies of the same batch by negative offset comes back naming them by id."""
        ...

    async def pending(self, limit: int = 10_000, chat_ids: Iterable[int] | None = None) -> list[Pending]:
        """Replies queued and not yet delivered (to these chats, if given), oldest first, with when they were
        queued."""
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

    async def prune(self, before: datetime, limit: int) -> int:
        """Delete up to `limit` entries delivered before `before`, oldest first; returns how many. Undelivered
        entries stay, so does evidence an undelivered card still names, and so does the newest row, so that no
        id (a card names its evidence by id) is ever given again."""
        ...


class Leases(Protocol):
    """Which instance delivers a chat's replies in one lane while several share the database: the owner of the
    chat's live lease (flows/leases.py). A lease is live until its `until`; an expired one is anybody's."""

    async def owners(self, lane: str, chat_ids: Iterable[int], now: datetime) -> dict[int, str]:
        """The owners of the live leases among these chats."""
        ...

    async def hold(self, lane: str, chat_ids: Iterable[int], owner: str, until: datetime) -> None:
        """Give these chats' leases to `owner` until `until`, whoever held them before."""
        ...

    async def renew(self, lane: str, owner: str, until: datetime) -> set[int]:
        """Extend every lease `owner` still holds in the lane to `until`; returns their chats (a lease that
        expired and was taken by another is no longer `owner`'s)."""
        ...

    async def release(self, lane: str, owner: str, chat_ids: Iterable[int] | None = None) -> None:
        """Give up `owner`'s leases on these chats (on every chat, when None)."""
        ...

    async def unleased(self, lane: str, now: datetime, limit: int, after: int | None = None) -> list[int]:
        """Up to `limit` chats with undelivered outbox entries and no live lease in the lane, in id order, those
        after `after` if given (a sweep pages through them)."""
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


class Broadcasts(Protocol):
    """Announcements to many users, and one row per recipient of each (see flows/broadcast.py).

    At most one broadcast is running: `start` changes the row from draft to running only while no other row is
    running, as one statement the database checks (so two processes agree).
    """

    async def create(self, now: datetime, created_by: int, audience: str, language: str | None, *,
                     text: str | None, copy_from: tuple[int, int] | None) -> int:
        """Insert a draft (its audience already checked); returns its id."""
        ...

    async def get(self, broadcast_id: int) -> BroadcastView | None: ...

    async def set_audience(self, broadcast_id: int, audience: str, language: str | None) -> bool:
        """Change a draft's audience; False if it is no longer a draft."""
        ...

    async def audience_size(self, audience: str, language: str | None) -> int:
        """How many chats the audience takes now (users who blocked the bot never)."""
        ...

    async def start(self, broadcast_id: int, status_chat_id: int, status_message_id: int,
                    now: datetime) -> int | None:
        """Draft → running, its audience frozen as one pending row per chat; returns how many. None (and nothing
        changes) unless it is a draft and no broadcast is running."""
        ...

    async def running(self) -> list[int]:
        """The running broadcasts, by id."""
        ...

    async def cancel(self, broadcast_id: int, now: datetime) -> bool:
        """A draft or running broadcast → cancelled (its pending rows stay pending); False if it was neither."""
        ...

    async def finish(self, broadcast_id: int, now: datetime) -> None:
        """A running broadcast → finished; one no longer running stays as it is."""
        ...

    async def counts(self, broadcast_id: int) -> dict[str, int]:
        """How many recipients are in each state (every state present, zero included)."""
        ...

    async def pending(self, broadcast_id: int, after: int | None, limit: int) -> list[int]:
        """Chats still pending, in chat id order, after the chat `after`."""
        ...

    async def claim(self, broadcast_id: int, chat_id: int, now: datetime) -> bool:
        """Pending → sending before the send; False if the row is no longer pending (so a chat is sent to once)."""
        ...

    async def record(self, broadcast_id: int, chat_id: int, state: str, attempts: int, now: datetime) -> None:
        """How the send went: the row's new state, and the attempts it took added to its count."""
        ...

    async def mark_uncertain(self, broadcast_ids: Sequence[int], now: datetime) -> int:
        """Rows of these broadcasts left "sending" (by a crash) → "uncertain"; returns how many."""


class Accounts(Protocol):
    """The service's accounts, row by row. Emails are matched exactly as stored (the directory lower-cases them);
    an id or email that is no account matches nothing, after the same statement."""

    async def by_id(self, account_id: int) -> StoredAccount | None: ...

    async def by_email(self, email: str) -> StoredAccount | None: ...

    async def by_emails(self, emails: Sequence[str]) -> dict[str, StoredAccount]:
        """The accounts among these emails, by email (any number of them)."""
        ...

    async def all(self) -> list[StoredAccount]:
        """Every account, in creation (id) order."""
        ...

    async def count(self) -> int: ...

    async def add(self, new: Mapping[str, AccountChange], now: datetime) -> None:
        """Create accounts (email → columns), created and updated `now`; an email already on file fails."""
        ...

    async def change(self, changes: Mapping[int, AccountChange], now: datetime, *, by_import: bool = False) -> None:
        """Set columns of accounts (id → columns) and stamp them updated `now`; unknown ids change nothing. A change
        is the desk's and also stamps `desk_changed_at`, unless `by_import` (the CSV import, which sets
        `imported_at` itself when it sets a row in full)."""
        ...

    async def advance_totp_step(self, account_id: int, step: int, now: datetime) -> None:
        """Remember `step` as the last accepted TOTP step unless a later one is stored: it never moves back. Not a
        change of a factor: `desk_changed_at` stays."""
        ...

    async def extend_withdrawal_lock(self, account_id: int, until: datetime, now: datetime) -> datetime | None:
        """Lock withdrawals until `until` unless a later lock is set (it only extends, and stamps `desk_changed_at`
        when it does); the lock now in force (None for no account)."""
        ...


class DirectoryIds(Protocol):
    """The desk's own ids for the accounts of an HTTP directory, whose ids are the service's (opaque strings)."""

    async def local_ids(self, remote_ids: Sequence[str], now: datetime) -> dict[str, int]:
        """The desk's id of each remote id, given now to those seen for the first time."""
        ...

    async def remote_id(self, local_id: int) -> str | None:
        """The service's id behind a desk id (None for an id never given)."""
        ...


class DirectoryChanges(Protocol):
    """Changes to the service's accounts waiting for the change worker, applied in queue order per account."""

    async def queue(self, changes: Sequence[QueuedChange], now: datetime) -> None:
        """Queue changes, due now; a key already queued is not queued again."""
        ...

    async def due(self, now: datetime, limit: int) -> list[StoredChange]:
        """Pending changes due by `now` with no older pending change of the same account, oldest first."""
        ...

    async def next_due(self) -> datetime | None:
        """When the earliest pending change falls due."""
        ...

    async def retry_later(self, change_id: int, at: datetime, error: str) -> None:
        """Count a failed attempt and make the change due again at `at`."""
        ...

    async def settle(self, change_id: int, status: str, error: str | None, now: datetime) -> bool:
        """Close a pending change as "applied" or "failed", dropping its encrypted secret, if any; False when it
        was not pending (another worker settled it first)."""
        ...

    async def of_case(self, case_id: str) -> list[StoredChange]:
        """The case's changes, oldest first."""
        ...

    async def tally(self) -> dict[str, int]:
        """How many changes are "pending" and how many "failed"."""
        ...


class EventOutbox(Protocol):
    """Events for EVENTS_URL, written with the decision that causes them and posted after it, at least once."""

    async def add(self, events: Sequence[OutgoingEvent]) -> None: ...

    async def due(self, now: datetime, limit: int) -> list[StoredEvent]:
        """Undelivered events due by `now`, oldest first."""
        ...

    async def next_due(self) -> datetime | None: ...

    async def retry_later(self, row: int, at: datetime, error: str) -> None: ...

    async def close(self, row: int, outcome: str, now: datetime) -> None:
        """Stop posting an event: "delivered", or "given_up" after answers that retrying cannot change."""
        ...


class CodeRecords(Protocol):
    """Verification codes as stored; a code is live until used or voided."""

    async def last_created(self, case_id: str, factor: str) -> datetime | None:
        """When the case's latest code for the factor was made (live or not)."""
        ...

    async def count_real(self, account_id: int, since: datetime) -> int:
        """Codes that are not decoys made for the account after `since`."""
        ...

    async def count_real_to(self, account_id: int, user_id: int, factor: str, since: datetime) -> int:
        """Codes that are not decoys made for the account after `since`, for this requester and factor."""
        ...

    async def void_live(self, case_id: str, factor: str, now: datetime) -> None:
        """Void the case's live codes for the factor."""
        ...

    async def add(self, code: NewCode) -> int:
        """Store a new live code; returns its id."""
        ...

    async def newest_live(self, case_id: str, factor: str) -> StoredCode | None:
        """The case's newest live code for the factor (the last stored, of those made at the same time)."""
        ...

    async def use(self, code_id: int, now: datetime) -> bool:
        """Mark a live code used; False if it was no longer live (of two uses, one wins)."""
        ...

    async def count_wrong(self, code_id: int) -> None:
        """Count one more wrong try against the code."""
        ...


class FailureRecords(Protocol):
    """Rows of failed factor checks per account (`None`: an email that is no account, counted for nobody); a
    factor name may be used for marker rows that are not failures."""

    async def add(self, account_id: int | None, factor: str, user_id: int, case_id: str, at: datetime) -> None: ...

    async def count_except(self, account_id: int, factor: str, since: Sequence[datetime]) -> list[int]:
        """For each time in `since`, the account's rows made after it, not counting those of `factor`."""
        ...

    async def count_of(self, account_id: int, factor: str, since: datetime) -> int:
        """The account's rows of `factor` made after `since`."""


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
    def leases(self) -> Leases: ...
    @property
    def evidence(self) -> Evidence: ...
    @property
    def audit(self) -> Audit: ...
    @property
    def broadcasts(self) -> Broadcasts: ...
    @property
    def accounts(self) -> Accounts: ...
    @property
    def directory_ids(self) -> DirectoryIds: ...
    @property
    def directory_changes(self) -> DirectoryChanges: ...
    @property
    def events(self) -> EventOutbox: ...
    @property
    def codes(self) -> CodeRecords: ...
    @property
    def failures(self) -> FailureRecords: ...
    @property
    def statistics(self) -> Statistics: ...
    @property
    def erasure(self) -> Erasure: ...


class Store(Protocol):
    shared: bool
    """Whether other instances may use the store at the same time (PostgreSQL): replies are then delivered by
    the instance holding their chat's lease. SQLite serves one instance; the in-memory store, one process."""

    def transaction(self) -> AbstractAsyncContextManager[Tx]:
        """A transaction that may write; commits when the block ends, rolls back if it raises."""
        ...

    def reading(self) -> AbstractAsyncContextManager[Tx]:
        """A transaction for reading only: it sees what was committed, and neither waits for a writer nor holds
        one up (on SQLite, a deferred transaction on a WAL snapshot). It must not write."""
        ...

    async def forget_overwritten(self) -> None:
        """Leave no older copy of overwritten rows (redacted secrets) in the store's files (SQLite's write-ahead
        log); nothing to do where there is none."""
        ...

    async def close(self) -> None: ...
