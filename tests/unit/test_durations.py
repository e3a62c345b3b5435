"""The one duration formatter (stats, review queue, broadcast progress), in the locale's words through Babel."""

from __future__ import annotations

from datetime import timedelta

import pytest

from flows.durations import format_duration


@pytest.mark.parametrize(("value", "shown"), [
    (None, "—"),
    (timedelta(seconds=40), "40s"),
    (timedelta(minutes=12, seconds=59), "12m"),  # cut down, not rounded; no seconds beside minutes
    (timedelta(hours=4, minutes=5), "4h 5m"),
    (timedelta(hours=3), "3h"),  # a zero second unit is left out
    (timedelta(days=2, hours=3, minutes=59), "2d 3h"),
    (timedelta(days=45), "45d"),  # days stay days: no weeks or months ("1m" would be ambiguous)
    (timedelta(seconds=-5), "0s"),
    (0, "0s"),
    (3.0, "3s"),
    (3_900, "1h 5m"),
])
def test_the_two_largest_units_in_english_by_default(value: timedelta | float | None, shown: str) -> None:
    assert format_duration(value) == shown


def test_other_locales_and_lengths_use_cldr_words() -> None:
    four_hours = timedelta(hours=4, minutes=5)
    assert format_duration(four_hours, "ru") == "4 ч 5 мин"
    assert format_duration(four_hours, "en", "long") == "4 hours, 5 minutes"
    assert format_duration(timedelta(minutes=1), "en", "long") == "1 minute"
    assert format_duration(four_hours, "pt-BR") == format_duration(four_hours, "pt_BR")


@pytest.mark.parametrize("locale", [None, "", "xx", "not a locale"])
def test_an_unknown_locale_falls_back_to_english(locale: str | None) -> None:
    assert format_duration(timedelta(hours=4, minutes=5), locale) == "4h 5m"
