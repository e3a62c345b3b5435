"""The service's account directory, read and changed inside the transaction of one event.

TOTP secrets are encrypted at rest (the server needs them back to check codes); security answers are hashed like
passwords. Emails are stored lower-cased, which is what lets the indexed lookup ignore case.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from functools import cache

from cryptography.fernet import Fernet, InvalidToken

from flows.keys import derive_key
from flows.otp import normalize_key
from flows.ports import Accounts
from flows.records import AccountChange, StoredAccount

NO_ACCOUNT = 0  # ids start at 1: the statements for an unknown email run with it, the same work, matching nothing

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024
_SALT_BYTES = 16
_HASH_BYTES = 32
_HASH_FORMAT = re.compile(r"(?P<kind>scrypt|scrypt-hmac)\$(?P<n>[0-9]{1,8})\$(?P<r>[1-9][0-9]{0,2})\$(?P<p>[0-9]{1,2})"
                          r"\$(?P<salt>[A-Za-z0-9+/=]+)\$(?P<hash>[A-Za-z0-9+/=]{22,})")
PEPPERED = "scrypt-hmac"


@dataclass(frozen=True)
class AccountView:
    """What the flows may know of an account (never its secret or its answer)."""

    id: int
    email: str
    phone: str | None
    has_totp: bool
    security_question: str | None
    identity_verified: bool
    two_factor: str
    withdrawals_locked_until: datetime | None
    totp_last_step: int | None


class DecryptError(ValueError):
    """A stored secret could not be decrypted: another SECRET_KEY encrypted it, or it is damaged."""


class SecretBox:
    """The directory's keys, derived from SECRET_KEY for these purposes only: authenticated encryption of TOTP
    secrets, and the pepper in front of security-answer hashes (so a stolen database alone cannot be used to
    guess answers offline)."""

    def __init__(self, secret_key: str) -> None:
        self._fernet = Fernet(base64.urlsafe_b64encode(derive_key(secret_key, "totp-at-rest")))
        self.answer_pepper = derive_key(secret_key, "security-answer-pepper")

    def decoy_hash(self) -> str:
        """A hash of the current kind checked in place of a missing answer, so that an unknown account costs the
        same scrypt work as a known one; computed once per key (`warm_up` does it at start-up)."""
        return _decoy_hash(self.answer_pepper)

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode("ascii")

    def decrypt(self, token: str) -> str:
        """The plaintext; DecryptError if this key did not encrypt `token` or it was altered."""
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode()
        except (InvalidToken, UnicodeError) as error:
            raise DecryptError("cannot decrypt: wrong SECRET_KEY or damaged value") from error


def normalize_email(email: str) -> str:
    return email.strip().lower()


def normalize_answer(answer: str) -> str:
    """NFKC, case-folded, whitespace collapsed to single spaces and trimmed."""
    return " ".join(unicodedata.normalize("NFKC", answer).casefold().split())


def _scrypt(secret: bytes, salt: bytes, n: int, r: int, p: int, length: int = _HASH_BYTES) -> bytes:
    return hashlib.scrypt(secret, salt=salt, n=n, r=r, p=p, maxmem=_SCRYPT_MAXMEM, dklen=length)


def _peppered(answer: str, pepper: bytes) -> bytes:
    return hmac.new(pepper, normalize_answer(answer).encode(), hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def hash_answer(answer: str, pepper: bytes) -> str:
    """A salted scrypt hash of the normalised answer keyed with the pepper (HMAC-SHA256 first):
    "scrypt-hmac$n$r$p$salt_b64$hash_b64"."""
    salt = os.urandom(_SALT_BYTES)
    digest = _scrypt(_peppered(answer, pepper), salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return "$".join([PEPPERED, str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P), _b64(salt), _b64(digest)])


def verify_answer(answer: str, stored: str, pepper: bytes) -> bool:
    """Whether `answer` matches a `hash_answer` result, or an older unpeppered "scrypt$…" hash (False for anything
    malformed), in constant time."""
    parsed = _parse_hash(stored)
    if parsed is None:
        return False
    kind, n, r, p, salt, expected = parsed
    secret = _peppered(answer, pepper) if kind == PEPPERED else normalize_answer(answer).encode()
    return hmac.compare_digest(_scrypt(secret, salt, n, r, p, len(expected)), expected)


def is_peppered(stored: str) -> bool:
    return stored.startswith(PEPPERED + "$")


def _parse_hash(stored: str) -> tuple[str, int, int, int, bytes, bytes] | None:
    match = _HASH_FORMAT.fullmatch(stored)
    if match is None:
        return None
    n, r, p = (int(match[name]) for name in ("n", "r", "p"))
    if n < 2 or n & (n - 1) or 128 * r * n > _SCRYPT_MAXMEM // 2 or not 1 <= p <= 16:
        return None
    try:
        salt, digest = base64.b64decode(match["salt"], validate=True), base64.b64decode(match["hash"], validate=True)
    except ValueError:
        return None
    return match["kind"], n, r, p, salt, digest


@cache
def _decoy_hash(pepper: bytes) -> str:
    return hash_answer("", pepper)


def _check_answer(answer: str, stored: str | None, secrets: SecretBox) -> bool:
    """`verify_answer` against the stored hash, or against the decoy when there is none (the same scrypt work,
    always False): what `check_security_answer` runs in a thread."""
    matched = verify_answer(answer, stored or secrets.decoy_hash(), secrets.answer_pepper)
    return matched and stored is not None


def mask_email(email: str) -> str:
    """Hide the local part but its first character: "jane.doe@example.com" → "j•••@example.com"."""
    local, at, domain = email.partition("@")
    return f"{local[:1]}•••{at}{domain}"


def mask_phone(phone: str) -> str:
    """Keep the first and last two digits, never how many lie between: "+15551234534" → "+1•••••34"."""
    plus = "+" if phone.strip().startswith("+") else ""
    digits = re.sub(r"[^0-9]", "", phone)
    return f"{plus}{digits[:1]}•••••{digits[-2:]}" if len(digits) >= 6 else f"{plus}•••••"


def _view(row: StoredAccount) -> AccountView:
    return AccountView(
        id=row.id, email=row.email, phone=row.phone, has_totp=row.totp_secret_enc is not None,
        security_question=row.security_question, identity_verified=row.identity_verified,
        two_factor=row.two_factor, withdrawals_locked_until=row.withdrawals_locked_until,
        totp_last_step=row.totp_last_step,
    )


class Directory:
    """The accounts, through the `Accounts` port of a transaction the caller owns (nothing here commits)."""

    def __init__(self, accounts: Accounts, secrets: SecretBox, now: datetime) -> None:
        self._accounts = accounts
        self._secrets = secrets
        self._now = now

    async def find_by_email(self, email: str) -> AccountView | None:
        """The account with this email, ignoring case and surrounding spaces."""
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

    async def record_totp_step(self, account_id: int, step: int) -> None:
        """Remember the last accepted time step; it never moves backwards."""
        await self._accounts.advance_totp_step(account_id, step, self._now)

    async def check_security_answer(self, account_id: int, answer: str) -> bool:
        """Whether `answer` matches the stored one; as slow for accounts without an answer as with one. The scrypt
        work (~100 ms) runs in a thread, so the event loop goes on meanwhile."""
        row = await self._accounts.by_id(account_id)
        stored = row.security_answer_hash if row else None
        return await asyncio.to_thread(_check_answer, answer, stored, self._secrets)

    async def switch_to_phone(self, account_id: int) -> None:
        """Make the phone the second factor; the old authenticator secret is discarded, so it proves nothing."""
        await self._change(account_id, {"two_factor": "phone", "totp_secret_enc": None, "totp_last_step": None})

    async def reset_two_factor(self, account_id: int) -> None:
        """No second factor ("none") until the user enrols again."""
        await self._change(account_id, {"two_factor": "none", "totp_secret_enc": None, "totp_last_step": None})

    async def remove_phone(self, account_id: int) -> None:
        """Forget the phone number on file (the owner lost it); a new one is added in the service afterwards."""
        await self._change(account_id, {"phone": None})

    async def set_totp_secret(self, account_id: int, secret_b32: str) -> None:
        """Enrol a new authenticator secret (normalised; ValueError if it is not a usable base32 key)."""
        encrypted = self._secrets.encrypt(normalize_key(secret_b32))
        await self._change(account_id, {"totp_secret_enc": encrypted, "two_factor": "totp", "totp_last_step": None})

    async def lock_withdrawals(self, account_id: int, until: datetime) -> datetime | None:
        """Lock withdrawals until `until` or any later lock already set; returns the lock now in force."""
        return await self._accounts.extend_withdrawal_lock(account_id, until, self._now)

    async def _change(self, account_id: int, values: AccountChange) -> None:
        await self._accounts.change({account_id: values}, self._now)


def _maybe_view(row: StoredAccount | None) -> AccountView | None:
    return _view(row) if row else None
