"""Column types: timezone-aware UTC datetimes on every backend, JSON stored as text."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Dialect, Text
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Accepts only aware datetimes; stores UTC; always returns aware UTC (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: use timezone-aware UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class JSONText(TypeDecorator[Any]):
    """A JSON document in a text column (compact, portable, easy to read in any SQL shell)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else json.dumps(value, separators=(",", ":"), ensure_ascii=False)

    def process_result_value(self, value: str | None, dialect: Dialect) -> Any:
        return None if value is None else json.loads(value)


def as_stored(value: Any) -> Any:
    """`value` as a JSON column gives it back (tuples become lists; what JSON cannot hold fails here too): the
    in-memory adapters store through this, so they behave as the database does."""
    return json.loads(json.dumps(value))


def as_utc(value: datetime) -> datetime:
    """`value` as a `UTCDateTime` column gives it back (in UTC; a naive one fails here too), for the in-memory
    adapters."""
    if value.tzinfo is None:
        raise ValueError("naive datetime: use timezone-aware UTC")
    return value.astimezone(UTC)
