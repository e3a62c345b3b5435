"""The service's account directory as the flows see it: a port shaped by what a service can safely expose.

The flows look an account up by email, ask whether a TOTP code or a security answer is right, read the
withdrawal lock, and apply a change; they never see a secret or an answer. Two adapters implement the port:
`flows.table_directory` (the desk's own `accounts` table, filled by CSV import) and `flows.http_directory` (the
service's own account system over HTTP, `docs/directory-api.yaml`).

For the table adapter, TOTP secrets are encrypted at rest (the server needs them back to check codes) and security
answers are hashed like passwords; the helpers for both live here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Protocol

from cryptography.fernet import Fernet, InvalidToken

from flows.keys import derive_key

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


class DirectoryUnavailable(Exception):
    """The directory could not answer now (timeout, refused connection, 5xx): try again later. Raised alike for
    known and unknown accounts."""


class ChangeRefused(Exception):
    """The directory will not apply a change (a permanent answer: retrying the same change cannot succeed)."""


RESET_TWO_FACTOR = "reset_two_factor"
SWITCH_TO_PHONE = "switch_to_phone"
REMOVE_PHONE = "remove_phone"
ENROL_AUTHENTICATOR = "enrol_authenticator"
LOCK_WITHDRAWALS = "lock_withdrawals"
CHANGE_KINDS = (RESET_TWO_FACTOR, SWITCH_TO_PHONE, REMOVE_PHONE, ENROL_AUTHENTICATOR, LOCK_WITHDRAWALS)


@dataclass(frozen=True)
class Change:
    """One change the desk asks of an account. `secret` (base32) goes with ENROL_AUTHENTICATOR, `until` with
    LOCK_WITHDRAWALS; `accepted_step` is the TOTP step the user proved the new secret with, so the table adapter
    refuses that code again (a service keeps its own replay record)."""

    kind: str
    secret: str | None = None
    until: datetime | None = None
    accepted_step: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in CHANGE_KINDS:
            raise ValueError(f"unknown change {self.kind!r}")
        if (self.kind == ENROL_AUTHENTICATOR) != (self.secret is not None):
            raise ValueError("a secret goes with enrol_authenticator and only with it")
        if (self.kind == LOCK_WITHDRAWALS) != (self.until is not None):
            raise ValueError("an until goes with lock_withdrawals and only with it")

    def __repr__(self) -> str:  # never show the secret, wherever a change is logged or compared
        return f"Change({self.kind!r}, until={self.until!r})"


class AccountDirectory(Protocol):
    """What the flows may ask of the service's accounts, inside the transaction of one event. An id the
    directory does not know (`NO_ACCOUNT` for an unknown email) answers like a known account would, after the
    same kind of work: None, False, or nothing changed. Any call may raise `DirectoryUnavailable`."""

    async def find_by_email(self, email: str) -> AccountView | None:
        """The account with this email, ignoring case and surrounding spaces."""
        ...

    async def get(self, account_id: int) -> AccountView | None: ...

    async def verify_totp(self, account_id: int, code: str) -> bool:
        """Whether `code` is the account's current authenticator code; a code accepted once is refused after."""
        ...

    async def verify_security_answer(self, account_id: int, answer: str) -> bool: ...

    async def withdrawal_lock(self, account_id: int) -> datetime | None:
        """Until when withdrawals are locked (None: not locked, or no such account)."""
        ...

    async def apply(self, account_id: int, change: Change, key: str) -> AccountView | None:
        """Apply `change` once per `key` (the same key again changes nothing more); the account after it, or
        None for no such account. `ChangeRefused` when the directory will never apply it."""
        ...


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


def mask_email(email: str) -> str:
    """Hide the local part but its first character: "jane.doe@example.com" → "j•••@example.com"."""
    local, at, domain = email.partition("@")
    return f"{local[:1]}•••{at}{domain}"


def mask_phone(phone: str) -> str:
    """Keep the first and last two digits, never how many lie between: "+15551234534" → "+1•••••34"."""
    plus = "+" if phone.strip().startswith("+") else ""
    digits = re.sub(r"[^0-9]", "", phone)
    return f"{plus}{digits[:1]}•••••{digits[-2:]}" if len(digits) >= 6 else f"{plus}•••••"
