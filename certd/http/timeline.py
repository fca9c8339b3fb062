"""The status page's validity timeline (pure): certificates and bundle CA certificates as bars.

The window covers the leaf certificates (weeks to months) with some margin; CA
certificates living for decades are clipped at its edges and say so, or a
90-day leaf would be a hairline next to a 20-year root.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

WIDTH = 1000  # SVG user units; the SVG scales to the page width
LABEL_WIDTH = 260
ROW_HEIGHT = 18
TOP = 24
MIN_SPAN = dt.timedelta(days=120)
MARGIN = dt.timedelta(days=7)


@dataclass(frozen=True)
class Bar:
    label: str
    kind: str  # "leaf" | "ca" | "expired" | "critical"
    y: int
    x: float
    width: float
    clipped_left: bool
    clipped_right: bool
    title: str


@dataclass(frozen=True)
class Timeline:
    bars: list[Bar]
    today_x: float
    ticks: list[tuple[float, str]]
    height: int
    width: int = WIDTH
    label_width: int = LABEL_WIDTH


def _parse(iso: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(iso) if iso else None


def window(starts: list[dt.datetime], ends: list[dt.datetime], now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    start = min([now - MARGIN, *[s - MARGIN for s in starts]])
    end = max([now + MARGIN, *[e + MARGIN for e in ends]])
    if end - start < MIN_SPAN:
        end = start + MIN_SPAN
    return start, end


def build(certificates: list[dict[str, Any]], bundles: list[dict[str, Any]], now: dt.datetime) -> Timeline:
    leaves = [(c, _parse(c["not_before"]), _parse(c["not_after"])) for c in certificates if c["not_after"]]
    starts = [s for _, s, _ in leaves if s]
    ends = [e for _, _, e in leaves if e]
    lo, hi = window(starts, ends, now)
    span = (hi - lo).total_seconds()
    plot = WIDTH - LABEL_WIDTH

    def x_of(moment: dt.datetime) -> float:
        return LABEL_WIDTH + plot * min(1.0, max(0.0, (moment - lo).total_seconds() / span))

    bars: list[Bar] = []

    def add(label: str, kind: str, start: dt.datetime, end: dt.datetime, title: str) -> None:
        x0, x1 = x_of(start), x_of(end)
        bars.append(Bar(label, kind, TOP + len(bars) * ROW_HEIGHT, round(x0, 1), round(max(x1 - x0, 1.0), 1),
                        start < lo, end > hi, title))

    for cert, start, end in leaves:
        assert end is not None
        kind = "critical" if cert["critical"] else "expired" if end <= now else "leaf"
        add(cert["name"], kind, start or end, end,
            f"{cert['name']}: {start:%Y-%m-%d} to {end:%Y-%m-%d}" if start else cert["name"])
    seen: set[str] = set()
    for bundle in bundles:
        for member in bundle["members"]:
            if member["fingerprint"] in seen:
                continue
            seen.add(member["fingerprint"])
            start, end = _parse(member["not_before"]), _parse(member["not_after"])
            if end is None:
                continue
            subject = member["subject"].removeprefix("CN=")
            add(f"{member['role']}: {subject}"[:40], "expired" if end <= now else "ca", start or lo, end,
                f"{member['subject']} ({bundle['bundle']}): until {end:%Y-%m-%d}")
    ticks = []
    month = dt.datetime(lo.year, lo.month, 1, tzinfo=dt.timezone.utc)
    step = max(1, round(span / 86400 / 30 / 8))  # about eight ticks
    while month <= hi:
        if month >= lo:
            ticks.append((round(x_of(month), 1), f"{month:%Y-%m}"))
        year, index = divmod(month.month - 1 + step, 12)
        month = month.replace(year=month.year + year, month=index + 1)
    return Timeline(bars, round(x_of(now), 1), ticks, TOP + max(1, len(bars)) * ROW_HEIGHT + 8)
