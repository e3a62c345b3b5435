"""Recovery statistics against a real migrated SQLite database: periods, outcomes, verification, timing, report."""

from __future__ import annotations

import builtins
import itertools
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncEngine

from flows.records import RECOVERY_METHODS
from flows.stats import (
    CATALOG_KEYS,
    MONTH,
    PERIODS,
    STATUSES,
    TODAY,
    WEEK,
    Period,
    Stats,
    collect,
    funnel_chart,
    stats_lines,
)
from flows.store.stats import SqlStatistics, _flag
from flows.store.tables import cases, users

NOW = datetime(2024, 5, 15, 10, 30, tzinfo=UTC)
MIDNIGHT = datetime(2024, 5, 15, tzinfo=UTC)
_ids: Iterator[int] = itertools.count(1)


def a_case(
    flow: str = "phone",
    status: str = "open",
    created: datetime = NOW - timedelta(hours=1),
    closed: datetime | None = None,
    updated: datetime | None = None,
    data: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A row for the cases table (a fresh 12-character id each time)."""
    return {
        "id": f"c{next(_ids):011d}", "user_id": 7, "chat_id": 7, "flow": flow, "step": "somewhere",
        "data": dict(data or {}), "status": status, "turn": 1, "created_at": created,
        "updated_at": updated or closed or created, "closed_at": closed,
    }


async def insert(db: AsyncEngine, rows: list[dict[str, Any]]) -> None:
    async with db.begin() as conn:
        await conn.execute(cases.insert(), rows)


async def read(db: AsyncEngine, now: datetime = NOW) -> Stats:
    async with db.connect() as conn:
        return await collect(SqlStatistics(conn), now)


def test_periods_are_today_since_midnight_utc_and_rolling_windows() -> None:
    assert [p.label for p in PERIODS] == ["today", "7d", "30d"]
    assert TODAY.since(NOW) == MIDNIGHT
    assert WEEK.since(NOW) == NOW - timedelta(days=7)
    assert MONTH.since(NOW) == NOW - timedelta(days=30)
    east = datetime(2024, 5, 15, 1, 0, tzinfo=timezone(timedelta(hours=3)))  # still the 14th in UTC
    assert Period("today", 0).since(east) == datetime(2024, 5, 14, tzinfo=UTC)


async def test_started_counts_each_period_at_its_boundaries(db: AsyncEngine) -> None:
    await insert(db, [
        a_case(created=NOW),  # all three
        a_case(created=MIDNIGHT),  # today starts at 00:00 UTC
        a_case(created=MIDNIGHT - timedelta(microseconds=1)),  # yesterday: 7d and 30d
        a_case(created=NOW - timedelta(days=7)),  # the first moment of 7d
        a_case(created=NOW - timedelta(days=8)),  # 30d but not 7d
        a_case(created=NOW - timedelta(days=30)),  # the first moment of 30d
        a_case(created=NOW - timedelta(days=30, seconds=1)),  # too old
        a_case(created=NOW + timedelta(seconds=1)),  # after `now`: not counted
        a_case(flow="start", created=NOW),  # the menu is not a method
        a_case(flow="backup", created=NOW - timedelta(days=8)),
    ])
    stats = await read(db)
    assert [stats.get(p, "phone").started for p in PERIODS] == [2, 4, 6]
    assert [stats.get(p, "backup").started for p in PERIODS] == [0, 0, 1]
    assert [stats.get(p, "reverify").started for p in PERIODS] == [0, 0, 0]


async def test_outcomes_count_each_status_and_recovered_is_completed_or_approved(db: AsyncEngine) -> None:
    closed = NOW - timedelta(minutes=5)
    await insert(db, [
        a_case(flow="reverify", status="open"),
        a_case(flow="reverify", status="review"),
        a_case(flow="reverify", status="approved", closed=closed),
        a_case(flow="reverify", status="approved", closed=closed),
        a_case(flow="reverify", status="rejected", closed=closed),
        a_case(flow="reverify", status="abandoned", closed=closed, created=NOW - timedelta(days=8)),
        a_case(flow="phone", status="completed", closed=closed),
        a_case(flow="phone", status="failed", closed=closed),
        a_case(flow="phone", status="cancelled", closed=closed),
        a_case(flow="phone", status="replaced", closed=closed),
    ])
    stats = await read(db)
    week = stats.get(WEEK, "reverify")
    assert (week.started, week.recovered) == (5, 2)
    assert dict(week.outcomes) == {**dict.fromkeys(STATUSES, 0), "open": 1, "review": 1, "approved": 2, "rejected": 1}
    assert stats.get(MONTH, "reverify").outcomes["abandoned"] == 1
    phone = stats.get("today", "phone")
    assert (phone.started, phone.recovered) == (4, 1)
    shown = {status: n for status, n in phone.outcomes.items() if n}
    assert shown == {"completed": 1, "failed": 1, "cancelled": 1, "replaced": 1}


async def test_verified_follows_each_methods_own_rule(db: AsyncEngine) -> None:
    closed = NOW - timedelta(minutes=1)
    await insert(db, [
        a_case(flow="phone", data={"phone_verified": True}),
        a_case(flow="phone", data={"phone_verified": False}),
        a_case(flow="phone", data={"email_verified": True}),  # not the phone's proof
        a_case(flow="phone", status="completed", closed=closed, data={"phone_verified": True}),
        a_case(flow="reverify", data={"email_verified": True, "email": "alice@example.com"}),
        a_case(flow="reverify", data={"phone_verified": True}),  # not the email's proof
        a_case(flow="reverify", status="approved", closed=closed),  # approved without the flag
        a_case(flow="backup", status="completed", closed=closed),
        a_case(flow="backup", status="review", data={"phone_verified": True, "email_verified": True}),
        a_case(flow="backup", status="rejected", closed=closed),
        a_case(flow="start", data={"phone_verified": True}),
    ])
    stats = await read(db)
    assert {m: stats.get(TODAY, m).verified for m in RECOVERY_METHODS} == {"phone": 2, "reverify": 1, "backup": 1}
    assert {m: stats.get(TODAY, m).recovered for m in RECOVERY_METHODS} == {"phone": 1, "reverify": 1, "backup": 1}


async def test_verified_is_counted_per_period(db: AsyncEngine) -> None:
    await insert(db, [
        a_case(flow="phone", data={"phone_verified": True}, created=NOW - timedelta(days=8)),
        a_case(flow="phone", data={"phone_verified": True}, created=NOW - timedelta(days=2)),
    ])
    stats = await read(db)
    assert [stats.get(p, "phone").verified for p in PERIODS] == [0, 1, 2]


async def test_median_recovery_time_per_method_over_30_days(db: AsyncEngine) -> None:
    start = NOW - timedelta(days=3)
    await insert(db, [
        *(a_case(flow="phone", status="completed", created=start, closed=start + timedelta(minutes=m))
          for m in (10, 20, 60)),
        a_case(flow="backup", status="approved", created=start, closed=start + timedelta(hours=1)),
        a_case(flow="backup", status="completed", created=start, closed=start + timedelta(hours=3)),
        a_case(flow="backup", status="rejected", created=start, closed=start + timedelta(hours=50)),
        a_case(flow="backup", status="completed", created=NOW - timedelta(days=40), closed=NOW - timedelta(days=9)),
        a_case(flow="reverify", status="review", created=start),
    ])
    stats = await read(db)
    assert stats.median_recovery == {"phone": timedelta(minutes=20), "backup": timedelta(hours=2), "reverify": None}


async def test_pending_reviews_and_the_oldest_ones_age(db: AsyncEngine) -> None:
    await insert(db, [
        a_case(flow="reverify", status="review", created=NOW - timedelta(days=40), updated=NOW - timedelta(hours=5)),
        a_case(flow="backup", status="review", created=NOW - timedelta(hours=3), updated=NOW - timedelta(hours=2)),
        a_case(flow="backup", status="approved", updated=NOW - timedelta(days=3), closed=NOW - timedelta(days=3)),
    ])
    stats = await read(db)
    assert (stats.pending_reviews, stats.oldest_review_age) == (2, timedelta(hours=5))


async def test_no_reviews_no_users_no_cases(db: AsyncEngine) -> None:
    stats = await read(db)
    assert (stats.pending_reviews, stats.oldest_review_age, stats.users, stats.blocked_users) == (0, None, 0, 0)
    assert all(stats.get(p, m).started == 0 for p in PERIODS for m in RECOVERY_METHODS)
    assert stats.median_recovery == dict.fromkeys(RECOVERY_METHODS)


async def test_users_and_blocked_users(db: AsyncEngine) -> None:
    async with db.begin() as conn:
        await conn.execute(users.insert(), [
            {"id": n, "chat_id": n, "blocked": n % 3 == 0, "first_seen": NOW, "last_seen": NOW} for n in range(1, 8)
        ])
    stats = await read(db)
    assert (stats.users, stats.blocked_users) == (7, 2)


async def test_now_must_be_timezone_aware(db: AsyncEngine) -> None:
    with pytest.raises(ValueError, match="naive"):
        await read(db, NOW.replace(tzinfo=None))


def test_the_postgresql_flag_test_reads_the_json_in_sql() -> None:
    sql = str(_flag("postgresql", "phone_verified").compile(dialect=postgresql.dialect()))
    assert "jsonb_extract_path_text(CAST(cases.data AS JSONB)" in sql


async def test_report_lines_use_catalog_keys_and_no_personal_data(db: AsyncEngine) -> None:
    await insert(db, [
        a_case(flow="reverify", status="review", data={"email": "alice@example.com", "email_verified": True},
               updated=NOW - timedelta(hours=26)),
        a_case(flow="phone", status="completed", created=NOW - timedelta(days=2, minutes=45),
               closed=NOW - timedelta(days=2), data={"phone": "+15550001234", "phone_verified": True}),
    ])
    lines = stats_lines(await read(db))
    assert {key for key, _ in lines} <= CATALOG_KEYS
    assert lines[0] == ("stats.title", {"now": "2024-05-15 10:30"})
    assert lines[1:3] == [("stats.period_today", {}),
                          ("stats.method_phone", {"started": 0, "verified": 0, "recovered": 0})]
    reverify = lines[3:5]
    assert reverify[0] == ("stats.method_reverify", {"started": 1, "verified": 1, "recovered": 0})
    assert reverify[1] == ("stats.outcomes", {**dict.fromkeys(STATUSES, 0), "review": 1})
    assert ("stats.no_cases", {}) not in lines
    assert lines[-3:] == [
        ("stats.median", {"phone": "45m", "reverify": "—", "backup": "—"}),
        ("stats.reviews", {"count": 1, "age": "1d 2h"}),
        ("stats.users", {"users": 0, "blocked": 0}),
    ]
    assert "alice" not in repr(lines) and "5550001234" not in repr(lines)


async def test_report_of_an_empty_desk(db: AsyncEngine) -> None:
    lines = stats_lines(await read(db))
    assert [key for key, _ in lines] == [
        "stats.title",
        "stats.period_today", "stats.no_cases",
        "stats.period_7d", "stats.no_cases",
        "stats.period_30d", "stats.no_cases",
        "stats.median", "stats.reviews_none", "stats.users",
    ]


async def test_funnel_chart_is_a_png(db: AsyncEngine) -> None:
    pytest.importorskip("matplotlib")
    await insert(db, [
        a_case(flow="phone", data={"phone_verified": True}),
        a_case(flow="phone", status="completed", closed=NOW, data={"phone_verified": True}),
        a_case(flow="backup", status="rejected", closed=NOW),
    ])
    png = funnel_chart(await read(db))
    assert png is not None and png.startswith(b"\x89PNG\r\n\x1a\n")


async def test_funnel_chart_of_an_empty_desk_is_a_png(db: AsyncEngine) -> None:
    pytest.importorskip("matplotlib")
    png = funnel_chart(await read(db))
    assert png is not None and png.startswith(b"\x89PNG")


async def test_funnel_chart_is_none_without_matplotlib(db: AsyncEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_matplotlib(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    assert funnel_chart(await read(db)) is None


async def test_collect_reads_everything_in_three_statements(db: AsyncEngine) -> None:
    await insert(db, [a_case(flow=m, status=s) for m in RECOVERY_METHODS for s in STATUSES])
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(db.sync_engine, "before_cursor_execute", count)
    try:
        await read(db)
    finally:
        event.remove(db.sync_engine, "before_cursor_execute", count)
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 3
