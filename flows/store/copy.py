"""Copying the whole database to another one (SQLite to PostgreSQL, or back): the target is migrated to the same
schema revision, must hold no rows, gets every table in one transaction (foreign keys first, a chunk of rows at a
time), its PostgreSQL sequences moved past the copied ids, and is then checked row for row against the source.

The source is read in one snapshot, so the copy and the check see the same rows even while the desk runs. No
message names more than a table: the rows hold encrypted keys and code hashes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Connection, String, Table, Text, bindparam, cast, false, func, inspect, select
from sqlalchemy import table as named_table
from sqlalchemy.dialects.postgresql import REGCLASS
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.expression import FromClause
from sqlalchemy.types import TypeDecorator

from flows.store import tables
from flows.store.database import READ_ONLY, open_database, sqlite_file
from flows.store.migrate import alembic_config
from flows.store.startup import DatabaseProblem, explain, make_ready, url_problem
from flows.store.types import JSONText

CHUNK_ROWS = 1000  # rows read and written at a time: memory stays bounded whatever the table's size
MIGRATIONS_TABLE = "alembic_version"  # the target's own, written by its migration


class CopyFailed(Exception):
    """The copy was rolled back, or what was copied does not match the source; the message names the table."""


@dataclass(frozen=True)
class CopiedTable:
    name: str
    rows: int


def shown(url: str) -> str:
    """`url` as it may be printed: without its password."""
    return make_url(url).render_as_string(hide_password=True)


def copied_tables() -> list[Table]:
    """Every table of the schema, each after the tables its foreign keys point to."""
    return [table for table in tables.metadata.sorted_tables if table.name != MIGRATIONS_TABLE]


async def copy_database(source_url: str, target_url: str, chunk_rows: int = CHUNK_ROWS) -> list[CopiedTable]:
    """Copy every table from `source_url` into the empty database at `target_url` and check it row for row.

    DatabaseProblem: a database that cannot be used or is refused (nothing was written to the target's rows).
    CopyFailed: the copy was rolled back, or the committed copy does not match the source."""
    _refuse_unusable(source_url, target_url)
    source = _open(source_url, about_target=False)
    try:
        async with _snapshot(source, source_url) as snapshot:
            await _check_source(snapshot, source_url)
            return await _copy_into(snapshot, target_url, chunk_rows)
    finally:
        await source.dispose()


def _refuse_unusable(source_url: str, target_url: str) -> None:
    if problem := url_problem(target_url):
        raise DatabaseProblem(f"--to {problem}")
    source_file, target_file = sqlite_file(source_url), sqlite_file(target_url)
    if target_file is None and make_url(target_url).get_backend_name() == "sqlite":
        raise DatabaseProblem("--to names an in-memory SQLite database, which would be gone with the copy; name a file")
    if source_file is not None and not source_file.exists():
        raise DatabaseProblem(f"the SQLite database {source_file} does not exist; set DATABASE_URL to the database "
                              "to copy")
    if _same_database(source_url, target_url, source_file, target_file):
        raise DatabaseProblem("--to names the configured database (DATABASE_URL); copy into another one")


def _same_database(source_url: str, target_url: str, source_file: Path | None, target_file: Path | None) -> bool:
    if source_file is not None and target_file is not None:
        return source_file.resolve() == target_file.resolve()
    return make_url(source_url) == make_url(target_url)


@asynccontextmanager
async def _snapshot(engine: AsyncEngine, url: str) -> AsyncIterator[AsyncConnection]:
    """One reading transaction on the source that sees the same rows from the first statement to the last."""
    try:
        conn = await engine.connect()
    except Exception as error:
        raise DatabaseProblem(explain(url, error)) from None
    try:
        if engine.dialect.name == "postgresql":
            await conn.execution_options(isolation_level="REPEATABLE READ")
        else:  # SQLite in WAL mode: a deferred transaction reads one snapshot
            await conn.execution_options(**{READ_ONLY: True})
        yield conn
    finally:
        await conn.close()


async def _check_source(conn: AsyncConnection, url: str) -> None:
    try:
        await _require_newest_schema(conn, url)
        await _require_known_tables(conn)
    except DBAPIError as error:
        raise DatabaseProblem(explain(url, error)) from None


async def _require_newest_schema(conn: AsyncConnection, url: str) -> None:
    current = set(await conn.run_sync(_current_revisions))
    newest = set(ScriptDirectory.from_config(alembic_config(url)).get_heads())
    if current == newest:
        return
    known = {script.revision for script in ScriptDirectory.from_config(alembic_config(url)).walk_revisions()}
    at = ", ".join(sorted(current)) or "none"
    if not current <= known:
        raise DatabaseProblem(f"the database to copy is at schema revision {at}, which this version of recovery-bot "
                              "does not know (a newer version migrated it): upgrade recovery-bot first")
    raise DatabaseProblem(f"the database to copy is at schema revision {at}, not the newest "
                          f"({', '.join(sorted(newest))}): run `recovery-bot db upgrade` first")


def _current_revisions(conn: Connection) -> Sequence[str]:
    return MigrationContext.configure(conn).get_current_heads()


async def _require_known_tables(conn: AsyncConnection) -> None:
    """A table this version has no model of would be left behind: refuse rather than copy part of the database."""
    known = {table.name for table in copied_tables()} | {MIGRATIONS_TABLE}
    unknown = sorted(set(await _table_names(conn)) - known)
    if unknown:
        raise DatabaseProblem(f"the database to copy has a table this version does not know, {unknown[0]}: it would "
                              "not be copied")


async def _table_names(conn: AsyncConnection) -> list[str]:
    return await conn.run_sync(lambda sync: inspect(sync).get_table_names())


def _open(url: str, about_target: bool) -> AsyncEngine:
    try:
        return open_database(url)
    except (OSError, ImportError) as error:  # the SQLite file's folder, or the driver
        message = explain(url, error)
        raise DatabaseProblem(_about_target(message) if about_target else message) from None


async def _copy_into(snapshot: AsyncConnection, target_url: str, chunk_rows: int) -> list[CopiedTable]:
    target = _open(target_url, about_target=True)
    try:
        await _refuse_rows_before_migrating(target, target_url)
        await _migrate(target_url)
        copied = await _copy_tables(snapshot, target, chunk_rows)
        await _check_row_for_row(snapshot, target)
        return copied
    finally:
        await target.dispose()


async def _refuse_rows_before_migrating(target: AsyncEngine, url: str) -> None:
    """A target with rows is refused before its migration could change its schema."""
    try:
        async with target.connect() as conn:
            await conn.execution_options(**{READ_ONLY: True})
            names = [name for name in await _table_names(conn) if name != MIGRATIONS_TABLE]
            for name in names:
                if await _holds_rows(conn, named_table(name)):
                    raise _not_empty(name)
    except DatabaseProblem:
        raise
    except Exception as error:
        raise DatabaseProblem(_about_target(explain(url, error))) from None


async def _migrate(url: str) -> None:
    try:
        await make_ready(url)
    except DatabaseProblem as problem:
        raise DatabaseProblem(_about_target(str(problem))) from None


def _about_target(message: str) -> str:
    return f"the target database (--to): {message.replace('DATABASE_URL', '--to')}"


def _not_empty(table: str) -> DatabaseProblem:
    return DatabaseProblem(f"the target database is not empty: table {table} holds rows; copy only into an empty "
                           "database")


async def _holds_rows(conn: AsyncConnection, table: FromClause) -> bool:
    return await conn.scalar(select(1).select_from(table).limit(1)) is not None


async def _copy_tables(snapshot: AsyncConnection, target: AsyncEngine, chunk_rows: int) -> list[CopiedTable]:
    """Every table in one transaction on the target: all of them, or (on any failure) none."""
    copied = []
    async with target.begin() as conn:
        for table in copied_tables():
            if await _holds_rows(conn, table):
                raise _not_empty(table.name)
            copied.append(CopiedTable(table.name, await _copy_table(snapshot, conn, table, chunk_rows)))
        await _move_sequences_past_ids(conn)
    return copied


async def _copy_table(source: AsyncConnection, target: AsyncConnection, table: Table, chunk_rows: int) -> int:
    rows = 0
    try:
        result = await source.stream(select(table).order_by(*_key_order(source, table)))
        async for chunk in result.mappings().partitions(chunk_rows):
            await target.execute(table.insert(), [dict(row) for row in chunk])
            rows += len(chunk)
    except StatementError as error:  # the driver's message may quote a value: only its kind is told
        raise CopyFailed(f"copying table {table.name} failed ({_kind(error)}); the target was left without rows, "
                         "nothing was committed") from None
    return rows


def _kind(error: StatementError) -> str:
    cause = error.orig.__cause__ if error.orig is not None else None  # asyncpg's own error, under the DB-API one
    return type(cause or error.orig or error).__name__


def _key_order(conn: AsyncConnection, table: Table) -> list[ColumnElement[Any]]:
    """The primary key, with text compared byte by byte on PostgreSQL too (its collation may sort otherwise than
    SQLite), so that both databases give the rows in one order."""
    order: list[ColumnElement[Any]] = []
    for column in table.primary_key.columns:
        text_key = conn.dialect.name == "postgresql" and _holds_text(column)
        order.append(column.collate("C") if text_key else column)
    return order


def _holds_text(column: Column[Any]) -> bool:
    kind = column.type
    if isinstance(kind, TypeDecorator):  # SQLModel's AutoString decorates a String
        kind = kind.impl_instance
    return isinstance(kind, String)


async def _move_sequences_past_ids(conn: AsyncConnection) -> None:
    """On PostgreSQL, each serial key's sequence continues after the greatest id copied (SQLite needs nothing: it
    takes the greatest id in the table)."""
    if conn.dialect.name != "postgresql":
        return
    for table in copied_tables():
        column = table.autoincrement_column
        if column is None:
            continue
        name = conn.dialect.identifier_preparer.format_table(table)
        sequence = await conn.scalar(select(func.pg_get_serial_sequence(name, column.name)))
        if sequence is None:
            continue
        following = func.coalesce(func.max(column), 0) + 1
        await conn.execute(select(func.setval(cast(bindparam("sequence", sequence, Text), REGCLASS), following,
                                              false())))


async def _check_row_for_row(snapshot: AsyncConnection, target: AsyncEngine) -> None:
    """After the commit: each table holds as many rows as the source's snapshot, and the same ones."""
    async with target.connect() as conn:
        await conn.execution_options(**{READ_ONLY: True})
        for table in copied_tables():
            source_rows, source_digest = await _digest(snapshot, table)
            target_rows, target_digest = await _digest(conn, table)
            if source_rows != target_rows:
                raise _mismatch(table.name, f"{source_rows} rows in the source, {target_rows} in the target")
            if source_digest != target_digest:
                raise _mismatch(table.name, "its rows differ from the source's")


def _mismatch(table: str, how: str) -> CopyFailed:
    return CopyFailed(f"the copy does not match the source in table {table} ({how}): the target holds it, do not "
                      "use it; copy again into an empty database")


async def _digest(conn: AsyncConnection, table: Table) -> tuple[int, str]:
    """How many rows the table holds, and a SHA-256 over all of them in key order, their values normalised."""
    digest, rows = hashlib.sha256(), 0
    columns = list(table.columns)
    result = await conn.stream(select(table).order_by(*_key_order(conn, table)))
    async for chunk in result.partitions(CHUNK_ROWS):
        for row in chunk:
            values = [_normalised(column, value) for column, value in zip(columns, row, strict=True)]
            digest.update(json.dumps(values, ensure_ascii=False).encode() + b"\n")
            rows += 1
    return rows, digest.hexdigest()


def _normalised(column: Column[Any], value: Any) -> Any:
    """`value` as one JSON value that is the same whichever database gave it."""
    if value is None:
        return None
    if isinstance(column.type, JSONText):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC).isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Decimal):
        return str(value)
    return value
