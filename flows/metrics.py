"""Prometheus metrics of the desk, all in one place and all named `recovery_bot_…`.

Labels are few and fixed (an event's kind, a factor, a flow, a case status, a lane, an outcome): never a user id,
chat id, email, phone number or code. The hot path only increments counters (through children resolved once);
what needs the database — the review queue, the running broadcast — is read when Prometheus scrapes
(`refresh`), in one short read with a timeout.

Counts that happen inside an event's transaction (codes sent, verified, failed) are staged on the batch's
`Tally` and added only once the batch commits, so a batch that rolls back, or is retried one event at a time,
counts each code once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from contextvars import ContextVar
from datetime import datetime
from typing import Any, Protocol

from prometheus_client import Counter, Gauge, Histogram

from flows.events import ButtonPressed, ChatReturned, CommandReceived, Event, TimerFired
from flows.ports import Store
from flows.records import ACTIVE, RECOVERY_METHODS

log = logging.getLogger(__name__)

SCRAPE_READ_TIMEOUT = 2.0
"""Seconds a scrape waits for its read of the review queue and the running broadcast (the last values stay)."""

EVENT_KINDS = ("message", "button", "command", "timer", "returned")
FACTORS = ("phone", "email")
CODE_OUTCOMES = ("sent", "verified", "failed")
DELIVERY_OUTCOMES = ("sent", "failed", "blocked", "skipped")

EVENTS = Counter("recovery_bot_events_handled", "Events committed by the writer, by kind", ["kind"])
BATCH_SECONDS = Histogram(
    "recovery_bot_batch_commit_seconds", "Time to decide and commit one batch of events (one transaction)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
CODES = Counter("recovery_bot_codes", "Verification codes sent to a real account (decoys are not counted), "
                "accepted, and wrong tries, by factor", ["outcome", "factor"])
CASES_OPENED = Counter("recovery_bot_cases_opened", "Cases opened in a flow (the menu, `start`), or moved into one "
                       "from another (a recovery method chosen in the menu), by flow", ["method"])
CASES_CLOSED = Counter("recovery_bot_cases_closed", "Cases closed, by flow and final status", ["method", "outcome"])
DELIVERIES = Counter("recovery_bot_deliveries", "Outbox entries whose delivery was recorded, by lane and outcome",
                     ["lane", "outcome"])
BACKLOG = Gauge("recovery_bot_delivery_backlog", "Replies committed to the outbox and not yet recorded as "
                "delivered, by lane", ["lane"])
REVIEW_QUEUE = Gauge("recovery_bot_review_queue_cases", "Cases waiting for a staff review")
REVIEW_OLDEST = Gauge("recovery_bot_review_oldest_age_seconds",
                      "How long the case waiting longest for review has waited (0 when none waits)")
BROADCAST_SENT = Gauge("recovery_bot_broadcast_sent", "Recipients the running broadcast has reached (0 when none "
                       "runs)")
BROADCAST_TOTAL = Gauge("recovery_bot_broadcast_recipients", "Recipients of the running broadcast (0 when none "
                        "runs)")

_EVENT_CHILDREN = {kind: EVENTS.labels(kind) for kind in EVENT_KINDS}
_CODE_CHILDREN = {(o, f): CODES.labels(o, f) for o in CODE_OUTCOMES for f in FACTORS}
for _flow in ("start", *RECOVERY_METHODS):
    CASES_OPENED.labels(_flow)
for _outcome in DELIVERY_OUTCOMES:  # every outcome shows from the first scrape, zero included
    for _lane in ("chat", "out-of-band"):
        DELIVERIES.labels(_lane, _outcome)


def event_kind(event: Event) -> str:
    if isinstance(event, ButtonPressed):
        return "button"
    if isinstance(event, CommandReceived):
        return "command"
    if isinstance(event, TimerFired):
        return "timer"
    if isinstance(event, ChatReturned):
        return "returned"
    return "message"


class Tally:
    """What one batch counted before it committed, and when it began."""

    __slots__ = ("staged", "started")

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.staged: list[Any] = []  # counters' children, each to increment by one on commit


_current: ContextVar[Tally | None] = ContextVar("recovery_bot_tally", default=None)


def batch() -> Tally:
    """Begin counting a batch: code counts made in this task until `committed` wait on it."""
    tally = Tally()
    _current.set(tally)
    return tally


def code(outcome: str, factor: str) -> None:
    """A code was sent, verified or failed: counted when the batch commits (at once outside a batch)."""
    if factor not in FACTORS:
        return
    _stage(_CODE_CHILDREN[outcome, factor])


def case_entered(flow: str) -> None:
    """A case moved into another flow (from the menu into a recovery method): counted when the batch commits."""
    _stage(CASES_OPENED.labels(flow))


def _stage(child: Any) -> None:
    tally = _current.get()
    if tally is None:
        child.inc()
    else:
        tally.staged.append(child)


class _Audited(Protocol):
    @property
    def action(self) -> str: ...
    @property
    def detail(self) -> Mapping[str, Any]: ...


class _Decided(Protocol):
    @property
    def audit(self) -> Sequence[_Audited]: ...


def committed(tally: Tally, events: Iterable[Event], decisions: Iterable[_Decided]) -> None:
    """The batch committed: count its events, its staged code counts, the cases it opened and closed, and how
    long it took."""
    _current.set(None)
    BATCH_SECONDS.observe(time.perf_counter() - tally.started)
    for event in events:
        _EVENT_CHILDREN[event_kind(event)].inc()
    for child in tally.staged:
        child.inc()
    for decision in decisions:
        for line in decision.audit:
            if line.action == "case.opened":
                CASES_OPENED.labels(str(line.detail.get("flow", "?"))).inc()
            elif line.action == "case.closed" and line.detail.get("status") not in ACTIVE:  # not "to review"
                CASES_CLOSED.labels(str(line.detail.get("flow", "?")), str(line.detail.get("status", "?"))).inc()


class _Done(Protocol):
    @property
    def outcome(self) -> str: ...


def delivered(lane: str, done: Iterable[_Done]) -> None:
    """A lane recorded how these deliveries went."""
    for delivery in done:
        DELIVERIES.labels(lane, delivery.outcome).inc()


class _Lane(Protocol):
    name: str
    _unsettled: int


async def refresh(store: Store, lanes: Iterable[_Lane], now: datetime) -> bool:
    """Bring the scrape-time gauges up to date: the lanes' backlogs (in memory), then the review queue and the
    running broadcast (one short read). False if the read failed or timed out (those gauges keep their values)."""
    for lane in lanes:
        BACKLOG.labels(lane.name).set(lane._unsettled)
    try:
        await asyncio.wait_for(_read_desk(store, now), SCRAPE_READ_TIMEOUT)
    except Exception as error:
        log.debug("metrics: the review queue and broadcast could not be read (%s)", error)
        return False
    return True


async def _read_desk(store: Store, now: datetime) -> None:
    async with store.reading() as tx:
        totals = await tx.statistics.totals()
        running = await tx.broadcasts.running()
        counts = await tx.broadcasts.counts(running[0]) if running else {}
    REVIEW_QUEUE.set(totals.pending_reviews)
    oldest = totals.oldest_review
    REVIEW_OLDEST.set(max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0)
    BROADCAST_SENT.set(counts.get("sent", 0))
    BROADCAST_TOTAL.set(sum(counts.values()))
