"""The Alembic migrations on SQLite, and on PostgreSQL for the schema and a full way down and up: they build the
schema `flows/store/tables.py` describes, the latest goes down and up again, and pruning (flows/retention.py)
reads through the indexes they make."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, event, inspect
from sqlalchemy.ext.asyncio import AsyncEngine

from flows.store.database import SqlStore, open_database
from flows.store.migrate import alembic_config, upgrade_sync
from flows.store.tables import metadata
from tests.support.postgres import PostgresServer

PRUNING_INDEXES = {  # table: (index, column), in the order the pruner goes
    "processed_updates": ("ix_processed_updates_processed_at", "processed_at"),
    "outbox": ("ix_outbox_delivered", "delivered_at"),
    "timers": ("ix_timers_fired", "fired_at"),
}


def indexes(path: Path) -> dict[str, set[str]]:
    engine = create_engine(f"sqlite:///{path}")
    try:
        found = inspect(engine)
        return {table: {index["name"] or "" for index in found.get_indexes(table)} for table in PRUNING_INDEXES}
    finally:
        engine.dispose()


def test_the_migrations_build_the_schema_the_tables_describe(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    upgrade_sync(f"sqlite+aiosqlite:///{path}")
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata) == []
    finally:
        engine.dispose()


def test_the_pruning_indexes_go_down_and_come_back_up(tmp_path: Path) -> None:
    path = tmp_path / "moved.db"
    url = f"sqlite+aiosqlite:///{path}"
    upgrade_sync(url)
    command.downgrade(alembic_config(url), "0005")
    assert not any(PRUNING_INDEXES[table][0] in names for table, names in indexes(path).items()
                   if table != "processed_updates")
    upgrade_sync(url)
    assert all(PRUNING_INDEXES[table][0] in names for table, names in indexes(path).items())


async def test_pruning_is_a_range_scan_of_an_index(db: AsyncEngine) -> None:
    statements: list[tuple[str, Any]] = []

    @event.listens_for(db.sync_engine, "before_cursor_execute")
    def _seen(_conn: Any, _cursor: Any, statement: str, params: Any, _context: Any, _many: bool) -> None:
        if statement.startswith("DELETE"):
            statements.append((statement, params))

    now = datetime(2026, 12, 1, tzinfo=UTC)
    async with SqlStore(db).transaction() as tx:
        await tx.updates.prune(now, 1_000)
        await tx.outbox.prune(now, 1_000)
        await tx.timers.prune(now, 1_000)
    async with db.connect() as conn:
        raw = await conn.get_raw_connection()
        plans = []
        for statement, params in statements:
            cursor = await raw.driver_connection.execute(f"EXPLAIN QUERY PLAN {statement}", params)  # type: ignore[union-attr]
            plans.append(" / ".join(str(row[-1]) for row in await cursor.fetchall()))
    assert len(plans) == 3
    for plan, (table, (index, column)) in zip(plans, PRUNING_INDEXES.items(), strict=True):
        assert f"SEARCH {table} USING " in plan and f"INDEX {index} ({column}<?)" in plan, plan


def account_columns(path: Path) -> set[str]:
    engine = create_engine(f"sqlite:///{path}")
    try:
        return {column["name"] for column in inspect(engine).get_columns("accounts")}
    finally:
        engine.dispose()


def test_the_desk_and_import_stamps_go_down_and_come_back_up_marking_locked_rows_as_the_desks(
    tmp_path: Path,
) -> None:
    path = tmp_path / "stamps.db"
    url = f"sqlite+aiosqlite:///{path}"
    upgrade_sync(url)
    command.downgrade(alembic_config(url), "0006")
    assert not {"desk_changed_at", "imported_at"} & account_columns(path)
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO accounts (email, identity_verified, two_factor, withdrawals_locked_until, created_at, "
                "updated_at) VALUES ('locked@example.com', 0, 'none', '2026-12-05 10:00:00.000000', "
                "'2026-12-01 10:00:00.000000', '2026-12-03 10:00:00.000000'), ('plain@example.com', 0, 'totp', NULL, "
                "'2026-12-01 10:00:00.000000', '2026-12-01 10:00:00.000000')")
        upgrade_sync(url)
        with engine.connect() as conn:
            stamps = dict(conn.exec_driver_sql("SELECT email, desk_changed_at FROM accounts").all())
            imported = conn.exec_driver_sql("SELECT imported_at FROM accounts").scalars().all()
    finally:
        engine.dispose()
    assert stamps == {"locked@example.com": "2026-12-03 10:00:00.000000", "plain@example.com": None}
    assert imported == [None, None]


def test_on_postgresql_the_migrations_build_the_same_schema_and_go_all_the_way_down_and_up(
    postgres: PostgresServer,
) -> None:
    url = postgres.url(postgres.new_database())
    upgrade_sync(url)
    assert asyncio.run(schema_differences(url)) == []
    command.downgrade(alembic_config(url), "base")
    assert asyncio.run(table_names(url)) == {"alembic_version"}
    upgrade_sync(url)
    assert asyncio.run(schema_differences(url)) == []


async def schema_differences(url: str) -> list[Any]:
    engine = open_database(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync, opts={"compare_type": True}), metadata))
    finally:
        await engine.dispose()


async def table_names(url: str) -> set[str]:
    engine = open_database(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
    finally:
        await engine.dispose()
