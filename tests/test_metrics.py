"""The metric hooks: what is counted, when (codes only once their batch commits), and what /healthz makes of the
updates coming in."""

from __future__ import annotations

from datetime import datetime

import pytest
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.frontends.monitoring import LONG_POLL, POLL_FAILURE_LIMIT, UpdateFeed
from flows import metrics
from flows.clock import FakeClock
from flows.codes import Codes
from flows.events import ButtonPressed, ChatReturned, CommandReceived, Event, Sender, TextReceived, TimerFired
from flows.records import AuditEntry, Decision
from flows.store.codes import SqlCodes
from tests.test_codes import CASE, KEY, POLICY, account_id, issued

__all__ = ["account_id"]  # the fixture, used by name
SENDER = Sender(7, 7)


def count(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def codes(outcome: str, factor: str = "phone") -> float:
    return count("recovery_bot_codes_total", outcome=outcome, factor=factor)


async def check(db: AsyncEngine, now: datetime, entered: str) -> str:
    async with db.begin() as conn:
        return (await Codes(SqlCodes(conn), KEY, now, POLICY).check(CASE, "phone", entered)).status


async def test_a_code_to_a_real_account_counts_as_sent_and_a_decoy_does_not(db: AsyncEngine, clock: FakeClock,
                                                                           account_id: int) -> None:
    before = codes("sent")
    await issued(db, clock.now(), account_id)
    assert codes("sent") == before + 1
    await issued(db, clock.now(), None, case_id="case-of-a-stranger")
    assert codes("sent") == before + 1


async def test_a_wrong_code_counts_as_failed_and_the_right_one_as_verified(db: AsyncEngine, clock: FakeClock,
                                                                          account_id: int) -> None:
    failed, verified = codes("failed"), codes("verified")
    code = (await issued(db, clock.now(), account_id)).code
    assert await check(db, clock.now(), "000000" if code != "000000" else "111111") == "wrong"
    assert (codes("failed"), codes("verified")) == (failed + 1, verified)
    assert await check(db, clock.now(), code) == "ok"
    assert (codes("failed"), codes("verified")) == (failed + 1, verified + 1)
    assert await check(db, clock.now(), code) == "missing"  # used up: no attempt was compared
    assert (codes("failed"), codes("verified")) == (failed + 1, verified + 1)


async def test_codes_of_a_batch_count_only_once_it_commits(db: AsyncEngine, clock: FakeClock,
                                                           account_id: int) -> None:
    before = codes("sent")
    metrics.batch()  # this batch rolls back: the writer never calls `committed` for it
    await issued(db, clock.now(), account_id)
    assert codes("sent") == before
    retry = metrics.batch()  # the event again, alone in its own transaction
    clock.advance(seconds=POLICY.resend_cooldown.total_seconds())
    await issued(db, clock.now(), account_id)
    assert codes("sent") == before
    metrics.committed(retry, [], [])
    assert codes("sent") == before + 1


def test_a_committed_batch_counts_its_events_by_kind_and_the_cases_it_opened_and_closed() -> None:
    events: list[Event] = [
        TextReceived("t", SENDER, "hello"), CommandReceived("c", SENDER, "start"), ButtonPressed("b", SENDER, "x"),
        TimerFired("f", SENDER, 1, "case", "nudge"), ChatReturned("r", SENDER), TextReceived("t2", SENDER, "hi"),
    ]
    decision = Decision(audit=[
        AuditEntry("user:7", "case.opened", "case:a", {"flow": "start"}),
        AuditEntry("user:7", "case.closed", "case:b", {"flow": "phone", "status": "cancelled"}),
        AuditEntry("user:7", "case.closed", "case:c", {"flow": "backup", "status": "review"}),  # to staff, open
    ])
    kinds = ("message", "command", "button", "timer", "returned")
    before = {kind: count("recovery_bot_events_handled_total", kind=kind) for kind in kinds}
    opened = count("recovery_bot_cases_opened_total", method="start")
    closed = count("recovery_bot_cases_closed_total", method="phone", outcome="cancelled")
    batches = count("recovery_bot_batch_commit_seconds_count")

    metrics.committed(metrics.batch(), events, [decision])

    moved = {kind: count("recovery_bot_events_handled_total", kind=kind) - before[kind] for kind in kinds}
    assert moved == {"message": 2, "command": 1, "button": 1, "timer": 1, "returned": 1}
    assert count("recovery_bot_cases_opened_total", method="start") == opened + 1
    assert count("recovery_bot_cases_closed_total", method="phone", outcome="cancelled") == closed + 1
    assert count("recovery_bot_cases_closed_total", method="backup", outcome="review") == 0
    assert count("recovery_bot_batch_commit_seconds_count") == batches + 1


def test_deliveries_count_by_lane_and_outcome() -> None:
    class Done:
        def __init__(self, outcome: str) -> None:
            self.outcome = outcome

    sent = count("recovery_bot_deliveries_total", lane="chat", outcome="sent")
    blocked = count("recovery_bot_deliveries_total", lane="chat", outcome="blocked")
    metrics.delivered("chat", [Done("sent"), Done("blocked"), Done("sent")])
    assert count("recovery_bot_deliveries_total", lane="chat", outcome="sent") == sent + 2
    assert count("recovery_bot_deliveries_total", lane="chat", outcome="blocked") == blocked + 1


class Ticking:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("failing", "healthy"), [(POLL_FAILURE_LIMIT - 1, True), (POLL_FAILURE_LIMIT + 1, False)])
def test_polling_is_unhealthy_once_get_updates_has_failed_past_the_limit(failing: float, healthy: bool) -> None:
    clock = Ticking()
    feed = UpdateFeed("polling", clock)
    feed.ok()
    clock.now += 5
    feed.failed()
    clock.now += failing
    feed.failed()  # still failing: the outage counts from its first failure
    state = feed.state()
    assert state["ok"] is healthy and state["failing_for_seconds"] == pytest.approx(failing)
    feed.ok()
    assert feed.state()["ok"] and feed.state()["failing_for_seconds"] is None


def test_polling_that_never_answers_is_unhealthy_and_a_quiet_webhook_is_not() -> None:
    clock = Ticking()
    polling, webhook = UpdateFeed("polling", clock), UpdateFeed("webhook", clock)
    clock.now += POLL_FAILURE_LIMIT + LONG_POLL - 1
    assert polling.state()["ok"]
    clock.now += 2
    assert not polling.state()["ok"]
    assert webhook.state() == {"mode": "webhook", "ok": True, "last_update_seconds_ago": None}
    webhook.ok()
    clock.now += 3600
    assert webhook.state()["ok"] and webhook.state()["last_update_seconds_ago"] == pytest.approx(3600)


def test_no_label_names_a_person() -> None:
    for family in REGISTRY.collect():
        if family.name.startswith("recovery_bot_"):
            for sample in family.samples:
                assert set(sample.labels) <= {"kind", "outcome", "factor", "method", "lane", "le"}, sample

