"""The store in memory, for fast tests: every port over plain Python objects, nothing on disk.

Each table family keeps its rows in an object of its own (defined beside its SQL adapter); a transaction holds
the store's lock from start to end, as SQLite's write lock does, and works on a copy of the tables that replaces
them only when it commits.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from flows.store.accounts import AccountTable, MemoryAccounts
from flows.store.audit import AuditTable, MemoryAudit
from flows.store.broadcasts import BroadcastTable, MemoryBroadcasts
from flows.store.cases import CaseTable, MemoryCases
from flows.store.codes import CodeTable, MemoryCodes
from flows.store.directory import DirectoryTable, MemoryDirectoryChanges, MemoryDirectoryIds
from flows.store.erasure import MemoryErasure
from flows.store.events import EventTable, MemoryEventOutbox
from flows.store.evidence import EvidenceTable, MemoryEvidence
from flows.store.failures import FailureTable, MemoryFailures
from flows.store.leases import LeaseTable, MemoryLeases
from flows.store.outbox import MemoryOutbox, OutboxTable
from flows.store.stats import MemoryStatistics
from flows.store.timers import MemoryTimers, TimerTable
from flows.store.updates import MemoryUpdateLog, MemoryUsers, UpdateTable, UserTable

T = TypeVar("T")


class Tables:
    """The rows of every table family, one object per family, made on first use."""

    def __init__(self) -> None:
        self._by_kind: dict[type[Any], Any] = {}

    def of(self, kind: type[T]) -> T:
        table = self._by_kind.get(kind)
        if table is None:
            table = self._by_kind[kind] = kind()
        assert isinstance(table, kind)
        return table


class MemoryTx:
    """Every port, over this transaction's copy of the tables."""

    def __init__(self, tables: Tables) -> None:
        self.tables = tables
        self.updates = MemoryUpdateLog(tables.of(UpdateTable))
        self.users = MemoryUsers(tables.of(UserTable))
        self.cases = MemoryCases(tables.of(CaseTable))
        self.timers = MemoryTimers(tables.of(TimerTable))
        self.outbox = MemoryOutbox(tables.of(OutboxTable))
        self.leases = MemoryLeases(tables.of(LeaseTable), tables.of(OutboxTable))
        self.evidence = MemoryEvidence(tables.of(EvidenceTable), self.timers)
        self.audit = MemoryAudit(tables.of(AuditTable))
        self.broadcasts = MemoryBroadcasts(tables.of(BroadcastTable), tables.of(UserTable), tables.of(CaseTable))
        self.accounts = MemoryAccounts(tables.of(AccountTable))
        self.directory_ids = MemoryDirectoryIds(tables.of(DirectoryTable))
        self.directory_changes = MemoryDirectoryChanges(tables.of(DirectoryTable))
        self.events = MemoryEventOutbox(tables.of(EventTable))
        self.codes = MemoryCodes(tables.of(CodeTable))
        self.failures = MemoryFailures(tables.of(FailureTable))
        self.statistics = MemoryStatistics(tables.of(CaseTable), tables.of(UserTable))
        self.erasure = MemoryErasure(tables.of(CaseTable), tables.of(TimerTable), tables.of(EvidenceTable),
                                     tables.of(OutboxTable), tables.of(UserTable))


class MemoryStore:
    shared = False  # one process

    def __init__(self) -> None:
        self.tables = Tables()
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[MemoryTx]:
        async with self._lock:
            working = copy.deepcopy(self.tables)
            yield MemoryTx(working)
            self.tables = working

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[MemoryTx]:
        async with self._lock:  # a reader sees only what was committed, never a writer's half-done work
            yield MemoryTx(copy.deepcopy(self.tables))

    async def forget_overwritten(self) -> None:
        """Nothing is kept of an overwritten value."""

    async def close(self) -> None:
        """Nothing to release."""
