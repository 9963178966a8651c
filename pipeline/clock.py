"""Time, in one place: the warehouse stores UTC without a zone, landings are ordered by UTC stamps, and
"yesterday" is the nightly run's day in UTC."""

from __future__ import annotations

import datetime as dt


def now_utc() -> dt.datetime:
    """Now, zone-aware, in UTC."""
    return dt.datetime.now(dt.UTC)


def utc_now() -> dt.datetime:
    """Now in UTC, without a zone and at second precision: how the warehouse stores timestamps."""
    return now_utc().replace(tzinfo=None, microsecond=0)


def utc_timestamp() -> str:
    """Now in UTC as ISO 8601 with microseconds: landings are ordered by it."""
    return now_utc().strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def utc_iso_seconds() -> str:
    """Now in UTC as ISO 8601 to the second, with its offset (for records people read)."""
    return now_utc().isoformat(timespec="seconds")


def today_utc() -> dt.date:
    return now_utc().date()


def yesterday_utc() -> dt.date:
    return today_utc() - dt.timedelta(days=1)


def as_date(value: object) -> dt.date:
    """A DATE column's value as a date: PostgreSQL returns dates, SQLite returns ISO text."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value))
