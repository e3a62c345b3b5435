"""Several instances on one database: each has its own store (its own engine and pool), and their write
transactions still never interleave, as the ports promise."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from sqlalchemy import text

from flows.store.database import SqlStore, open_database
from tests.store.test_core import case


@pytest.fixture(params=["sqlite", "postgres"])
def shared_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("db_url" if request.param == "sqlite" else "postgres_url"))


async def test_read_then_write_transactions_of_two_instances_never_interleave(shared_url: str) -> None:
    """Each transaction reads a case, yields to the other instance, and writes the turn it read plus one: were
    two of them ever open at once, one increment would be lost."""
    first, second = SqlStore(open_database(shared_url)), SqlStore(open_database(shared_url))
    try:
        async with first.transaction() as tx:
            await tx.cases.save([case("c1", 7)])

        async def increment(store: SqlStore) -> None:
            async with store.transaction() as tx:
                read = (await tx.cases.by_id(["c1"]))["c1"]
                await asyncio.sleep(0.005)
                await tx.cases.save([replace(read, turn=read.turn + 1)])

        await asyncio.gather(*(increment(store) for _ in range(10) for store in (first, second)))
        async with first.reading() as tx:
            assert (await tx.cases.by_id(["c1"]))["c1"].turn == 20
    finally:
        await first.close()
        await second.close()


async def test_a_silent_session_cannot_hold_the_writers_lock_for_long(postgres_url: str) -> None:
    engine = open_database(postgres_url)
    try:
        async with engine.connect() as conn:
            shown = (await conn.execute(text("SHOW idle_in_transaction_session_timeout"))).scalar_one()
    finally:
        await engine.dispose()
    assert shown == "1min"
