"""Broadcast: a durable job to many recipients, with pacing off (job throughput) and on (the achieved rate
and the most sends in any 1-second window, which must never exceed the rate).

In process: the real `BroadcastService` on SQLite with the users bulk-inserted, and a transport that records the
time of each send (and answers at once). "Pacing off" gives the service a rate no run can reach, so the job's own
costs (a commit before and after each send, the pages of pending rows) set the pace.
"""

from __future__ import annotations

import asyncio
import bisect
import sqlite3
import tempfile
import time
from typing import Any

from flows.broadcast import BroadcastService
from flows.clock import SystemClock
from flows.replies import Reply
from flows.store.database import SqlStore, open_database
from flows.store.migrate import upgrade

ADMIN = 1
STATUS_CHAT, STATUS_MESSAGE = 999_000_000, 1
FIRST_USER = 10_000_000


class StampingTransport:
    def __init__(self) -> None:
        self.sent: list[float] = []

    async def deliver(self, reply: Reply) -> int | None:
        if reply.chat_id != STATUS_CHAT:
            self.sent.append(time.perf_counter())
        return 1


def add_users(path: str, count: int) -> None:
    with sqlite3.connect(path, timeout=30) as db:
        db.execute(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "INSERT INTO users (id, chat_id, language, blocked, first_seen, last_seen) "
            "SELECT ? + i, ? + i, 'en', 0, '2026-01-05 12:00:00.000000', '2026-01-05 12:00:00.000000' FROM n",
            (count - 1, FIRST_USER, FIRST_USER))
        db.commit()


def most_in_a_second(stamps: list[float]) -> int:
    """The most sends in any window of one second (sliding, not aligned)."""
    ordered = sorted(stamps)
    return max((bisect.bisect_left(ordered, t + 1.0) - i for i, t in enumerate(ordered)), default=0)


async def one_run(recipients: int, rate: float, seconds: float | None) -> dict[str, Any]:
    """A broadcast to `recipients` at `rate`, cancelled after `seconds` unless it ended before (None: to the end)."""
    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/broadcast.db"
        url = f"sqlite+aiosqlite:///{path}"
        await upgrade(url)
        await asyncio.to_thread(add_users, path, recipients)
        db = open_database(url)
        transport = StampingTransport()
        service = BroadcastService(SqlStore(db), transport, SystemClock(), rate=rate)
        broadcast_id = await service.create(ADMIN, "all", text="<b>Maintenance</b> tonight")
        began = time.perf_counter()
        await service.start(broadcast_id, STATUS_CHAT, STATUS_MESSAGE)
        finished = True
        if seconds is None:
            await service.join(broadcast_id)
        else:
            task = service.task(broadcast_id)
            if task is not None:
                await asyncio.wait([task], timeout=seconds)
            if task is not None and not task.done():
                finished = False
                await service.cancel(broadcast_id)
        took = time.perf_counter() - began
        counts = await service.counts(broadcast_id)
        await service.stop()
        await db.dispose()
    stamps = transport.sent
    span = (stamps[-1] - stamps[0]) if len(stamps) > 1 else 0.0
    return {
        "recipients": recipients, "sent": len(stamps), "seconds": round(took, 2), "finished": finished,
        "start_s": round(stamps[0] - began, 3) if stamps else None,
        "sends_per_s": round((len(stamps) - 1) / span, 1) if span else None,
        "max_in_any_second": most_in_a_second(stamps), "counts": {k: v for k, v in counts.items() if v},
    }


async def measure(recipients: int, rate: float, paced_seconds: float, unpaced_seconds: float | None) -> dict[str, Any]:
    unpaced = await one_run(recipients, 1e9, unpaced_seconds)
    paced = await one_run(recipients, rate, paced_seconds)
    paced["rate"] = rate
    return {"pacing_off": unpaced, "pacing_on": paced}
