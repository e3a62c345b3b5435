"""Recovery statistics for the desk's staff: how many recoveries start, get verified and succeed, per method.

`collect` reads the numbers through the `Statistics` port, which counts where the rows are (in SQL, three
statements with the JSON flags tested in SQL), so no case data — and so no email, phone number or answer — ever
reaches this module. `stats_lines` turns them into catalog keys and parameters for the texts module;
`funnel_chart` draws them as a PNG when matplotlib (the `charts` extra) is installed.

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

from flows.durations import format_duration
from flows.ports import Statistics
from flows.records import RECOVERED, RECOVERY_METHODS, CaseTally

STATUSES = ("open", "review", "completed", "approved", "rejected", "cancelled", "abandoned", "failed", "replaced")
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


async def collect(source: Statistics, now: datetime) -> Stats:
    """Read the statistics as of `now` (timezone-aware) from the store's `statistics` port."""
    if now.tzinfo is None:
        raise ValueError("naive datetime: use timezone-aware UTC")
    tallies = await source.tally({p.label: p.since(now) for p in PERIODS}, now)
    durations = await source.recovery_times(MONTH.since(now), now)
    totals = await source.totals()
    return Stats(
        now=now,
        periods=PERIODS,
        by_period={p.label: {m: _method_stats(tallies, p.label, m) for m in RECOVERY_METHODS} for p in PERIODS},
        median_recovery={m: _median(durations.get(m, [])) for m in RECOVERY_METHODS},
        pending_reviews=totals.pending_reviews,
        oldest_review_age=None if totals.oldest_review is None else now - totals.oldest_review,
        users=totals.users,
        blocked_users=totals.blocked_users,
    )


def _method_stats(tallies: Sequence[CaseTally], label: str, method: str) -> MethodStats:
    outcomes = dict.fromkeys(STATUSES, 0)
    verified = 0
    for tally in tallies:
        if tally.flow == method:
            outcomes[tally.status] = outcomes.get(tally.status, 0) + tally.started.get(label, 0)
            verified += tally.verified.get(label, 0)
    recovered = sum(outcomes[status] for status in RECOVERED)
    return MethodStats(sum(outcomes.values()), verified, recovered, outcomes)


def _median(durations: Sequence[timedelta]) -> timedelta | None:
    if not durations:
        return None
    return timedelta(seconds=statistics.median(d.total_seconds() for d in durations))




Line = tuple[str, dict[str, object]]

CATALOG_KEYS = frozenset({
    "stats.title", "stats.no_cases", "stats.outcomes", "stats.median", "stats.reviews", "stats.reviews_none",
    "stats.users", *(f"stats.period_{period.label}" for period in PERIODS),
    *(f"stats.method_{method}" for method in RECOVERY_METHODS),
})
"""Every catalog key `stats_lines` can use."""


def stats_lines(stats: Stats) -> list[Line]:
    """The report as (catalog key, parameters) pairs, one per line of the message, in order."""
    lines: list[Line] = [("stats.title", {"now": stats.now.astimezone(UTC).strftime("%Y-%m-%d %H:%M")})]
    for period in stats.periods:
        lines.extend(_period_lines(stats, period))
    lines.append(("stats.median", {m: format_duration(stats.median_recovery[m]) for m in RECOVERY_METHODS}))
    lines.append(_review_line(stats))
    lines.append(("stats.users", {"users": stats.users, "blocked": stats.blocked_users}))
    return lines


def _period_lines(stats: Stats, period: Period) -> list[Line]:
    lines: list[Line] = [(f"stats.period_{period.label}", {})]
    numbers = [(method, stats.get(period, method)) for method in RECOVERY_METHODS]
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
    figure = Figure(figsize=(7, 2.2 * len(RECOVERY_METHODS)), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    figure.suptitle(f"Recovery funnel, last 30 days (to {stats.now.astimezone(UTC):%Y-%m-%d %H:%M} UTC)")
    rows = figure.subplots(len(RECOVERY_METHODS), 1, squeeze=False)[:, 0]
    for axes, method in zip(rows, RECOVERY_METHODS, strict=True):
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
