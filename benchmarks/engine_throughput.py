"""Durable events per second through the real runner on SQLite, with a transport that only counts.

Run: python benchmarks/engine_throughput.py [chats]  — each chat sends /start then a name, concurrently, using
the small test flow (ask a name, confirm). Prints events/s for the whole run, commits included.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flows.clock import SystemClock
from flows.events import CommandReceived, Sender, TextReceived
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


async def main(chats: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite+aiosqlite:///{folder}/bench.db"
        await upgrade(url)
        db = open_database(url)
        transport = CountingTransport()
        runner = Runner(SqlStore(db), make_engine(), transport, SystemClock())
        await runner.start()
        senders = [Sender(i, i, "en") for i in range(1, chats + 1)]
        started = time.perf_counter()
        await asyncio.gather(*(runner.handle(CommandReceived(f"s{s.user_id}", s, "start")) for s in senders))
        await asyncio.gather(*(runner.handle(TextReceived(f"t{s.user_id}", s, "Ada")) for s in senders))
        committed = time.perf_counter() - started
        await runner.settle()
        delivered = time.perf_counter() - started
        await runner.stop()
        await db.dispose()
    events = 2 * chats
    print(f"{events} events: committed at {events / committed:,.0f} events/s; "
          f"{transport.sent} replies delivered and recorded at {events / delivered:,.0f} events/s")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5_000))
