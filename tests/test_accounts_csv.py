"""Importing accounts from CSV into the migrated SQLite database: all or nothing, idempotent, and never undoing what
the desk changed since."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from flows.accounts_csv import ImportReport, import_accounts, parse_accounts
from flows.clock import FakeClock
from flows.directory import (
    ENROL_AUTHENTICATOR,
    LOCK_WITHDRAWALS,
    RESET_TWO_FACTOR,
    SWITCH_TO_PHONE,
    AccountView,
    Change,
    SecretBox,
)
from flows.store.accounts import SqlAccounts
from flows.store.tables import accounts
from flows.table_directory import TableDirectory

BOX = SecretBox("x" * 40)
HEADER = "email,phone,totp_secret,security_question,security_answer,identity_verified"
GOOD = f"""{HEADER}
Jane.Doe@Example.com,+1 (555) 123-4534,jbsw-y3dp ehpk-3pxp,First pet?,The Cat,yes
john@example.com,+447946095800,,,,
"ann@example.com",,GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ,"Town where
you were born?",Springfield,0
"""


async def run_import(db: AsyncEngine, text: str, clock: FakeClock, overwrite: bool = False) -> ImportReport:
    async with db.begin() as conn:
        return await import_accounts(SqlAccounts(conn), text, BOX, clock.now(), overwrite_desk_changes=overwrite)


async def raw_rows(db: AsyncEngine) -> list[tuple[Any, ...]]:
    async with db.connect() as conn:
        return [tuple(row) for row in await conn.exec_driver_sql("SELECT * FROM accounts ORDER BY id")]


async def views(db: AsyncEngine, clock: FakeClock) -> dict[str, AccountView]:
    async with db.connect() as conn:
        listed = await TableDirectory(SqlAccounts(conn), BOX, clock.now()).list_accounts()
    return {view.email: view for view in listed}


async def test_a_good_file_is_imported(db: AsyncEngine, clock: FakeClock) -> None:
    assert await run_import(db, GOOD, clock) == ImportReport(created=3)
    jane = (await views(db, clock))["jane.doe@example.com"]
    assert (jane.phone, jane.two_factor, jane.identity_verified) == ("+15551234534", "totp", True)
    async with db.connect() as conn:
        directory = TableDirectory(SqlAccounts(conn), BOX, clock.now())
        assert await directory.totp_secret(jane.id) == "JBSWY3DPEHPK3PXP"
        assert await directory.verify_security_answer(jane.id, "the cat")
    assert "JBSWY3DPEHPK3PXP" not in repr(await raw_rows(db))
    john = (await views(db, clock))["john@example.com"]
    assert (john.has_totp, john.two_factor, john.security_question) == (False, "phone", None)


async def test_the_same_file_twice_changes_nothing(db: AsyncEngine, clock: FakeClock) -> None:
    await run_import(db, GOOD, clock)
    before = await raw_rows(db)
    clock.advance(hours=1)
    assert await run_import(db, GOOD, clock) == ImportReport(unchanged=3)
    assert await raw_rows(db) == before


async def test_a_reimport_peppers_an_answer_hashed_before_the_pepper(db: AsyncEngine, clock: FakeClock) -> None:
    salt = b"0123456789abcdef"
    digest = hashlib.scrypt(b"the cat", salt=salt, n=2**14, r=8, p=1, maxmem=64 * 1024 * 1024, dklen=32)
    old = "$".join(["scrypt", "16384", "8", "1", base64.b64encode(salt).decode(), base64.b64encode(digest).decode()])
    await run_import(db, GOOD, clock)
    async with db.begin() as conn:
        await conn.execute(update(accounts).where(accounts.c.email == "jane.doe@example.com")
                           .values(security_answer_hash=old))
    await run_import(db, GOOD, clock)
    jane = (await views(db, clock))["jane.doe@example.com"]
    async with db.connect() as conn:
        stored = await conn.scalar(select(accounts.c.security_answer_hash).where(accounts.c.id == jane.id))
        assert str(stored).startswith("scrypt-hmac$")
        assert await TableDirectory(SqlAccounts(conn), BOX, clock.now()).verify_security_answer(jane.id, "The Cat")


async def test_an_update_row_changes_only_its_account(db: AsyncEngine, clock: FakeClock) -> None:
    await run_import(db, GOOD, clock)
    before = await raw_rows(db)
    clock.advance(hours=1)
    changed = GOOD.replace("+447946095800", "+447946095811")
    assert await run_import(db, changed, clock) == ImportReport(updated=1, unchanged=2)
    after = await raw_rows(db)
    assert [after[0], after[2]] == [before[0], before[2]]
    john = (await views(db, clock))["john@example.com"]
    assert john.phone == "+447946095811"


async def test_a_new_secret_and_answer_replace_the_old_ones(db: AsyncEngine, clock: FakeClock) -> None:
    await run_import(db, GOOD, clock)
    async with db.begin() as conn:
        await SqlAccounts(conn).advance_totp_step(1, 1234, clock.now())
    changed = GOOD.replace("jbsw-y3dp ehpk-3pxp", "KRSXG5CTMVRXEZLU").replace("The Cat", "The Dog")
    assert await run_import(db, changed, clock) == ImportReport(updated=1, unchanged=2)
    async with db.connect() as conn:
        directory = TableDirectory(SqlAccounts(conn), BOX, clock.now())
        assert await directory.totp_secret(1) == "KRSXG5CTMVRXEZLU"
        assert await directory.verify_security_answer(1, "the dog")
        assert not await directory.verify_security_answer(1, "the cat")
        jane = await SqlAccounts(conn).by_id(1)
    assert jane is not None and jane.totp_last_step is None


async def test_a_new_email_is_created_beside_the_others(db: AsyncEngine, clock: FakeClock) -> None:
    await run_import(db, GOOD, clock)
    more = GOOD + "zoe@example.com,,,,,\n"
    assert await run_import(db, more, clock) == ImportReport(created=1, unchanged=3)
    assert (await views(db, clock))["zoe@example.com"].two_factor == "none"


async def at_the_desk(db: AsyncEngine, clock: FakeClock, action: Callable[[TableDirectory], Awaitable[object]]) -> None:
    async with db.begin() as conn:
        await action(TableDirectory(SqlAccounts(conn), BOX, clock.now()))
    clock.advance(hours=1)


JANE_KEPT = (2, "j•••@example.com")


async def test_a_desk_reset_stays_through_a_reimport_which_reports_the_row(db: AsyncEngine, clock: FakeClock) -> None:
    await run_import(db, GOOD, clock)
    jane = (await views(db, clock))["jane.doe@example.com"]
    await at_the_desk(db, clock, lambda desk: desk.apply(jane.id, Change(RESET_TWO_FACTOR), "k"))
    new_answer = GOOD.replace("The Cat", "The Dog")
    for _ in range(2):  # and on every import after, until the file agrees with the desk
        report = await run_import(db, new_answer, clock)
        assert report == ImportReport(unchanged=2, kept=[JANE_KEPT])
        assert "JBSW" not in repr(report)
    after = (await views(db, clock))["jane.doe@example.com"]
    assert (after.has_totp, after.two_factor, after.phone) == (False, "none", "+15551234534")
    async with db.connect() as conn:
        directory = TableDirectory(SqlAccounts(conn), BOX, clock.now())
        assert await directory.totp_secret(jane.id) is None
        assert await directory.verify_security_answer(jane.id, "the dog")  # what the desk never changes still imports


async def test_a_desk_lock_is_not_shortened_by_an_import(db: AsyncEngine, clock: FakeClock) -> None:
    await run_import(db, GOOD, clock)
    jane = (await views(db, clock))["jane.doe@example.com"]
    until = clock.now() + timedelta(hours=48)
    await at_the_desk(db, clock, lambda desk: desk.apply(jane.id, Change(LOCK_WITHDRAWALS, until=until), "k"))
    new_phone = GOOD.replace("+1 (555) 123-4534", "+15559990000")
    assert await run_import(db, new_phone, clock) == ImportReport(unchanged=2, kept=[JANE_KEPT])
    assert await run_import(db, new_phone, clock, overwrite=True) == ImportReport(
        updated=1, unchanged=2, overwritten=[JANE_KEPT])
    async with db.connect() as conn:
        locked = await TableDirectory(SqlAccounts(conn), BOX, clock.now()).get(jane.id)
    assert locked is not None and locked.phone == "+15559990000"
    assert locked.withdrawals_locked_until == until


async def test_a_row_the_desk_never_touched_still_updates(db: AsyncEngine, clock: FakeClock) -> None:
    await run_import(db, GOOD, clock)
    jane = (await views(db, clock))["jane.doe@example.com"]
    await at_the_desk(db, clock, lambda desk: desk.apply(jane.id, Change(SWITCH_TO_PHONE), "k"))
    changed = GOOD.replace("+447946095800", "+447946095811")
    assert await run_import(db, changed, clock) == ImportReport(updated=1, unchanged=1, kept=[JANE_KEPT])
    found = await views(db, clock)
    assert found["john@example.com"].phone == "+447946095811"
    assert (found["jane.doe@example.com"].two_factor, found["jane.doe@example.com"].has_totp) == ("phone", False)


async def test_the_overwrite_flag_lets_the_file_win(db: AsyncEngine, clock: FakeClock) -> None:
    await run_import(db, GOOD, clock)
    jane = (await views(db, clock))["jane.doe@example.com"]
    await at_the_desk(db, clock, lambda desk: desk.apply(jane.id, Change(RESET_TWO_FACTOR), "k"))
    assert await run_import(db, GOOD, clock, overwrite=True) == ImportReport(
        updated=1, unchanged=2, overwritten=[JANE_KEPT])
    async with db.connect() as conn:
        assert await TableDirectory(SqlAccounts(conn), BOX, clock.now()).totp_secret(jane.id) == "JBSWY3DPEHPK3PXP"
    assert await run_import(db, GOOD.replace("The Cat", "The Dog"), clock) == ImportReport(updated=1, unchanged=2)


async def test_a_file_that_agrees_with_the_desk_settles_the_row(db: AsyncEngine, clock: FakeClock) -> None:
    await run_import(db, GOOD, clock)
    ann = (await views(db, clock))["ann@example.com"]
    enrol = Change(ENROL_AUTHENTICATOR, secret="KRSXG5CTMVRXEZLU")
    await at_the_desk(db, clock, lambda desk: desk.apply(ann.id, enrol, "k"))
    agreeing = GOOD.replace("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ", "KRSXG5CTMVRXEZLU")
    assert await run_import(db, agreeing, clock) == ImportReport(unchanged=3)
    assert await run_import(db, GOOD, clock) == ImportReport(updated=1, unchanged=2)  # imports as usual again
    async with db.connect() as conn:
        secret = await TableDirectory(SqlAccounts(conn), BOX, clock.now()).totp_secret(ann.id)
    assert secret == "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"


BAD_ROWS = [
    (",+15551234534,,,,", "email: required"),
    ("jane@@example.com,,,,,", "not a plausible address"),
    ("jane doe@example.com,,,,,", "not a plausible address"),
    ("jane\u00a0doe@example.com,,,,,", "not a plausible address"),
    ("jane\0@example.com,,,,,", "not a plausible address"),
    ("jane@localhost,,,,,", "not a plausible address"),
    ("jane@example.,,,,,", "not a plausible address"),
    (f"{'j' * 310}@example.com,,,,,", "not a plausible address"),
    ("jane@example.com,5551234534,,,,", "phone:"),
    ("jane@example.com,+1555,,,,", "phone:"),
    ("jane@example.com,+1555123453412345,,,,", "phone:"),
    ("jane@example.com,,JBSWY3DPEHPK3PX,,,", "totp_secret: The key is too short"),
    ("jane@example.com,,JBSWY3DPEHPK3PX0,,,", "totp_secret: The key may contain only"),
    ("jane@example.com,,,First pet?,,", "give both or neither"),
    ("jane@example.com,,,,the cat,", "give both or neither"),
    ("jane@example.com,,,,,maybe", "identity_verified: expected"),
    ("jane@example.com,,,,", "expected 6 values, found 5"),
    ("john@example.com,,,,,", "already on line 2"),
]


@pytest.mark.parametrize(("row", "message"), BAD_ROWS)
async def test_a_bad_row_is_reported_and_nothing_is_imported(
    db: AsyncEngine, clock: FakeClock, row: str, message: str
) -> None:
    text = f"{HEADER}\njohn@example.com,,,,,\n\n{row}\nann@example.com,,,,,\n"
    report = await run_import(db, text, clock)
    assert (report.created, report.updated, report.unchanged, report.ok) == (0, 0, 0, False)
    assert [line for line, _ in report.errors] == [4]
    assert message in report.errors[0][1]
    assert await raw_rows(db) == []


def test_duplicates_ignore_case_and_every_problem_is_listed() -> None:
    text = f"{HEADER}\njohn@example.com,,,,,\nJOHN@example.com,,,,,\nbad,+1,,,,\n"
    records, errors = parse_accounts(text)
    assert [r.email for r in records] == ["john@example.com"]
    assert [line for line, _ in errors] == [3, 4, 4]


def test_line_numbers_count_lines_inside_quoted_cells() -> None:
    _, errors = parse_accounts(GOOD + "bad,,,,,\n")
    assert [line for line, _ in errors] == [6]


@pytest.mark.parametrize(("header", "message"), [
    ("email,phone,totp_secret,security_question", "missing columns: security_answer"),
    ("email,phone,totp_secret,security_question,security_answer,nickname", "unknown columns: nickname"),
    ("email,phone,totp_secret,security_question,security_answer,email", "repeated columns: email"),
    ("", "the file is empty"),
])
async def test_a_bad_header_is_an_error_on_line_one(
    db: AsyncEngine, clock: FakeClock, header: str, message: str
) -> None:
    report = await run_import(db, f"{header}\n" + ("john@example.com,,,," if header else ""), clock)
    assert len(report.errors) == 1
    assert report.errors[0][0] == 1 and message in report.errors[0][1]
    assert await raw_rows(db) == []


async def test_the_header_may_be_spaced_upper_case_without_the_optional_column(
    db: AsyncEngine, clock: FakeClock
) -> None:
    text = "\ufeffEmail, Phone ,TOTP_SECRET,security_question,security_answer\r\njohn@example.com,,,,\r\n"
    assert await run_import(db, text, clock) == ImportReport(created=1)
    assert (await views(db, clock))["john@example.com"].identity_verified is False


@pytest.mark.parametrize(("cell", "verified"), [
    ("true", True), ("YES", True), ("1", True), (" True ", True),
    ("false", False), ("no", False), ("0", False), ("", False),
])
async def test_identity_verified_values(db: AsyncEngine, clock: FakeClock, cell: str, verified: bool) -> None:
    assert await run_import(db, f"{HEADER}\njohn@example.com,,,,,{cell}\n", clock) == ImportReport(created=1)
    assert (await views(db, clock))["john@example.com"].identity_verified is verified


@pytest.mark.parametrize("text", [
    f"{HEADER}\njohn@example.com,,,,,\n",
    "email,phone,totp_secret,security_question,security_answer\njohn@example.com,,,,\n",
])
async def test_an_unstated_identity_verified_keeps_the_stored_value(
    db: AsyncEngine, clock: FakeClock, text: str
) -> None:
    await run_import(db, f"{HEADER}\njohn@example.com,,,,,yes\n", clock)
    assert await run_import(db, text, clock) == ImportReport(unchanged=1)
    assert await run_import(db, f"{HEADER}\njohn@example.com,,,,,no\n", clock) == ImportReport(updated=1)
    assert (await views(db, clock))["john@example.com"].identity_verified is False
