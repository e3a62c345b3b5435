"""The per-account limit on failed factor checks, across every case and Telegram user.

Each failed check of an account's factor — a code, an authenticator code, the security answer — is a row. Once
an account has 10 failures within a rolling hour, or 50 within a rolling day, its recovery pauses until the
window has room again: every check then fails (the same reply as for an unknown email), no real code is sent,
and checks made during the pause are not counted. Someone who keeps failing keeps the account paused (it fails
safe: nobody gets in); the owner is told by email when a pause begins, at most once a day. A failure for an email
that is no account runs the same statements and counts for nobody. Works inside the caller's transaction and
never commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from flows.directory import NO_ACCOUNT
from flows.ports import FailureRecords

HOUR, DAY = timedelta(hours=1), timedelta(days=1)
TOLD = "owner_told"  # a marker row: when the owner was last told of a pause (not a failed check)


@dataclass(frozen=True)
class FailurePolicy:
    per_hour: int = 10
    per_day: int = 50
    tell_owner_every: timedelta = DAY


class FailedChecks:
    """Failed factor checks per account, as seen at `now`, through the event's transaction."""

    def __init__(self, records: FailureRecords, now: datetime, policy: FailurePolicy = FailurePolicy()) -> None:
        self._records = records
        self._now = now
        self._policy = policy

    async def paused(self, account_id: int | None) -> bool:
        """Whether the account's recovery is paused (always False for no account, after the same query)."""
        last_hour, last_day = await self._recent(account_id or NO_ACCOUNT)
        return last_hour >= self._policy.per_hour or last_day >= self._policy.per_day

    async def record(self, account_id: int | None, factor: str, user_id: int, case_id: str) -> bool:
        """Count one failed check; True when it pauses the account and the owner was not told of a pause within a
        day (tell them then)."""
        if await self.paused(account_id):
            return False
        await self._insert(account_id, factor, user_id, case_id)
        now_paused = await self.paused(account_id)  # run for no account too: the same statements
        if account_id is None or not now_paused:
            return False
        if await self._records.count_of(account_id, TOLD, self._now - self._policy.tell_owner_every):
            return False
        await self._insert(account_id, TOLD, user_id, case_id)
        return True

    async def _insert(self, account_id: int | None, factor: str, user_id: int, case_id: str) -> None:
        await self._records.add(account_id, factor, user_id, case_id, self._now)

    async def _recent(self, account_id: int) -> tuple[int, int]:
        last_hour, last_day = await self._records.count_except(account_id, TOLD, (self._now - HOUR, self._now - DAY))
        return last_hour, last_day
