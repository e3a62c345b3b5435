"""The anti-phishing guard: spot a message that looks like a secret the user should never send to anyone.

Impostor "support bots" that collect passwords, 2FA codes and backup keys are the classic 2FA-reset scam, so the
desk warns whenever someone sends one — even to the real desk — unless the step they are at asked for exactly
that kind of input (a step that asks for a code accepts a 6-digit code).
"""

from __future__ import annotations

import re
import unicodedata

BASE32_KEY = re.compile(r"^[A-Z2-7]{16,64}=*$")
SIX_DIGITS = re.compile(r"^\d{3} ?\d{3}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
PASSWORD_LENGTH = range(8, 65)


def secret_kind(message: str, expecting: str | None) -> str | None:
    """"key", "code" or "password" when `message` looks like one that the step (`expecting`) did not ask for."""
    text = unicodedata.normalize("NFKC", message).strip()
    if _looks_like_key(text):
        return "key"
    if expecting != "code" and SIX_DIGITS.match(text):
        return "code"
    if expecting not in ("answer", "code") and _looks_like_password(text):
        return "password"
    return None


def _looks_like_key(text: str) -> bool:
    compact = re.sub(r"[\s-]", "", text).upper()
    has_digit = any(c in "234567" for c in compact)
    letters = sum(c.isalpha() for c in compact)
    return bool(BASE32_KEY.match(compact)) and has_digit and letters >= 8


def _looks_like_password(text: str) -> bool:
    if " " in text or len(text) not in PASSWORD_LENGTH or EMAIL.match(text):
        return False
    classes = (
        any(c.islower() for c in text),
        any(c.isupper() for c in text),
        any(c.isdigit() for c in text),
        any(not c.isalnum() for c in text),
    )
    return sum(classes) >= 3
