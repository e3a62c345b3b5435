"""Keys derived from SECRET_KEY: one per purpose, so that no two uses ever share a key."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MIN_SECRET_LENGTH = 32


def derive_key(secret_key: str, purpose: str, length: int = 32) -> bytes:
    """A `length`-byte key for `purpose` (e.g. "codes", "totp-at-rest"), derived with HKDF-SHA256."""
    if len(secret_key) < MIN_SECRET_LENGTH:
        raise ValueError(f"SECRET_KEY must be at least {MIN_SECRET_LENGTH} characters")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=length, salt=b"recovery-bot", info=purpose.encode())
    return hkdf.derive(secret_key.encode())
