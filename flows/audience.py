"""Who a broadcast reaches: the audiences an admin may choose, and the rule each one applies to a user.

- "all": every user;
- "open": users with an active case (status "open" or "review");
- "language": users whose language is the code or a variant of it ("en" takes "en" and "en-us", not "eo").

Users who blocked the bot are never in an audience. The SQL adapter (flows/store/broadcasts.py) states the same
rule as a query; `takes` is the rule for one user, as the in-memory adapter applies it.
"""

from __future__ import annotations

import re

AUDIENCES = ("all", "open", "language")

_LANGUAGE_CODE = re.compile(r"[a-z]{2,8}(-[a-z0-9]{1,8})*")


def check_audience(audience: str, language: str | None) -> str | None:
    """Validate an audience; returns the language code normalised (lower case), or None when none applies."""
    if audience not in AUDIENCES:
        raise ValueError(f"unknown audience {audience!r}; one of {', '.join(AUDIENCES)}")
    if audience != "language":
        if language is not None:
            raise ValueError("a language is given only with the 'language' audience")
        return None
    code = (language or "").strip().lower()
    if not _LANGUAGE_CODE.fullmatch(code):
        raise ValueError(f"the 'language' audience needs a language code like 'en' or 'pt-br', not {language!r}")
    return code


def takes(audience: str, language: str | None, *, blocked: bool, spoken: str | None, active_case: bool) -> bool:
    """Whether the audience (as `check_audience` normalised it) takes a user who speaks `spoken`."""
    if blocked:
        return False
    if audience == "open":
        return active_case
    if audience == "language":
        said = (spoken or "").lower()
        return spoken is not None and (said == language or said.startswith(f"{language}-"))
    return True
