"""Durable events per second through the real runner on SQLite, with a transport that only counts, beside the
ceiling of bare single-row INSERT + COMMIT through aiosqlite measured in the same run.

Run alone: python benchmarks/engine_throughput.py [chats]  — each chat sends /start then a name, concurrently,
using the small test flow (ask a name, confirm). The suite (`python -m benchmarks --only engine`) calls `measure`.
An event's latency is the time from `runner.handle(event)` to its return (the event committed).
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiosqlite

from benchmarks.common import ms, quantile
from flows.clock import SystemClock
from flows.events import CommandReceived, Event, Sender, TextReceived
from flows.replies import Reply
from flows.runner import Runner
from flows.store.database import SqlStore, open_database
from flows.store.migrate import upgrade
from tests.engine_flow import make_engine


class CountingTransport:
    def __init__(self) -> None:
        self.sent = 0

    async def deliver(self, reply: Reply) -> int | None:
        self.sent += 1
        return None


async def timed(runner: Runner, event: Event, latencies: list[float]) -> None:
    began = time.perf_counter()
    await runner.handle(event)
    latencies.append(time.perf_counter() - began)


async def events(url: str, chats: int, first_chat: int = 1) -> dict[str, Any]:
    """`chats` chats at once, each /start then a name, on the database at `url` (migrated)."""
    db = open_database(url)
    transport = CountingTransport()
    runner = Runner(SqlStore(db), make_engine(), transport, SystemClock())
    await runner.start()
    senders = [Sender(i, i, "en") for i in range(first_chat, first_chat + chats)]
    latencies: list[float] = []
    started = time.perf_counter()
    await asyncio.gather(*(timed(runner, CommandReceived(f"s{s.user_id}", s, "start"), latencies) for s in senders))
    await asyncio.gather(*(timed(runner, TextReceived(f"t{s.user_id}", s, "Ada"), latencies) for s in senders))
    committed = time.perf_counter() - started
    await runner.settle()
    delivered = time.perf_counter() - started
    await runner.stop()
    await db.dispose()
    count = 2 * chats
    return {
        "events": count, "events_per_s": round(count / committed), "with_delivery_per_s": round(count / delivered),
        "replies_delivered": transport.sent, "p50_ms": ms(quantile(latencies, 0.5)),
        "p99_ms": ms(quantile(latencies, 0.99)), "max_ms": ms(max(latencies)),
    }


async def steady(url: str, workers: int, chats: int, first_chat: int = 1) -> dict[str, Any]:
    """`workers` users at a time, each sending /start then a name for one chat after another (`chats` in all):
    each event's latency under a steady load rather than one burst."""
    db = open_database(url)
    runner = Runner(SqlStore(db), make_engine(), CountingTransport(), SystemClock())
    await runner.start()
    latencies: list[float] = []
    chat_ids = iter(range(first_chat, first_chat + chats))

    async def worker() -> None:
        for chat in chat_ids:
            sender = Sender(chat, chat, "en")
            await timed(runner, CommandReceived(f"s{chat}", sender, "start"), latencies)
            await timed(runner, TextReceived(f"t{chat}", sender, "Ada"), latencies)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    took = time.perf_counter() - started
    await runner.settle()
    await runner.stop()
    await db.dispose()
    return {"events": len(latencies), "events_per_s": round(len(latencies) / took),
            "p50_ms": ms(quantile(latencies, 0.5)), "p99_ms": ms(quantile(latencies, 0.99)),
            "max_ms": ms(max(latencies))}


async def bare_insert_commit(path: str, seconds: float) -> dict[str, Any]:
    """Single-row INSERT + COMMIT through aiosqlite, one after the other, in WAL mode with synchronous=NORMAL
    (the pragmas the store uses): the ceiling of one durable write per round trip."""
    async with aiosqlite.connect(path) as db:
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=NORMAL")
        await db.execute("CREATE TABLE rows (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
        await db.commit()
        count = 0
        began = time.perf_counter()
        while time.perf_counter() - began < seconds:
            await db.execute("INSERT INTO rows (body) VALUES (?)", ("x" * 100,))
            await db.commit()
            count += 1
        took = time.perf_counter() - began
    return {"rows": count, "rows_per_s": round(count / took)}


async def measure(chats: int, bare_seconds: float = 3.0) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        bare = await bare_insert_commit(f"{folder}/bare.db", bare_seconds)
        url = f"sqlite+aiosqlite:///{folder}/bench.db"
        await upgrade(url)
        engine = await events(url, chats)
    ratio = engine["events_per_s"] / bare["rows_per_s"] if bare["rows_per_s"] else None
    return {"chats": chats, "engine": engine, "bare_insert_commit": bare,
            "ratio_to_bare": round(ratio, 2) if ratio is not None else None}


def profile(chats: int, top: int = 15) -> dict[str, list[dict[str, Any]]]:
    """cProfile of `events` for `chats` chats: the functions with the most own time, overall and in the project's
    own code (flows/). (Cumulative times mean little for coroutines: a suspended one keeps counting.)"""
    async def once() -> None:
        with tempfile.TemporaryDirectory() as folder:
            url = f"sqlite+aiosqlite:///{folder}/profile.db"
            await upgrade(url)
            profiler.enable()
            await events(url, chats)
            profiler.disable()

    profiler = cProfile.Profile()
    asyncio.run(once())
    stats = pstats.Stats(profiler, stream=io.StringIO())
    total = sum(row[2] for row in stats.stats.values())  # type: ignore[attr-defined]
    items = stats.stats.items()  # type: ignore[attr-defined]
    own = sorted(items, key=lambda item: item[1][2], reverse=True)[:top]
    ours = sorted((i for i in items if "/flows/" in i[0][0]), key=lambda item: item[1][2], reverse=True)[:top]
    return {
        "own": [{"function": f"{Path(file).name}:{line}({name})", "seconds": round(row[2], 3),
                 "percent": round(100 * row[2] / total, 1), "calls": row[1]} for (file, line, name), row in own],
        "own_in_flows": [{"function": f"{Path(file).name}:{line}({name})", "seconds": round(row[2], 3),
                          "percent": round(100 * row[2] / total, 1), "calls": row[1]}
                         for (file, line, name), row in ours],
    }


if __name__ == "__main__":
    result = asyncio.run(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 5_000))
    engine, bare = result["engine"], result["bare_insert_commit"]
    print(f"{engine['events']} events: committed at {engine['events_per_s']:,} events/s "
          f"(p50 {engine['p50_ms']} ms, p99 {engine['p99_ms']} ms); with delivery recorded "
          f"{engine['with_delivery_per_s']:,} events/s; bare INSERT+COMMIT {bare['rows_per_s']:,}/s "
          f"(ratio {result['ratio_to_bare']})")
