"""A database that fails is `StoreUnavailable`, one line without data; the transaction's own errors pass as
they are. (Full, locked and read-only SQLite under a running desk: tests/e2e/test_database_faults_e2e.py.)"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from flows.ports import StoreUnavailable
from flows.records import Case
from flows.store.database import SqlStore, open_database, unavailable_as_one_line
from flows.store.migrate import upgrade
from flows.store.startup import explain
from tests.store.test_core import NOW
from tests.support.postgres import PostgresServer


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_an_unreachable_postgresql_is_unavailable_in_one_line() -> None:
    store = SqlStore(open_database(f"postgresql+asyncpg://desk:hunter2@127.0.0.1:{closed_port()}/desk"))
    try:
        for opening in (store.transaction, store.reading):
            with pytest.raises(StoreUnavailable) as raised:
                async with opening():
                    pass
            assert "\n" not in str(raised.value) and "hunter2" not in str(raised.value)
    finally:
        await store.close()


@pytest.mark.parametrize("error", [ConnectionResetError(), socket.gaierror()])
def test_a_connection_error_without_text_is_unavailable_by_its_name(error: Exception) -> None:
    with pytest.raises(StoreUnavailable, match=type(error).__name__), unavailable_as_one_line():
        raise error


def test_a_database_that_timed_out_without_text_is_explained_in_one_line() -> None:
    line = explain("postgresql+asyncpg://desk:hunter2@db.internal/desk", TimeoutError())
    assert "TimeoutError" in line and "db.internal" in line and "hunter2" not in line and "\n" not in line


async def test_errors_of_the_work_itself_pass_as_they_are(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/desk.db"
    await upgrade(url)
    store = SqlStore(open_database(url))
    try:
        with pytest.raises(ValueError, match="not the database's"):
            async with store.transaction():
                raise ValueError("not the database's")
        with pytest.raises(OperationalError, match="no such column"):  # a bug, not an outage: raised as it is
            async with store.transaction() as tx:
                await tx.conn.exec_driver_sql("SELECT nope FROM cases")
        with pytest.raises(IntegrityError):  # a bug, not an outage
            async with store.transaction() as tx:
                await tx.updates.claim(["u1"], NOW)
                await tx.conn.exec_driver_sql(
                    "INSERT INTO processed_updates (key, processed_at) VALUES ('u1', '2026-01-01')")
    finally:
        await store.close()


async def test_a_database_refusing_writes_is_unavailable_without_the_data(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/desk.db"
    await upgrade(url)
    store = SqlStore(open_database(url))
    event.listen(store.engine.sync_engine, "begin", lambda conn: conn.exec_driver_sql("PRAGMA query_only=1"))
    case = Case("c1", 7, 7, "phone", "ask_email", {"code": "123456"}, "open", 0, NOW, NOW)
    try:
        with pytest.raises(StoreUnavailable, match="readonly database") as raised:
            async with store.transaction() as tx:
                await tx.cases.save([case])
        async with store.reading() as tx:
            assert await tx.cases.by_id(["c1"]) == {}  # reading still works
    finally:
        await store.close()
    assert "123456" not in str(raised.value) and "\n" not in str(raised.value)


async def test_a_read_only_postgresql_is_unavailable(postgres: PostgresServer, postgres_url: str) -> None:
    database = make_url(postgres_url).database
    postgres.sql(f"ALTER DATABASE {database} SET default_transaction_read_only = on")
    store = SqlStore(open_database(postgres_url))
    case = Case("c1", 7, 7, "phone", "ask_email", {}, "open", 0, NOW, NOW)
    try:
        with pytest.raises(StoreUnavailable, match="read-only transaction"):
            async with store.transaction() as tx:
                await tx.cases.save([case])
        with pytest.raises(DBAPIError) as raised:  # a statement of the work that is wrong: not an outage
            async with store.reading() as tx:
                await tx.conn.exec_driver_sql("SELECT nope FROM cases")
        assert not isinstance(raised.value, StoreUnavailable)
    finally:
        await store.close()
