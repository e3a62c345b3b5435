"""Where a broadcast stands, and the texts that show it: the admin's status message and the final report."""

from __future__ import annotations

from dataclasses import dataclass

from flows.durations import format_duration
from flows.records import BLOCKED, FAILED, PENDING, SENDING, SENT, UNCERTAIN, BroadcastView
from flows.texts import Text, translate

BAR_CELLS = 10


@dataclass(frozen=True)
class Progress:
    """Where a broadcast stands; `rate` is messages a second so far in the current run."""

    broadcast_id: int
    total: int
    sent: int = 0
    failed: int = 0
    blocked: int = 0
    uncertain: int = 0
    rate: float = 0.0

    @property
    def done(self) -> int:
        return self.sent + self.failed + self.blocked + self.uncertain

    @property
    def percent(self) -> int:
        """Whole percent done, rounded down (100 only when every recipient is done)."""
        return 100 if self.total <= 0 else min(100, self.done * 100 // self.total)

    @property
    def eta(self) -> float | None:
        """Seconds left at the current rate, or None while the rate is unknown."""
        remaining = max(0, self.total - self.done)
        if remaining == 0:
            return 0.0
        return remaining / self.rate if self.rate > 0 else None


def progress_bar(progress: Progress) -> str:
    """A 10-cell bar, e.g. "▓▓▓▓░░░░░░" at 40 %."""
    filled = BAR_CELLS if progress.total <= 0 else min(BAR_CELLS, progress.done * BAR_CELLS // progress.total)
    return "▓" * filled + "░" * (BAR_CELLS - filled)


def duration_text(seconds: float | None, language: str | None = None) -> str:
    """A short human duration in the reader's language: "45s", "3m", "1h 5m" (see flows.durations)."""
    return format_duration(seconds, language)


def progress_text(p: Progress, language: str | None = None) -> str:
    """The text of the status message, in the language of the admin who started the broadcast."""
    return translate(Text("broadcast.progress", {
        "id": p.broadcast_id, "bar": progress_bar(p), "percent": p.percent, "sent": p.sent, "failed": p.failed,
        "blocked": p.blocked, "uncertain": p.uncertain, "rate": f"{p.rate:.1f}", "eta": duration_text(p.eta, language),
    }), language)


def report_text(view: BroadcastView, counts: dict[str, int], took: float, language: str | None = None) -> str:
    """The final report: how many of each outcome, and how long it took."""
    return translate(Text("broadcast.report", {
        "id": view.id, "outcome": Text(f"broadcast.outcome_{view.status}"), "total": view.total,
        "sent": counts[SENT], "blocked": counts[BLOCKED], "failed": counts[FAILED], "uncertain": counts[UNCERTAIN],
        "unsent": counts[PENDING] + counts[SENDING], "took": duration_text(took, language),
    }), language)


def busy_text(refused: int, running: Progress | None, language: str | None = None) -> str:
    """Why Send did not start a broadcast: another one is running (with how far it is, when known)."""
    if running is None:
        return translate(Text("broadcast.busy_unknown", {"id": refused}), language)
    return translate(Text("broadcast.busy", {
        "id": refused, "running": running.broadcast_id, "percent": running.percent, "done": running.done,
        "total": running.total,
    }), language)
