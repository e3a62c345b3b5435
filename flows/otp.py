"""TOTP for authenticator apps (RFC 4226 / RFC 6238), written out so that it also accepts the 80-bit keys that
pyotp 2.12 refuses (it wants at least 112 bits), plus the normalisation of keys and codes as people type them.

pyotp is used only where it is not in the way: to make new secrets and provisioning URIs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import struct
import unicodedata
from dataclasses import dataclass
from datetime import datetime

import pyotp

MIN_KEY_LENGTH = 16
MAX_CODE_INPUT = 64
DIGESTS = frozenset({"sha1", "sha256", "sha512"})

_BASE32 = re.compile(r"[A-Z2-7]+")
_IMPOSSIBLE_LENGTHS = frozenset({1, 3, 6})
_LOOKALIKES = {"0": "O", "1": "I or L", "8": "B"}


@dataclass(frozen=True)
class TotpParams:
    """How codes are made and how much clock drift is accepted (`window` time steps either way)."""

    digits: int = 6
    period: int = 30
    digest: str = "sha1"
    window: int = 1

    def __post_init__(self) -> None:
        if self.digest not in DIGESTS or not 6 <= self.digits <= 10 or self.period <= 0 or self.window < 0:
            raise ValueError(f"invalid TOTP parameters: {self}")


def normalize_key(raw: str) -> str:
    """The key as canonical unpadded upper-case base32; ValueError with a message fit to show the user."""
    key = re.sub(r"[\s-]", "", raw).upper().rstrip("=")
    if not _BASE32.fullmatch(key):
        raise ValueError(_bad_characters_message(key))
    if len(key) < MIN_KEY_LENGTH:
        raise ValueError(f"The key is too short: a key has at least {MIN_KEY_LENGTH} letters and digits.")
    if len(key) % 8 in _IMPOSSIBLE_LENGTHS:
        raise ValueError("The key looks incomplete: please check that no character is missing or extra.")
    return key


def _bad_characters_message(key: str) -> str:
    hints = [f"{letters} instead of {digit}" for digit, letters in _LOOKALIKES.items() if digit in key]
    rule = "The key may contain only the letters A–Z and the digits 2–7"
    return f"{rule} (perhaps {', '.join(hints)}?)." if hints else f"{rule}."


def decode_key(key: str) -> bytes:
    """The raw bytes of a base32 key (padding optional)."""
    return base64.b32decode(key + "=" * (-len(key) % 8))


def hotp(key: bytes, counter: int, digits: int = 6, digest: str = "sha1") -> str:
    """The RFC 4226 one-time password for `counter`, zero-padded to `digits`."""
    if digest not in DIGESTS:
        raise ValueError(f"unsupported digest {digest!r}")
    if counter < 0 or not 6 <= digits <= 10:
        raise ValueError("counter must be >= 0 and digits between 6 and 10")
    mac = hmac.new(key, struct.pack(">Q", counter), getattr(hashlib, digest)).digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset:offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**digits).zfill(digits)


def normalize_code(raw: str) -> str:
    """The code as ASCII digits (fullwidth digits and spaces are fine), or "" if it is not a number."""
    code = "".join(unicodedata.normalize("NFKC", raw[:MAX_CODE_INPUT]).split())
    return code if code.isascii() and code.isdigit() else ""


def time_step(at: datetime, period: int = 30) -> int:
    """The RFC 6238 time step containing `at` (which must be timezone-aware)."""
    if at.tzinfo is None:
        raise ValueError("naive datetime: use timezone-aware UTC")
    return int(at.timestamp()) // period


def check_totp(
    secret_b32: str, code: str, at: datetime, last_step: int | None, params: TotpParams = TotpParams()
) -> int | None:
    """The time step `code` matches around `at` (store it as the new last step), or None.

    Steps up to `last_step` are refused (RFC 6238 §5.2). Every step in the window is computed and compared in
    constant time, so the time taken does not tell which one matched.
    """
    key = decode_key(normalize_key(secret_b32))
    entered = normalize_code(code).encode()
    current = time_step(at, params.period)
    matched: int | None = None
    for step in range(max(current - params.window, 0), current + params.window + 1):
        expected = hotp(key, step, params.digits, params.digest).encode()
        fresh = last_step is None or step > last_step
        if hmac.compare_digest(expected, entered) and fresh:
            matched = step
    return matched


def new_secret() -> str:
    """A fresh 160-bit secret as 32 base32 characters."""
    return pyotp.random_base32(32)


def provisioning_uri(secret: str, account_name: str, issuer: str) -> str:
    """The otpauth:// URI (for a QR code) of a secret of at least 112 bits, with the default parameters."""
    return pyotp.TOTP(normalize_key(secret)).provisioning_uri(name=account_name, issuer_name=issuer)
