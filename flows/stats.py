"""Recovery statistics for the desk's staff: how many recoveries start, get verified and succeed, per method.

`collect` reads the numbers in three statements, counting with GROUP BY (the JSON flags are tested in SQL, so no case
data — and so no email, phone number or answer — ever reaches Python). `stats_lines` turns them into catalog keys
and parameters for the texts module; `funnel_chart` draws them as a PNG when matplotlib (the `charts` extra) is
installed.

A case is *recovered* when it ended "completed" or "approved"; it is *verified* when the phone code was accepted
(phone), the email code was accepted (reverify), or, for the backup key, when it was recovered. Only the three
methods count: a case still in the menu ("start") is not a recovery attempt yet.
"""

from __future__ import annotations

import io
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, cast, func, or_, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection

from flows.durations import format_duration
from flows.store.tables import CaseRow, User

cases = CaseRow.__table__  # type: ignore[attr-defined]
users = User.__table__  # type: ignore[attr-defined]

METHODS = ("phone", "reverify", "backup")
STATUSES = ("open", "review", "completed", "approved", "rejected", "cancelled", "abandoned", "failed", "replaced")
RECOVERED = ("completed", "approved")
VERIFIED_FLAG = {"phone": "phone_verified", "reverify": "email_verified"}
METHOD_NAMES = {"phone": "Phone code", "reverify": "Re-verification", "backup": "Backup key"}


@dataclass(frozen=True)
class Period:
    """A reporting window ending now: the last `days` days, or with `days == 0` the current UTC day."""

    label: str
    days: int

    def since(self, now: datetime) -> datetime:
        """The first moment of the window."""
        if self.days == 0:
            return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        return now - timedelta(days=self.days)


TODAY = Period("today", 0)
WEEK = Period("7d", 7)
MONTH = Period("30d", 30)
PERIODS = (TODAY, WEEK, MONTH)


@dataclass(frozen=True)
class MethodStats:
    """One method in one period: cases started, verified and recovered, and how many have each status."""

    started: int = 0
    verified: int = 0
    recovered: int = 0
    outcomes: Mapping[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))


@dataclass(frozen=True)
class Stats:
    """Everything the report shows, as plain numbers."""

    now: datetime
    periods: tuple[Period, ...]
    by_period: Mapping[str, Mapping[str, MethodStats]]
    median_recovery: Mapping[str, timedelta | None]
    pending_reviews: int
    oldest_review_age: timedelta | None
    users: int
    blocked_users: int

    def get(self, period: Period | str, method: str) -> MethodStats:
        """The numbers of `method` in `period` (a Period or its label)."""
        label = period.label if isinstance(period, Period) else period
        return self.by_period[label][method]


async def collect(conn: AsyncConnection, now: datetime) -> Stats:
    """Read the statistics as of `now` (timezone-aware) in three statements."""
    if now.tzinfo is None:
        raise ValueError("naive datetime: use timezone-aware UTC")
    counts = await _count_cases(conn, now)
    durations = await _recovery_durations(conn, now, MONTH.since(now))
    reviews, oldest, user_count, blocked = await _totals(conn)
    return Stats(
        now=now,
        periods=PERIODS,
        by_period={p.label: {m: _method_stats(counts, p.label, m) for m in METHODS} for p in PERIODS},
        median_recovery={m: _median(durations.get(m, [])) for m in METHODS},
        pending_reviews=reviews,
        oldest_review_age=None if oldest is None else now - oldest,
        users=user_count,
        blocked_users=blocked,
    )


def _flag(dialect: str, key: str) -> ColumnElement[bool]:
    """True where the case's JSON data has `key` set to true, tested in SQL."""
    if dialect == "postgresql":
        return func.jsonb_extract_path_text(cast(cases.c.data, JSONB), key) == "true"
    return func.json_extract(cases.c.data, f"$.{key}") == 1


def _verified(dialect: str) -> ColumnElement[bool]:
    """Each method's own proof: a code accepted, or for the backup key the recovery itself."""
    rules = [and_(cases.c.flow == method, _flag(dialect, flag)) for method, flag in VERIFIED_FLAG.items()]
    return or_(*rules, and_(cases.c.flow == "backup", cases.c.status.in_(RECOVERED)))


def _in_method_window(since: datetime, now: datetime) -> ColumnElement[bool]:
    return and_(cases.c.flow.in_(METHODS), cases.c.created_at >= since, cases.c.created_at <= now)


Counts = dict[tuple[str, str], dict[str, int]]
"""(flow, status) → {"n_<period>": cases started, "v_<period>": of those verified}."""


async def _count_cases(conn: AsyncConnection, now: datetime) -> Counts:
    """Cases per method and status, started and verified in each period: one GROUP BY statement."""
    verified = _verified(conn.dialect.name)
    columns: list[Any] = []
    for period in PERIODS:
        inside = cases.c.created_at >= period.since(now)
        columns.append(func.sum(case((inside, 1), else_=0)).label(f"n_{period.label}"))
        columns.append(func.sum(case((and_(inside, verified), 1), else_=0)).label(f"v_{period.label}"))
    earliest = min(period.since(now) for period in PERIODS)
    query = (
        select(cases.c.flow, cases.c.status, *columns)
        .where(_in_method_window(earliest, now))
        .group_by(cases.c.flow, cases.c.status)
    )
    result = await conn.execute(query)
    return {
        (row.flow, row.status): {name: int(value or 0) for name, value in row._mapping.items()
                                 if name not in ("flow", "status")}
        for row in result
    }


