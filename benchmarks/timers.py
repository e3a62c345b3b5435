"""Timers at scale: pending timers on SQLite, how fast the bot starts with them and how late they fire.

Run alone: python benchmarks/timers.py [count] [spread_seconds]
Inserts `count` detached timers due evenly over the next `spread_seconds` (default 100,000 over 120 s), starts a
runner with the real clock as `recovery-bot run` does, lets `run_timers` fire them all, and prints the start-up
time, the time to the first firing, and the lateness (fired_at - due_at) percentiles from the timers table.
The suite (`python -m benchmarks --only timers`) calls `measure`.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, select

from benchmarks.common import ms, quantile
from flows.clock import SystemClock
from flows.engine import Engine
from flows.model import Context, Flow, Outcome, Say, Step
from flows.replies import Reply
from flows.runner import Runner
from flows.store import tables
from flows.store.database import SqlStore, SqlTx, open_database
from flows.store.migrate import upgrade


def lead(count: int) -> float:
    """Seconds from seeding to the first timer's due time: room for seeding and starting the runner."""
    return min(5.0, 1.0 + count / 25_000)


class NullTransport:
    async def deliver(self, reply: Reply) -> int | None:
        return None


async def tick(ctx: Context) -> Outcome:
    return Say()


def engine() -> Engine:
    flow = Flow("bench", "bench", "idle", (Step("idle", "engine.no_case"),))
    return Engine({"bench": flow}, {}, timer_handlers={"tick": tick})


async def seed(url: str, count: int, spread: float, clock: SystemClock) -> None:
    db = open_database(url)
    start = clock.now() + timedelta(seconds=lead(count))
    rows = [
        {"case_id": f"c{i:011d}", "user_id": i, "chat_id": i, "step": None, "kind": "tick", "payload": {},
         "due_at": start + timedelta(seconds=spread * i / count)}
        for i in range(count)
    ]
    async with db.begin() as conn:
        for offset in range(0, count, 10_000):
            await conn.execute(tables.timers.insert(), rows[offset : offset + 10_000])
    await db.dispose()


async def lateness(url: str) -> list[float]:
    db = open_database(url)
    async with db.connect() as conn:
        rows = await conn.execute(select(tables.timers.c.due_at, tables.timers.c.fired_at))
        late = [(fired - due).total_seconds() for due, fired in rows]
    await db.dispose()
    return late


async def measure(count: int, spread: float) -> dict[str, Any]:
    clock = SystemClock()
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite+aiosqlite:///{folder}/timers.db"
        await upgrade(url)
        await seed(url, count, spread, clock)
        began = time.perf_counter()
        db = open_database(url)
        runner = Runner(SqlStore(db), engine(), NullTransport(), clock)
        await runner.start()
        async with db.connect() as conn:
            pending = (await conn.execute(select(func.count()).select_from(tables.timers)
                                          .where(tables.timers.c.fired_at.is_(None)))).scalar_one()
            await SqlTx(conn).timers.next_due()
        started = time.perf_counter() - began
        stopping = asyncio.Event()
        loop = asyncio.create_task(runner.run_timers(stopping))
        while True:
            await asyncio.sleep(1)
            async with db.connect() as conn:
                left = (await conn.execute(select(func.count()).select_from(tables.timers)
                                           .where(tables.timers.c.fired_at.is_(None)))).scalar_one()
            if left == 0:
                break
        stopping.set()
        await loop
        await runner.stop()
        await db.dispose()
        late = sorted(await lateness(url))
    return {"pending": pending, "spread_s": spread, "startup_s": round(started, 3), "fired": len(late),
            "late_p50_ms": ms(quantile(late, 0.5)), "late_p99_ms": ms(quantile(late, 0.99)),
            "late_max_ms": ms(late[-1] if late else None)}


if __name__ == "__main__":
    found = asyncio.run(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000,
                                float(sys.argv[2]) if len(sys.argv) > 2 else 120.0))
    print(f"{found['pending']:,} pending timers: runner started and found the next due one in "
          f"{found['startup_s']:.2f} s")
    print(f"fired {found['fired']:,} timers due over {found['spread_s']:.0f} s; "
          f"lateness p50 {found['late_p50_ms']} ms, p99 {found['late_p99_ms']} ms, max {found['late_max_ms']} ms")
