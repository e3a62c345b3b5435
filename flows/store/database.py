"""Opening the database (SQLite in WAL mode with write-locking transactions, or PostgreSQL as it comes), and the
store on it: every port over one connection per transaction."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from flows.ports import StoreUnavailable
from flows.store.accounts import SqlAccounts
from flows.store.audit import SqlAudit
from flows.store.broadcasts import SqlBroadcasts
from flows.store.cases import SqlCases
from flows.store.codes import SqlCodes
from flows.store.directory import SqlDirectoryChanges, SqlDirectoryIds
from flows.store.erasure import SqlErasure
from flows.store.events import SqlEventOutbox
from flows.store.evidence import SqlEvidence
from flows.store.failures import SqlFailures
from flows.store.leases import SqlLeases
from flows.store.outbox import SqlOutbox
from flows.store.stats import SqlStatistics
from flows.store.timers import SqlTimers
from flows.store.updates import SqlUpdateLog, SqlUsers

READ_ONLY = "recovery_bot_read_only"  # an execution option: this connection only reads
# The key of the PostgreSQL advisory lock every write transaction holds (any fixed bigint; advisory locks are
# per database, so two desks on one server do not wait for each other).
WRITER_LOCK = 0x7265636F76657279  # "recovery"
IDLE_IN_TRANSACTION = "60s"


def sqlite_file(url: str | URL) -> Path | None:
    """The database file of a SQLite URL, or None for other backends and in-memory databases."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def open_database(url: str) -> AsyncEngine:
    """An async engine for `url`; for SQLite the file's folder is created and each transaction locks up front."""
    path = sqlite_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {}
    if make_url(url).get_backend_name() == "postgresql":
        # A session that holds the writers' lock and then goes silent (its host cut off mid-transaction) must not
        # hold up every instance for long: the server ends it after this long idle in a transaction.
        options["connect_args"] = {"server_settings": {"idle_in_transaction_session_timeout": IDLE_IN_TRANSACTION}}
    engine = create_async_engine(url, hide_parameters=True, **options)  # no codes or secrets in error messages
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine)
    return engine


def _configure_sqlite(engine: AsyncEngine) -> None:
    # pysqlite (and so aiosqlite) defers BEGIN until the first write, so a read-then-write transaction could act
    # on stale reads. As SQLAlchemy's SQLite dialect documents: take over transaction control and BEGIN IMMEDIATE,
    # which takes the write lock at the start of every transaction.
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA secure_delete=ON")  # a redacted code is overwritten with zeros, not just unlinked
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        # A reading transaction begins DEFERRED: in WAL mode it reads a snapshot of what was committed and never
        # waits for (or holds up) the writer. It must not write: it would then race for the lock.
        reading = connection.get_execution_options().get(READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if reading else "BEGIN IMMEDIATE")


async def scrub_wal(engine: AsyncEngine) -> None:
    """Copy SQLite's write-ahead log into the database and truncate it, so that rows overwritten since (redacted
    codes and keys) leave no older copy in the log file. Nothing to do on other databases."""
    if engine.dialect.name != "sqlite":
        return
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        await raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # type: ignore[union-attr]


SQLITE_OUTAGES = frozenset({5, 6, 7, 8, 10, 13, 14, 15})
"""SQLite's primary result codes for a database that cannot do the work right now: BUSY, LOCKED, NOMEM,
READONLY, IOERR, FULL, CANTOPEN, PROTOCOL. Any other error (no such column, a constraint) is the caller's."""
POSTGRES_OUTAGE_CLASSES = ("08", "53", "57", "58")  # connection, resources (disk full), operator, system
POSTGRES_OUTAGES = frozenset({"25006", "40001", "40P01"})  # read-only transaction; serialization, deadlock


@dataclass
class Opening:
    """Whether the connection was had: a bare connection error after that is not the database's to claim."""

    connected: bool = False


@contextmanager
def unavailable_as_one_line() -> Iterator[Opening]:
    """The database failing (full, locked past the busy timeout, read-only, unreachable) as `StoreUnavailable`,
    whose message is the driver's first line: no statement and no parameters, so nothing of the data. Told
    apart by the driver's error codes, so that an error of the work itself (a bug, a constraint) is raised as it
    is and handled as one event's failure, not taken for an outage and redelivered for ever."""
    opening = Opening()
    try:
        yield opening
    except DBAPIError as error:
        if not is_outage(error):
            raise
        raise StoreUnavailable(_first_line(error.orig or error)) from error
    except (ConnectionError, TimeoutError, socket.gaierror) as error:  # asyncpg's connect raises these bare
        if opening.connected:
            raise
        raise StoreUnavailable(_first_line(error)) from error


def is_outage(error: DBAPIError) -> bool:
    if error.connection_invalidated:
        return True
    code = getattr(error.orig, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in SQLITE_OUTAGES
    state = getattr(error.orig, "sqlstate", None) or getattr(getattr(error.orig, "__cause__", None), "sqlstate", None)
    return isinstance(state, str) and (state[:2] in POSTGRES_OUTAGE_CLASSES or state in POSTGRES_OUTAGES)


def _first_line(error: BaseException) -> str:
    reason = str(error).strip().splitlines()  # may be none: ConnectionResetError() has no text
    return reason[0][:200] if reason else type(error).__name__


class SqlTx:
    """Every port, over one connection in one transaction."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.updates = SqlUpdateLog(conn)
        self.users = SqlUsers(conn)
        self.cases = SqlCases(conn)
        self.timers = SqlTimers(conn)
        self.outbox = SqlOutbox(conn)
        self.leases = SqlLeases(conn)
        self.evidence = SqlEvidence(conn, self.timers)
        self.audit = SqlAudit(conn)
        self.broadcasts = SqlBroadcasts(conn)
        self.accounts = SqlAccounts(conn)
        self.directory_ids = SqlDirectoryIds(conn)
        self.directory_changes = SqlDirectoryChanges(conn)
        self.events = SqlEventOutbox(conn)
        self.codes = SqlCodes(conn)
        self.failures = SqlFailures(conn)
        self.statistics = SqlStatistics(conn)
        self.erasure = SqlErasure(conn)


class SqlStore:
    """The store on a SQL database (SQLite, or PostgreSQL).

    Write transactions never interleave, across every process on the database (the ports promise it: a read
    inside a transaction is still true when it writes, which per-account limits and each chat's order rest on).
    SQLite has one writer at a time, taken at BEGIN IMMEDIATE. On PostgreSQL each write transaction first takes
    one transaction-scoped advisory lock, the same for every instance, released at commit or rollback.

    Writers of this process take turns on an asyncio lock before they ask for the database's, so none of them
    holds a pooled connection while it waits, nor sleeps in SQLite's busy handler (which polls with growing
    naps, up to 100 ms each) while another commits.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._one_writer = asyncio.Lock()
        self.shared = engine.dialect.name == "postgresql"  # SQLite serves one instance (README)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqlTx]:
        async with self._one_writer:
            with unavailable_as_one_line() as opening:
                async with self.engine.begin() as conn:
                    opening.connected = True
                    if self.shared:
                        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": WRITER_LOCK})
                    yield SqlTx(conn)

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[SqlTx]:
        with unavailable_as_one_line() as opening:
            async with self.engine.connect() as conn:
                opening.connected = True
                await conn.execution_options(**{READ_ONLY: True})
                yield SqlTx(conn)

    async def forget_overwritten(self) -> None:
        async with self._one_writer:  # a checkpoint waits for the writer: let it wait here, not in SQLite
            await scrub_wal(self.engine)

    async def close(self) -> None:
        await self.engine.dispose()
