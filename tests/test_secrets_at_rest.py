"""Secrets at rest: a one-time code delivered to a chat leaves no copy in the SQLite database's files (the
outbox row is redacted, SQLite overwrites deleted content, and the write-ahead log is scrubbed: at once, and
for redactions within `SCRUB_EVERY` seconds of a scrub, once that time is up)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import flows.delivery
from tests.support.chat import Bot
from tests.support.desk import begin, code_in


@pytest.fixture(autouse=True)
def quick_scrubs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flows.delivery, "SCRUB_EVERY", 0.2)


async def test_a_delivered_code_leaves_no_copy_in_the_database_files(desk: Bot, db_url: str) -> None:
    chat = desk.chat()
    await begin(chat, "Switch to phone verification", "ada@example.com")
    replies = await chat.tap("Get Code")
    sms, email = code_in(replies, "SMS"), code_in(replies, "Email")
    await desk.runner.settle()
    await asyncio.sleep(0.5)  # the second code was redacted within SCRUB_EVERY of the first one's scrub
    database = Path(db_url.removeprefix("sqlite+aiosqlite:///"))
    files = [database, database.with_name(database.name + "-wal")]
    contents = b"".join(path.read_bytes() for path in files if path.exists())
    assert contents  # the desk's own database: the codes went through it
    assert sms.encode() not in contents and email.encode() not in contents
