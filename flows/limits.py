"""The per-account limit on failed factor checks, across every case and Telegram user.

Each failed check of an account's factor — a code, an authenticator code, the security answer — is a row. Once
an account has `limit` failures within a rolling hour, its recovery pauses until the oldest of them is an hour
old: every check then fails (the same reply as for an unknown email), no real code is sent, and the failures
made during the pause are not counted, so an attacker cannot stretch the pause for ever. The owner is told once
per pause, by email. Works inside the caller's transaction and never commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from flows.store.tables import FailedCheck

failed_checks = FailedCheck.__table__  # type: ignore[attr-defined]

WINDOW = timedelta(hours=1)
NO_ACCOUNT = 0  # ids start at 1: an unknown account runs the same query and matches nothing


@dataclass(frozen=True)
class FailurePolicy:
    limit: int = 10
    window: timedelta = WINDOW


class FailedChecks:
    """Failed factor checks per account, as seen at `now`, through the event's transaction."""

    def __init__(self, conn: AsyncConnection, now: datetime, policy: FailurePolicy = FailurePolicy()) -> None:
        self._conn = conn
        self._now = now
        self._policy = policy

    async def paused(self, account_id: int | None) -> bool:
        """Whether the account's recovery is paused (always False for no account, after the same query)."""
        return await self._recent(account_id or NO_ACCOUNT) >= self._policy.limit

    async def record(self, account_id: int, factor: str, user_id: int, case_id: str) -> bool:
        """Count one failed check; True when it is the one that pauses the account (tell the owner then)."""
        if await self.paused(account_id):
            return False
        await self._conn.execute(failed_checks.insert().values(
            account_id=account_id, factor=factor, user_id=user_id, case_id=case_id, at=self._now))
        return await self._recent(account_id) >= self._policy.limit

    async def _recent(self, account_id: int) -> int:
        c = failed_checks.c
        query = select(func.count()).where(c.account_id == account_id, c.at > self._now - self._policy.window)
        return int(await self._conn.scalar(query) or 0)
