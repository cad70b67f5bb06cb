"""Report periods: ISO weeks (Monday start), calendar days and calendar months in an IANA time zone.

A :class:`Period` is a half-open interval ``[start, end)`` of local wall-clock time, held as timezone-aware
datetimes; ``start_ns``/``end_ns`` are the same instants in unix **nanoseconds** (the ledger's unit). Days are
cut at local midnight, so a day containing a DST change is 23 or 25 hours long: buckets are computed from local
midnights, never by adding 86,400 s. ISO week numbering follows ISO 8601 (``datetime.isocalendar``): week 1
is the week containing the year's first Thursday.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

__all__ = ["PeriodKind", "Period", "parse_period", "last_complete", "period_containing", "unix_ns"]

PeriodKind = Literal["daily", "weekly", "monthly"]

_WEEK_RE = re.compile(r"^(\d{4})-W(\d{2})$")
_MONTH_RE = re.compile(r"^(\d{4})-(\d{2})$")


def unix_ns(dt: datetime) -> int:
    """Unix nanoseconds of an aware datetime (exact: whole seconds × 10⁹ + microseconds × 10³)."""
    delta = dt - datetime(1970, 1, 1, tzinfo=ZoneInfo("UTC"))
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def _midnight(d: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(d, time(0), tzinfo=tz)


@dataclass(frozen=True)
class Period:
    """One report period. ``kind`` daily/weekly/monthly; ``first_day`` its first local date; ``tz`` the zone.

    ``start``/``end`` are aware datetimes (local midnights); ``start_ns``/``end_ns`` unix nanoseconds;
    ``label`` is ``2026-W47`` (weekly), ``2026-11-16`` (daily) or ``2026-11`` (monthly).
    """

    kind: PeriodKind
    first_day: date
    tz: ZoneInfo

    @property
    def start(self) -> datetime:
        """Local midnight at the start of the period (aware)."""
        return _midnight(self.first_day, self.tz)

    @property
    def end(self) -> datetime:
        """Local midnight after the period's last day (aware; exclusive)."""
        return _midnight(self._next_first_day(), self.tz)

    @property
    def start_ns(self) -> int:
        """``start`` in unix nanoseconds."""
        return unix_ns(self.start)

    @property
    def end_ns(self) -> int:
        """``end`` in unix nanoseconds (exclusive)."""
        return unix_ns(self.end)

    @property
    def label(self) -> str:
        """Human/CLI label: ``2026-W47``, ``2026-11-16`` or ``2026-11``."""
        if self.kind == "weekly":
            y, w, _ = self.first_day.isocalendar()
            return f"{y}-W{w:02d}"
        if self.kind == "daily":
            return self.first_day.isoformat()
        return f"{self.first_day.year}-{self.first_day.month:02d}"

    @property
    def noun(self) -> str:
        """``week``, ``day`` or ``month``."""
        return {"weekly": "week", "daily": "day", "monthly": "month"}[self.kind]

    def _next_first_day(self) -> date:
        d = self.first_day
        if self.kind == "daily":
            return d + timedelta(days=1)
        if self.kind == "weekly":
            return d + timedelta(days=7)
        return date(d.year + (d.month == 12), d.month % 12 + 1, 1)

    def next(self) -> Period:
        """The following period of the same kind."""
        return Period(self.kind, self._next_first_day(), self.tz)

    def previous(self) -> Period:
        """The preceding period of the same kind (the comparison period for deltas)."""
        d = self.first_day
        if self.kind == "daily":
            return Period(self.kind, d - timedelta(days=1), self.tz)
        if self.kind == "weekly":
            return Period(self.kind, d - timedelta(days=7), self.tz)
        return Period(self.kind, date(d.year - (d.month == 1), (d.month - 2) % 12 + 1, 1), self.tz)

    def buckets(self) -> list[tuple[str, int, int]]:
        """Chart buckets ``(label, start_ns, end_ns)``: hours for a daily period (``00``…``23``, local; 23 or 25
        on DST days), days otherwise (weekly ``Mon``…``Sun``, monthly ``1``…``31``)."""
        out: list[tuple[str, int, int]] = []
        if self.kind == "daily":
            # Local hours: step in UTC so DST days get 23 or 25 buckets.
            cur = self.start.astimezone(ZoneInfo("UTC"))
            end = self.end.astimezone(ZoneInfo("UTC"))
            while cur < end:
                nxt = cur + timedelta(hours=1)
                out.append((cur.astimezone(self.tz).strftime("%H"), unix_ns(cur), unix_ns(min(nxt, end))))
                cur = nxt
            return out
        d = self.first_day
        stop = self._next_first_day()
        while d < stop:
            label = d.strftime("%a") if self.kind == "weekly" else str(d.day)
            out.append((label, unix_ns(_midnight(d, self.tz)), unix_ns(_midnight(d + timedelta(days=1), self.tz))))
            d += timedelta(days=1)
        return out


def period_containing(kind: PeriodKind, when: datetime, tz: ZoneInfo) -> Period:
    """The period of ``kind`` that contains the instant ``when`` (aware, any zone) in zone ``tz``."""
    local = when.astimezone(tz).date()
    if kind == "daily":
        return Period(kind, local, tz)
    if kind == "weekly":
        return Period(kind, local - timedelta(days=local.weekday()), tz)
    return Period(kind, local.replace(day=1), tz)


def last_complete(kind: PeriodKind, when: datetime, tz: ZoneInfo) -> Period:
    """The most recent period of ``kind`` that ended at or before ``when`` (the default report period)."""
    return period_containing(kind, when, tz).previous()


def parse_period(kind: PeriodKind, text: str, tz: ZoneInfo) -> Period:
    """Parse a CLI period: weekly ``2026-W47``, daily ``2026-11-16``, monthly ``2026-11``.

    Raises ``ValueError`` with the expected format when ``text`` does not parse or names no such week/date.
    """
    try:
        if kind == "weekly":
            m = _WEEK_RE.match(text.strip())
            if not m:
                raise ValueError
            return Period(kind, date.fromisocalendar(int(m.group(1)), int(m.group(2)), 1), tz)
        if kind == "daily":
            return Period(kind, date.fromisoformat(text.strip()), tz)
        m = _MONTH_RE.match(text.strip())
        if not m:
            raise ValueError
        return Period(kind, date(int(m.group(1)), int(m.group(2)), 1), tz)
    except ValueError:
        fmt = {
            "weekly": "YYYY-Www (e.g. 2026-W47)",
            "daily": "YYYY-MM-DD (e.g. 2026-11-16)",
            "monthly": "YYYY-MM (e.g. 2026-11)",
        }[kind]
        raise ValueError(f"invalid {kind} period {text!r}: use {fmt}") from None
