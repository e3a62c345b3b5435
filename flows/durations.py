"""How long something took or has waited, as staff read it: "4h 5m", "2d 3h", "40s" — one formatter, in CLDR's
words for the locale (through Babel), for the stats report, the review queue and the broadcast progress."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from babel import Locale, UnknownLocaleError
from babel.dates import TIMEDELTA_UNITS, format_timedelta
from babel.lists import format_list

NO_DURATION = "—"
Length = Literal["narrow", "short", "long"]
Unit = Literal["day", "hour", "minute", "second"]
# No weeks or months: in English "1m" would read as a month or a minute.
UNITS: tuple[Unit, ...] = ("day", "hour", "minute", "second")
SIZES = dict(TIMEDELTA_UNITS)
PARTS = 2
LIST_STYLES: dict[Length, Literal["unit", "unit-short", "unit-narrow"]] = {
    "narrow": "unit-narrow", "short": "unit-short", "long": "unit"}


@dataclass(frozen=True)
class Span:
    """A duration put into a text that goes to several readers (a review card to every staff chat), written in
    each reader's language when the text is rendered for them."""

    value: timedelta | float | None
    length: Length = "narrow"

    def in_language(self, language: str | None) -> str:
        return format_duration(self.value, language, self.length)


def format_duration(value: timedelta | float | None, locale: str | None = "en", length: Length = "narrow") -> str:
    """The two largest units of `value` (a timedelta, or seconds) to the second, cut down; seconds only under a
    minute; a negative value as zero, None as "—". An unknown locale falls back to English."""
    if value is None:
        return NO_DURATION
    seconds = round(value.total_seconds() if isinstance(value, timedelta) else value)
    words = _locale(locale)
    pieces = [format_timedelta(timedelta(seconds=amount * SIZES[unit]), granularity=unit, threshold=math.inf,
                               format=length, locale=words)  # exactly in `unit`, never converted to a larger one
              for unit, amount in _parts(max(0, seconds))]
    try:
        return format_list(pieces, style=LIST_STYLES[length], locale=words)
    except KeyError:  # a locale whose CLDR data lacks this list style (Spanish's "unit"): its plain "and" list
        return format_list(pieces, locale=words)


def _parts(seconds: int) -> list[tuple[Unit, int]]:
    """(unit, amount) of the largest non-zero unit, and of the next one unless it is zero or seconds."""
    amounts: list[tuple[Unit, int]] = []
    for unit in UNITS:
        amount, seconds = divmod(seconds, SIZES[unit])
        amounts.append((unit, amount))
    start = next((i for i, (_unit, amount) in enumerate(amounts) if amount), len(amounts) - 1)
    first, *rest = amounts[start:start + PARTS]
    return [first, *(part for part in rest if part[1] and part[0] != "second")]


def _locale(name: str | None) -> Locale:
    try:
        return Locale.parse((name or "en").replace("-", "_"))
    except (UnknownLocaleError, ValueError):
        return Locale.parse("en")
