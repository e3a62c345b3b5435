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

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from flows.directory import NO_ACCOUNT
from flows.store.tables import FailedCheck

failed_checks = FailedCheck.__table__  # type: ignore[attr-defined]

HOUR, DAY = timedelta(hours=1), timedelta(days=1)
TOLD = "owner_told"  # a marker row: when the owner was last told of a pause (not a failed check)


@dataclass(frozen=True)
class FailurePolicy:
    per_hour: int = 10
    per_day: int = 50
    tell_owner_every: timedelta = DAY


class FailedChecks:
    """Failed factor checks per account, as seen at `now`, through the event's transaction."""

    def __init__(self, conn: AsyncConnection, now: datetime, policy: FailurePolicy = FailurePolicy()) -> None:
        self._conn = conn
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
        c = failed_checks.c
        told = await self._conn.scalar(select(func.count()).where(
            c.account_id == account_id, c.factor == TOLD, c.at > self._now - self._policy.tell_owner_every))
        if told:
            return False
        await self._insert(account_id, TOLD, user_id, case_id)
        return True

    async def _insert(self, account_id: int | None, factor: str, user_id: int, case_id: str) -> None:
        await self._conn.execute(failed_checks.insert().values(
            account_id=account_id, factor=factor, user_id=user_id, case_id=case_id, at=self._now))

    async def _recent(self, account_id: int) -> tuple[int, int]:
        c = failed_checks.c
        query = select(func.count().filter(c.at > self._now - HOUR), func.count()).where(
            c.account_id == account_id, c.factor != TOLD, c.at > self._now - DAY)
        row = (await self._conn.execute(query)).one()
        return int(row[0] or 0), int(row[1] or 0)
