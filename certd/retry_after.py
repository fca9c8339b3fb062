"""Retry-After (RFC 9110 section 10.2.3), read once for every HTTP peer certd talks to.

The ACME CA (orders, ARI) and the fleet registries both send it; one parser keeps
their handling of both forms (seconds, HTTP date), of time zones and of absurd
values the same.
"""

from __future__ import annotations

import datetime as dt
import email.utils

# A server asking to wait longer than a year is broken or hostile: cap it (and never let a
# huge number overflow the date and crash the caller).
MAX_RETRY_AFTER_S = 366 * 24 * 3600


def parse_retry_after(value: str | None, now: dt.datetime) -> dt.datetime | None:
    """Retry-After as an aware UTC moment; None if absent or invalid."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        if not value.isascii():  # "²" is a digit to str.isdigit but no number of seconds
            return None
        seconds = int(value) if len(value) <= 12 else MAX_RETRY_AFTER_S
        return now + dt.timedelta(seconds=min(seconds, MAX_RETRY_AFTER_S))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.astimezone(dt.timezone.utc)


def retry_after_seconds(value: str | None, now: dt.datetime | None = None) -> float | None:
    """Retry-After as seconds from now (never negative); None if absent or invalid."""
    now = now or dt.datetime.now(dt.timezone.utc)
    when = parse_retry_after(value, now)
    return None if when is None else max(0.0, (when - now).total_seconds())
