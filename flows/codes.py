"""One-time verification codes sent to the phone or email on file: issued, rate-limited, checked, used once.

A `Codes` works inside the caller's transaction (one per event) and never commits. Codes are stored only as
HMAC-SHA256 under a server key (`derive_key(SECRET_KEY, "codes")`); the plaintext leaves `issue` only so that
the caller can deliver it, and neither the code nor its hash is ever logged.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from flows import metrics
from flows.directory import NO_ACCOUNT
from flows.otp import normalize_code
from flows.ports import CodeRecords
from flows.records import NewCode, StoredCode

CODE_DIGITS = 6
HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class CodePolicy:
    """How codes are limited. Sends are counted per account and per (account, Telegram user, factor), so that one
    stranger cannot spend the whole account's hourly quota and starve the owner."""

    ttl: timedelta = timedelta(minutes=30)
    max_wrong: int = 5
    resend_cooldown: timedelta = timedelta(seconds=60)
    per_account_per_hour: int = 10
    per_requester_per_hour: int = 3

    def __post_init__(self) -> None:
        if min(self.max_wrong, self.per_account_per_hour, self.per_requester_per_hour) < 1:
            raise ValueError("max_wrong and the hourly limits must be at least 1")


@dataclass(frozen=True)
class Issued:
    """A new code. A `decoy` is stored and checked like a real one but must never be delivered."""

    code: str
    expires_at: datetime
    decoy: bool = False


@dataclass(frozen=True)
class Refused:
    """No code was issued; another may be asked for at `retry_at`."""

    reason: Literal["cooldown"]
    retry_at: datetime


@dataclass(frozen=True)
class CheckResult:
    """`failed`: this very attempt was compared and was wrong (it counts against the account's limit)."""

    status: Literal["ok", "wrong", "expired", "locked", "missing"]
    tries_left: int
    failed: bool = False


class Codes:
    """Verification codes as seen at `now`, read and written through the event's transaction."""

    def __init__(self, records: CodeRecords, key: bytes, now: datetime, policy: CodePolicy) -> None:
        if now.tzinfo is None:
            raise ValueError("naive datetime: use timezone-aware UTC")
        self._records = records
        self._key = key
        self._now = now
        self.policy = policy

    async def issue(self, account_id: int | None, case_id: str, factor: str, user_id: int) -> Issued | Refused:
        """A new code for this case and factor, voiding the previous one.

        With no account (`None`), or once the account's or this requester's hourly limit is reached, the code is a
        decoy: the same statements run and the same reply follows, but nothing may be delivered.
        """
        cooldown = await self._cooldown(case_id, factor)
        over_limit = await self._over_hourly_limits(account_id or NO_ACCOUNT, user_id, factor)
        if cooldown is not None:
            return cooldown
        await self._records.void_live(case_id, factor, self._now)
        code = str(secrets.randbelow(10**CODE_DIGITS)).zfill(CODE_DIGITS)
        decoy = account_id is None or over_limit
        if not decoy:
            metrics.code("sent", factor)
        return await self._store(account_id, case_id, factor, user_id, code, decoy)

    async def check(self, case_id: str, factor: str, entered: str, paused: bool = False) -> CheckResult:
        """Check `entered` against the newest live code; a right code is used up, a wrong one costs a try.

        A decoy never matches, and neither does any code while the account's recovery is `paused`; both are
        compared all the same, so the work is the same.
        """
        row = await self._records.newest_live(case_id, factor)
        if row is None:
            return CheckResult("missing", 0)
        if self._now >= row.expires_at:
            return CheckResult("expired", 0)
        if row.wrong_tries >= self.policy.max_wrong:
            return CheckResult("locked", 0)
        attempt = self._hash(case_id, factor, normalize_code(entered))
        if hmac.compare_digest(attempt, row.code_hash) and not row.decoy and not paused:
            result = await self._use(row)
        else:
            result = await self._count_wrong(row)
        if result.status == "ok" or result.failed:
            metrics.code("verified" if result.status == "ok" else "failed", factor)
        return result

    async def expiry(self, case_id: str, factor: str) -> datetime | None:
        """When the code `check` would still accept expires; None if there is no such code."""
        row = await self._records.newest_live(case_id, factor)
        if row is None or self._now >= row.expires_at or row.wrong_tries >= self.policy.max_wrong:
            return None
        return row.expires_at

    async def _store(self, account_id: int | None, case_id: str, factor: str, user_id: int, code: str,
                     decoy: bool) -> Issued:
        expires_at = self._now + self.policy.ttl
        await self._records.add(NewCode(
            account_id=account_id, user_id=user_id, decoy=decoy, case_id=case_id, factor=factor,
            code_hash=self._hash(case_id, factor, code), created_at=self._now, expires_at=expires_at,
        ))
        return Issued(code, expires_at, decoy)

    def _hash(self, case_id: str, factor: str, code: str) -> str:
        return hmac.new(self._key, f"{case_id}:{factor}:{code}".encode(), hashlib.sha256).hexdigest()

    async def _use(self, row: StoredCode) -> CheckResult:
        if not await self._records.use(row.id, self._now):
            return CheckResult("missing", 0)
        return CheckResult("ok", self.policy.max_wrong - row.wrong_tries)

    async def _count_wrong(self, row: StoredCode) -> CheckResult:
        await self._records.count_wrong(row.id)
        tries_left = self.policy.max_wrong - row.wrong_tries - 1
        return CheckResult("wrong", tries_left, True) if tries_left > 0 else CheckResult("locked", 0, True)

    async def _cooldown(self, case_id: str, factor: str) -> Refused | None:
        last = await self._records.last_created(case_id, factor)
        if last is None or self._now - last >= self.policy.resend_cooldown:
            return None
        return Refused("cooldown", last + self.policy.resend_cooldown)

    async def _over_hourly_limits(self, account_id: int, user_id: int, factor: str) -> bool:
        """Whether real codes sent to this account in the last hour reached the account's limit, or this
        requester's for this factor (decoys do not count: they reach nobody)."""
        since = self._now - HOUR
        sent = await self._records.count_real(account_id, since)
        sent_to_requester = await self._records.count_real_to(account_id, user_id, factor, since)
        return sent >= self.policy.per_account_per_hour or sent_to_requester >= self.policy.per_requester_per_hour
