"""`recovery-bot db copy --to URL`: SQLite to PostgreSQL and back, every row equal (datetimes and JSON included), a
target with rows refused and left as it was, PostgreSQL's sequences moved past the copied ids, and the command
itself."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from bot.cli import main
from flows.events import Sender
from flows.records import AuditEntry, Case, NewCode, NewTimer, OutgoingEvent, QueuedChange, TimerSpec
from flows.replies import SendMessage
from flows.store import copy, tables
from flows.store.copy import CopyFailed, copied_tables, copy_database
from flows.store.database import SqlStore, open_database
from flows.store.migrate import upgrade_sync
from flows.store.startup import DatabaseProblem
from tests.support.postgres import PostgresServer

NOW = datetime(2026, 12, 1, 12, 0, 0, 123456, tzinfo=UTC)  # microseconds must survive both ways
SECRET = "gAAAAAB-an-encrypted-authenticator-secret"
CODE_HASH = "f3a1c0de-hash-of-a-verification-code"


async def populate(url: str) -> None:
    """Rows in every table, written by the real store."""
    store = SqlStore(open_database(url))
    try:
        async with store.transaction() as tx:
            await tx.updates.claim([f"update:{n}" for n in range(5)], NOW)
            await tx.users.touch([Sender(n, n, "de" if n % 2 else None) for n in range(1, 6)], NOW)
            await tx.accounts.add({"jane@example.com": {"phone": "+15550100", "totp_secret_enc": SECRET,
                                                        "withdrawals_locked_until": NOW + timedelta(hours=48)},
                                   "joe@example.com": {"identity_verified": True}}, NOW)
            await tx.cases.save([
                Case("c1", 1, 1, "phone", "ask_email", {"email": "jane@example.com", "nested": {"b": [1, 2], "a": None},
                                                        "ünï": "çødé ✓"}, "open", 2, NOW, NOW),
                Case("c2", 2, 2, "reverify", "review", {}, "review", 0, NOW, NOW + timedelta(minutes=1)),
                Case("C3", 3, 3, "phone", "done", {"x": 1.5}, "recovered", 4, NOW, NOW, NOW + timedelta(days=1)),
            ])
            await tx.timers.add([NewTimer("c1", 1, 1, "ask_email", TimerSpec("nudge", NOW + timedelta(minutes=n),
                                                                               {"n": n})) for n in range(4)])
            await tx.outbox.add([SendMessage(n, f"message {n}") for n in range(1, 4)], NOW)
            await tx.leases.hold("chat", [1, 2], "0123456789abcdef", NOW + timedelta(seconds=60))
            await tx.evidence.record([("c2", 900, (41, 42))], NOW)
            await tx.audit.add([AuditEntry("staff:900", "approve", "c2", {"reason": "ok", "by": [900]})], NOW)
            await tx.codes.add(NewCode(1, 1, False, "c1", "email", CODE_HASH, NOW, NOW + timedelta(minutes=30)))
            await tx.failures.add(1, "totp", 1, "c1", NOW)
            ids = await tx.directory_ids.local_ids(["remote-a", "remote-b"], NOW)
            await tx.directory_changes.queue([QueuedChange("key-1", ids["remote-a"], "remote-a", {"kind": "lock"},
                                                           "c1", 1, {"text": "done"})], NOW)
            await tx.events.add([OutgoingEvent("0b7c6f5e-0000-4000-8000-000000000001", "case.opened", NOW,
                                               {"case": "c1"})])
            broadcast = await tx.broadcasts.create(NOW, 900, "all", None, text="<b>Hello</b>", copy_from=None)
            await tx.broadcasts.start(broadcast, 900, 77, NOW)
    finally:
        await store.close()


async def dump(url: str) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table, as the store reads it back (aware datetimes, parsed JSON), in key order."""
    engine = open_database(url)
    try:
        async with engine.connect() as conn:
            return {table.name: [dict(row) for row in (await conn.execute(
                select(table).order_by(*copy._key_order(conn, table)))).mappings()] for table in copied_tables()}
    finally:
        await engine.dispose()


