"""Scale: an event's latency with many cases stored, and the bytes a stored case takes.

One database grows through the sizes (e.g. 1,000, then 100,000, then 1,000,000 cases). The rows are bulk-inserted
directly with one SQL statement (closed cases of the test flow, each its own user and chat, with the shape the
runner writes), the file is checkpointed, and then fresh chats send /start and a name through the real runner
(the test flow, tests/engine_flow.py), `workers` users at a time, one chat after another: the p50/p99 of an
event (handle to commit) at each size.
Bytes per case is the growth of the database file (after a WAL checkpoint) over the rows inserted.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import tempfile
import time
from typing import Any

from benchmarks.engine_throughput import steady
from flows.store.migrate import upgrade

SYNTHETIC_USER = 50_000_000


def insert_cases(path: str, first: int, count: int) -> float:
    """Insert `count` closed cases numbered from `first`; returns the seconds it took."""
    began = time.perf_counter()
    with sqlite3.connect(path, timeout=30) as db:
        db.execute(
            "WITH RECURSIVE n(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "INSERT INTO cases (id, user_id, chat_id, account_id, flow, step, data, status, turn, created_at, "
            "updated_at, closed_at) SELECT printf('s%014d', i), ? + i, ? + i, NULL, 'signup', 'done', "
            "'{\"name\": \"Ada\"}', 'completed', 2, '2026-01-05 12:00:00.000000', '2026-01-05 12:00:05.000000', "
            "'2026-01-05 12:00:05.000000' FROM n",
            (first, first + count - 1, SYNTHETIC_USER, SYNTHETIC_USER))
        db.commit()
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return time.perf_counter() - began


def file_bytes(path: str) -> int:
    return sum(os.path.getsize(p) for p in (path, f"{path}-wal") if os.path.exists(p))


async def measure(sizes: list[int], chats: int, workers: int = 20) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/scale.db"
        url = f"sqlite+aiosqlite:///{path}"
        await upgrade(url)
        await steady(url, workers, chats)  # warm up: the first queries and the code paths
        stored = 0
        next_chat = chats + 1
        for size in sizes:
            size_before = file_bytes(path)
            took = await asyncio.to_thread(insert_cases, path, stored + 1, size - stored)
            inserted = size - stored
            stored = size
            grown = file_bytes(path) - size_before
            figures = await steady(url, workers, chats, first_chat=next_chat)
            next_chat += chats
            results.append({
                "cases": size, "inserted": inserted, "insert_s": round(took, 1),
                "bytes_per_case": round(grown / inserted) if inserted else None, "file_bytes": file_bytes(path),
                "events": figures["events"], "events_per_s": figures["events_per_s"],
                "p50_ms": figures["p50_ms"], "p99_ms": figures["p99_ms"],
            })
    first, last = results[0], results[-1]
    ratio = last["p99_ms"] / first["p99_ms"] if first["p99_ms"] else None
    return {"chats": chats, "workers": workers, "sizes": results,
            "p99_ratio_last_to_first": round(ratio, 2) if ratio else None}
