"""What the flows may use while deciding one event: settings and services bound to its transaction."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from flows import countries
from flows.changes import AppliedAtOnce, Changes, QueuedForWorker
from flows.codes import CodePolicy, Codes
from flows.directory import AccountDirectory, SecretBox
from flows.http_directory import DirectoryClient, DirectoryHealth, HttpDirectory
from flows.keys import derive_key
from flows.limits import FailedChecks
from flows.ports import Tx
from flows.table_directory import TableDirectory
from flows.texts import languages, load_catalogs


@dataclass(frozen=True)
class FlowSettings:
    """The operator's choices that the flows need."""

    service_name: str
    secret_key: str
    code_ttl: timedelta = timedelta(minutes=30)
    withdrawal_lock: timedelta = timedelta(hours=48)
    max_file_bytes: int = 20 * 1024 * 1024
    admin_ids: tuple[int, ...] = ()
    staff_chat_id: int | None = None
    document_retention: timedelta = timedelta(days=30)
    idle_reminder: timedelta = timedelta(hours=1)
    case_timeout: timedelta = timedelta(hours=24)
    review_sla: timedelta = timedelta(hours=24)
    code_channels: Mapping[str, str] = field(default_factory=lambda: {"phone": "chat", "email": "chat"})

    def is_admin(self, user_id: int) -> bool:
        """Whether this Telegram user is staff (listed in ADMIN_IDS): the one admin check."""
        return user_id in self.admin_ids


def staff_chats(settings: FlowSettings) -> tuple[int, ...]:
    """Where review cards and staff reminders go: the staff group if there is one, else each admin."""
    return (settings.staff_chat_id,) if settings.staff_chat_id is not None else settings.admin_ids


@dataclass(frozen=True)
class Services:
    """Per-event services: the account directory, the verification codes and the failed-check limit, and every
    store port (`tx`), in the event's transaction."""

    settings: FlowSettings
    directory: AccountDirectory
    changes: Changes
    codes: Codes
    failures: FailedChecks
    now: datetime
    box: SecretBox
    tx: Tx
    directory_health: DirectoryHealth | None = None


class ServiceFactory:
    """Builds `Services` for each transaction; keys are derived once. With a `directory` client the accounts are
    the service's own, over HTTP; without, the built-in table's."""

    def __init__(self, settings: FlowSettings, directory: DirectoryClient | None = None,
                 emit_events: bool = False) -> None:
        self.settings = settings
        self.directory = directory
        self.emit_events = emit_events
        self.box = SecretBox(settings.secret_key)
        self.code_key = derive_key(settings.secret_key, "verification-codes")
        self.policy = CodePolicy(ttl=settings.code_ttl)

    def __call__(self, tx: Tx, now: datetime) -> Services:
        directory: AccountDirectory
        changes: Changes
        if self.directory is not None:
            directory = HttpDirectory(self.directory, tx.directory_ids, now)
            changes = QueuedForWorker(tx.directory_changes, tx.directory_ids, self.box, now)
        else:
            directory = TableDirectory(tx.accounts, self.box, now)
            changes = AppliedAtOnce(directory, tx.events if self.emit_events else None, now)
        return Services(
            settings=self.settings,
            directory=directory,
            changes=changes,
            codes=Codes(tx.codes, self.code_key, now, self.policy),
            failures=FailedChecks(tx.failures, now),
            now=now,
            box=self.box,
            tx=tx,
            directory_health=self.directory.health if self.directory is not None else None,
        )


async def warm_up(services: ServiceFactory | None) -> None:
    """Do at start-up what the first events would otherwise do on the event loop: read and compile the text
    catalogs, load the country names, and compute the decoy answer hash (~100 ms of scrypt, in a thread)."""
    load_catalogs()
    for language in languages():
        countries.countries(language)
    if services is not None:
        await asyncio.to_thread(services.box.decoy_hash)
