"""The built-in directory adapter: the desk's own `accounts` table (filled by CSV import), read and changed in the
event's transaction, so a change commits with the decision that causes it.

Emails are stored lower-cased, which is what lets the indexed lookup ignore case. TOTP secrets are stored
encrypted and answers hashed (`flows.directory`); checking either costs the same for an unknown account.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from flows.directory import (
    ENROL_AUTHENTICATOR,
    LOCK_WITHDRAWALS,
    REMOVE_PHONE,
    RESET_TWO_FACTOR,
    SWITCH_TO_PHONE,
    AccountView,
    Change,
    SecretBox,
    normalize_email,
    verify_answer,
)
from flows.otp import check_totp, new_secret, normalize_key
from flows.ports import Accounts
from flows.records import AccountChange, StoredAccount

DECOY_KEY = new_secret()  # checked in place of a missing secret: the same work, never a match


def _view(row: StoredAccount) -> AccountView:
    return AccountView(
        id=row.id, email=row.email, phone=row.phone, has_totp=row.totp_secret_enc is not None,
        security_question=row.security_question, identity_verified=row.identity_verified,
        two_factor=row.two_factor, withdrawals_locked_until=row.withdrawals_locked_until,
    )


def _maybe_view(row: StoredAccount | None) -> AccountView | None:
    return _view(row) if row else None


def _check_answer(answer: str, stored: str | None, secrets: SecretBox) -> bool:
    """`verify_answer` against the stored hash, or against the decoy when there is none (the same scrypt work,
    always False)."""
    matched = verify_answer(answer, stored or secrets.decoy_hash(), secrets.answer_pepper)
    return matched and stored is not None


class TableDirectory:
    """The accounts, through the `Accounts` port of a transaction the caller owns (nothing here commits)."""

    def __init__(self, accounts: Accounts, secrets: SecretBox, now: datetime) -> None:
        self._accounts = accounts
        self._secrets = secrets
        self._now = now

    async def find_by_email(self, email: str) -> AccountView | None:
        return _maybe_view(await self._accounts.by_email(normalize_email(email)))

    async def get(self, account_id: int) -> AccountView | None:
        return _maybe_view(await self._accounts.by_id(account_id))

    async def list_accounts(self) -> list[AccountView]:
        return [_view(row) for row in await self._accounts.all()]

    async def totp_secret(self, account_id: int) -> str | None:
        """The decrypted base32 secret, or None; DecryptError if SECRET_KEY changed since it was stored."""
        row = await self._accounts.by_id(account_id)
        encrypted = row.totp_secret_enc if row else None
        return None if encrypted is None else self._secrets.decrypt(encrypted)

    async def verify_totp(self, account_id: int, code: str) -> bool:
        """Check against the stored secret (a throwaway one when there is none) and remember the step accepted,
        which never moves back, so the same code cannot be used twice."""
        row = await self._accounts.by_id(account_id)
        secret = self._secrets.decrypt(row.totp_secret_enc) if row and row.totp_secret_enc else None
        step = check_totp(secret or DECOY_KEY, code, self._now, row.totp_last_step if row else None)
        if step is None or row is None or secret is None:
            return False
        await self._accounts.advance_totp_step(account_id, step, self._now)
        return True

    async def verify_security_answer(self, account_id: int, answer: str) -> bool:
        """As slow for accounts without an answer as with one. The scrypt work (~100 ms) runs in a thread, so the
        event loop goes on meanwhile."""
        row = await self._accounts.by_id(account_id)
        stored = row.security_answer_hash if row else None
        return await asyncio.to_thread(_check_answer, answer, stored, self._secrets)

    async def withdrawal_lock(self, account_id: int) -> datetime | None:
        row = await self._accounts.by_id(account_id)
        return row.withdrawals_locked_until if row else None

    async def apply(self, account_id: int, change: Change, key: str) -> AccountView | None:
        """In the caller's transaction, so it is applied exactly when the decision commits; `key` is not needed
        (a rolled-back decision takes its change with it)."""
        if change.kind == LOCK_WITHDRAWALS:
            assert change.until is not None
            await self._accounts.extend_withdrawal_lock(account_id, change.until, self._now)
        else:
            await self._accounts.change({account_id: self._columns(change)}, self._now)
        return await self.get(account_id)

    def _columns(self, change: Change) -> AccountChange:
        if change.kind == SWITCH_TO_PHONE:  # the old authenticator secret is discarded, so it proves nothing
            return {"two_factor": "phone", "totp_secret_enc": None, "totp_last_step": None}
        if change.kind == RESET_TWO_FACTOR:  # no second factor until the user enrols again
            return {"two_factor": "none", "totp_secret_enc": None, "totp_last_step": None}
        if change.kind == REMOVE_PHONE:  # the owner lost it; a new one is added in the service afterwards
            return {"phone": None}
        assert change.kind == ENROL_AUTHENTICATOR and change.secret is not None
        encrypted = self._secrets.encrypt(normalize_key(change.secret))
        return {"totp_secret_enc": encrypted, "two_factor": "totp", "totp_last_step": change.accepted_step}