def _method_stats(counts: Counts, label: str, method: str) -> MethodStats:
    outcomes = dict.fromkeys(STATUSES, 0)
    verified = 0
    for (flow, status), numbers in counts.items():
        if flow == method:
            outcomes[status] = outcomes.get(status, 0) + numbers[f"n_{label}"]
            verified += numbers[f"v_{label}"]
    recovered = sum(outcomes[status] for status in RECOVERED)
    return MethodStats(sum(outcomes.values()), verified, recovered, outcomes)


async def _recovery_durations(conn: AsyncConnection, now: datetime, since: datetime) -> dict[str, list[timedelta]]:
    """How long each case recovered in the window took, per method."""
    query = select(cases.c.flow, cases.c.created_at, cases.c.closed_at).where(
        _in_method_window(since, now), cases.c.status.in_(RECOVERED), cases.c.closed_at.is_not(None)
    )
    durations: dict[str, list[timedelta]] = {}
    for row in await conn.execute(query):
        durations.setdefault(row.flow, []).append(row.closed_at - row.created_at)
    return durations


def _median(durations: Sequence[timedelta]) -> timedelta | None:
    if not durations:
        return None
    return timedelta(seconds=statistics.median(d.total_seconds() for d in durations))


async def _totals(conn: AsyncConnection) -> tuple[int, datetime | None, int, int]:
    """Pending reviews, the oldest one's last update, users and blocked users: one statement."""
    in_review = cases.c.status == "review"
    query = select(
        select(func.count()).select_from(cases).where(in_review).scalar_subquery(),
        select(func.min(cases.c.updated_at)).where(in_review).scalar_subquery(),
        select(func.count()).select_from(users).scalar_subquery(),
        select(func.count()).select_from(users).where(users.c.blocked.is_(True)).scalar_subquery(),
    )
    reviews, oldest, user_count, blocked = (await conn.execute(query)).one()
    return int(reviews), oldest, int(user_count), int(blocked)


Line = tuple[str, dict[str, object]]

CATALOG_KEYS = frozenset({
    "stats.title", "stats.no_cases", "stats.outcomes", "stats.median", "stats.reviews", "stats.reviews_none",
    "stats.users", *(f"stats.period_{period.label}" for period in PERIODS),
    *(f"stats.method_{method}" for method in METHODS),
})
"""Every catalog key `stats_lines` can use."""


def stats_lines(stats: Stats) -> list[Line]:
    """The report as (catalog key, parameters) pairs, one per line of the message, in order."""
    lines: list[Line] = [("stats.title", {"now": stats.now.astimezone(UTC).strftime("%Y-%m-%d %H:%M")})]
    for period in stats.periods:
        lines.extend(_period_lines(stats, period))
    lines.append(("stats.median", {m: format_duration(stats.median_recovery[m]) for m in METHODS}))
    lines.append(_review_line(stats))
    lines.append(("stats.users", {"users": stats.users, "blocked": stats.blocked_users}))
    return lines


def _period_lines(stats: Stats, period: Period) -> list[Line]:
    lines: list[Line] = [(f"stats.period_{period.label}", {})]
    numbers = [(method, stats.get(period, method)) for method in METHODS]
    if not any(item.started for _, item in numbers):
        return [*lines, ("stats.no_cases", {})]
    for method, item in numbers:
        lines.append((f"stats.method_{method}",
                      {"started": item.started, "verified": item.verified, "recovered": item.recovered}))
        if item.started:
            lines.append(("stats.outcomes", {status: item.outcomes.get(status, 0) for status in STATUSES}))
    return lines


def _review_line(stats: Stats) -> Line:
    if not stats.pending_reviews:
        return ("stats.reviews_none", {})
    return ("stats.reviews", {"count": stats.pending_reviews, "age": format_duration(stats.oldest_review_age)})


FUNNEL_STAGES = ("Started", "Verified", "Recovered")


def funnel_chart(stats: Stats) -> bytes | None:
    """A PNG with one funnel per method (started → verified → recovered, 30 days); None without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # type: ignore[import-not-found, unused-ignore]
        from matplotlib.figure import Figure  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    figure = Figure(figsize=(7, 2.2 * len(METHODS)), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    figure.suptitle(f"Recovery funnel, last 30 days (to {stats.now.astimezone(UTC):%Y-%m-%d %H:%M} UTC)")
    for axes, method in zip(figure.subplots(len(METHODS), 1, squeeze=False)[:, 0], METHODS, strict=True):
        _draw_funnel(axes, METHOD_NAMES[method], _funnel_counts(stats.get(MONTH, method)))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _funnel_counts(item: MethodStats) -> list[int]:
    return [item.started, item.verified, item.recovered]


def _draw_funnel(axes: Any, title: str, counts: Sequence[int]) -> None:
    """Centred horizontal bars, widest on top, each labelled with its count and share of the started cases."""
    widest = max(max(counts), 1)
    positions = list(range(len(counts)))[::-1]
    lefts = [(widest - count) / 2 for count in counts]
    axes.barh(positions, counts, left=lefts, height=0.7, color=["#4c72b0", "#55a868", "#c44e52"])
    for position, count in zip(positions, counts, strict=True):
        axes.text(widest / 2, position, _funnel_label(count, counts[0]), ha="center", va="center", fontsize=9)
    axes.set_yticks(positions, labels=list(FUNNEL_STAGES))
    axes.set_xlim(0, widest)
    axes.set_xticks([])
    axes.set_title(title if counts[0] else f"{title}: no cases", fontsize=11)
    for side in ("top", "right", "bottom"):
        axes.spines[side].set_visible(False)


def _funnel_label(count: int, started: int) -> str:
    return f"{count} ({round(100 * count / started)}%)" if started else str(count)
