"""When something happens, as the user's language writes it: a date and time (with its time zone named, UTC),
a time of day, and how far off it is ("Jan 5, 2026 12:30 UTC (in 27 minutes)"), through Babel's CLDR data."""

from __future__ import annotations

from datetime import UTC, datetime

from babel.dates import format_skeleton

from flows.durations import _locale, format_duration
from flows.texts import Text, translate


def moment(when: datetime, language: str | None) -> str:
    """The date and the time of day, 24-hour, in UTC: 'Jan 5, 2026 12:30 UTC', '5 янв. 2026 г. 12:30 UTC'."""
    locale = _locale(language)
    at = when.astimezone(UTC)
    return f"{format_skeleton('yMMMd', at, tzinfo=UTC, locale=locale)} {time_of_day(at, language)}"


def time_of_day(when: datetime, language: str | None) -> str:
    """'12:30 UTC'."""
    return f"{format_skeleton('Hm', when.astimezone(UTC), tzinfo=UTC, locale=_locale(language))} UTC"


def countdown(now: datetime, when: datetime | None, language: str | None) -> str:
    """'Jan 5, 2026 12:30 UTC (in 27 minutes)', or for the past '(3 minutes ago)'; '' for no time."""
    if when is None:
        return ""
    span = format_duration(abs(when - now), language, "long")
    relative = translate(Text("time.in" if when >= now else "time.ago", {"span": span}), language)
    return f"{moment(when, language)} ({relative})"