def sqlite_at(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


async def test_sqlite_to_postgresql_and_back_keeps_every_row(db_url: str, postgres_url: str, tmp_path: Path) -> None:
    await populate(db_url)
    original = await dump(db_url)
    assert all(original.values()), [name for name, rows in original.items() if not rows]

    to_postgres = await copy_database(db_url, postgres_url, chunk_rows=2)  # more than one chunk per table
    assert {table.name: table.rows for table in to_postgres} == {name: len(rows) for name, rows in original.items()}
    assert await dump(postgres_url) == original

    back = tmp_path / "elsewhere" / "back.db"
    await copy_database(postgres_url, sqlite_at(back), chunk_rows=3)
    assert await dump(sqlite_at(back)) == original
    case = next(row for row in original["cases"] if row["id"] == "c1")
    assert case["created_at"] == NOW and case["data"]["ünï"] == "çødé ✓"


async def test_new_rows_after_a_copy_to_postgresql_get_new_ids(db_url: str, postgres_url: str) -> None:
    await populate(db_url)
    original = await dump(db_url)
    await copy_database(db_url, postgres_url)
    store = SqlStore(open_database(postgres_url))
    try:
        async with store.transaction() as tx:
            (queued,) = await tx.outbox.add([SendMessage(1, "after the copy")], NOW)
            code = await tx.codes.add(NewCode(1, 1, False, "c1", "email", "another", NOW, NOW))
            broadcast = await tx.broadcasts.create(NOW, 900, "all", None, text="again", copy_from=None)
            await tx.audit.add([AuditEntry("staff:900", "note", "c1")], NOW)
            await tx.timers.add([NewTimer("c1", 1, 1, None, TimerSpec("late", NOW))])
    finally:
        await store.close()
    assert queued.id == max(row["id"] for row in original["outbox"]) + 1
    assert code == max(row["id"] for row in original["verification_codes"]) + 1
    assert broadcast == max(row["id"] for row in original["broadcasts"]) + 1
    copied = await dump(postgres_url)
    assert len(copied["audit_log"]) == len(original["audit_log"]) + 1
    assert len(copied["timers"]) == len(original["timers"]) + 1


async def test_an_empty_table_on_postgresql_starts_its_ids_at_one(db_url: str, postgres_url: str) -> None:
    await copy_database(db_url, postgres_url)
    store = SqlStore(open_database(postgres_url))
    try:
        async with store.transaction() as tx:
            (queued,) = await tx.outbox.add([SendMessage(1, "first")], NOW)
    finally:
        await store.close()
    assert queued.id == 1


async def test_a_postgresql_database_that_sorts_text_otherwise_gets_an_equal_copy(
    db_url: str, postgres: PostgresServer
) -> None:
    """Its collation puts "C3" after "c2" where SQLite puts it first: rows are compared in one order anyway. The
    target is a new, empty database, migrated by the copy."""
    await populate(db_url)
    name = f"icu_{uuid.uuid4().hex[:12]}"
    await asyncio.to_thread(postgres.sql, f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' "
                                          "LOCALE_PROVIDER icu ICU_LOCALE 'en-US'")
    target = postgres.url(name)
    await copy_database(db_url, target)
    assert await dump(target) == await dump(db_url)


@pytest.mark.parametrize("target_backend", ["postgres", "sqlite"])
async def test_a_target_with_rows_is_refused_and_left_as_it_was(
    db_url: str, target_backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    await populate(db_url)
    target = (request.getfixturevalue("postgres_url") if target_backend == "postgres"
              else sqlite_at(tmp_path / "target.db"))
    await asyncio.to_thread(upgrade_sync, target)
    store = SqlStore(open_database(target))
    try:
        async with store.transaction() as tx:
            await tx.audit.add([AuditEntry("staff:1", "note", "x")], NOW)
    finally:
        await store.close()
    before = await dump(target)

    with pytest.raises(DatabaseProblem) as refused:
        await copy_database(db_url, target)
    assert "audit_log" in str(refused.value) and "not empty" in str(refused.value)
    assert "\n" not in str(refused.value)
    assert await dump(target) == before


async def test_a_source_behind_the_newest_schema_is_refused(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    await asyncio.to_thread(upgrade_sync, sqlite_at(old), "0008")
    with pytest.raises(DatabaseProblem, match=r"not the newest.*db upgrade"):
        await copy_database(sqlite_at(old), sqlite_at(tmp_path / "new.db"))
    assert not (tmp_path / "new.db").exists()


async def test_a_source_or_target_that_cannot_be_used_is_refused(db_url: str, tmp_path: Path) -> None:
    with pytest.raises(DatabaseProblem, match="does not exist"):
        await copy_database(sqlite_at(tmp_path / "missing.db"), sqlite_at(tmp_path / "new.db"))
    assert not (tmp_path / "missing.db").exists()
    with pytest.raises(DatabaseProblem, match="configured database"):
        await copy_database(db_url, db_url)
    with pytest.raises(DatabaseProblem, match="in-memory"):
        await copy_database(db_url, "sqlite+aiosqlite://")
    with pytest.raises(DatabaseProblem, match="--to mysql"):
        await copy_database(db_url, "mysql+aiomysql://desk:hunter2@db/recovery")
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all" * 100)
    with pytest.raises(DatabaseProblem, match=r"garbage\.db"):
        await copy_database(sqlite_at(garbage), sqlite_at(tmp_path / "new.db"))


async def test_a_copy_that_does_not_match_fails_naming_the_table(
    db_url: str, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await populate(db_url)
    moving = copy._move_sequences_past_ids

    async def move_and_spoil(conn: Any) -> None:  # as a lossy write would, inside the copy's transaction
        await conn.execute(update(tables.cases).where(tables.cases.c.id == "c2").values(data={"changed": True}))
        await moving(conn)

    monkeypatch.setattr(copy, "_move_sequences_past_ids", move_and_spoil)
    with pytest.raises(CopyFailed, match="table cases") as failed:
        await copy_database(db_url, postgres_url)
    assert "changed" not in str(failed.value)


def test_the_command_copies_and_then_refuses_a_second_time(
    db_url: str, postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(populate(db_url))
    monkeypatch.chdir(tmp_path)  # no .env from the working folder
    monkeypatch.setenv("DATABASE_URL", db_url)

    assert main(["db", "copy", "--to", postgres_url]) == 0
    out = capsys.readouterr().out
    total = sum(len(rows) for rows in asyncio.run(dump(db_url)).values())
    assert "cases: 3 rows\n" in out and "accounts: 2 rows\n" in out
    assert out.endswith(f"copied {total} rows in {len(copied_tables())} tables, checked row for row\n")
    assert SECRET not in out and CODE_HASH not in out and "jane@example.com" not in out

    assert main(["db", "copy", "--to", postgres_url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not empty" in err and "table " in err


def test_the_command_hides_the_targets_password(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", db_url)
    assert main(["db", "copy", "--to", "postgresql+asyncpg://desk:hunter2@127.0.0.1:9/recovery"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--to" in err and "hunter2" not in err and "desk:***@" in err


def test_the_command_needs_a_target_and_says_so_in_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as usage:
        main(["db", "copy"])
    assert usage.value.code == 2 and "--to" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["db", "copy", "--help"])
    assert "row for row" in capsys.readouterr().out


def test_a_target_folder_that_cannot_be_made_is_one_line(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    shutil.copy(db_url.removeprefix("sqlite+aiosqlite:///"), blocker)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", db_url)
    assert main(["db", "copy", "--to", sqlite_at(blocker / "r.db")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "--to" in err


def test_the_command_exits_1_when_the_copy_does_not_match(
    db_url: str, postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(populate(db_url))
    moving = copy._move_sequences_past_ids

    async def move_and_lose_a_row(conn: Any) -> None:
        await conn.execute(tables.failed_checks.delete())
        await moving(conn)

    monkeypatch.setattr(copy, "_move_sequences_past_ids", move_and_lose_a_row)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", db_url)
    assert main(["db", "copy", "--to", postgres_url]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "table failed_checks (1 rows in the source, 0 in the target)" in err
