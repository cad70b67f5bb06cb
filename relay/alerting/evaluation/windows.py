"""Time windows of alert rules and the incremental per-group aggregates kept over them.

A window maps a record's time (unix **seconds**, float) to an integer **bucket key** and tells, for an evaluation
time ``now``, the smallest key inside the window (``lo``) and the smallest key still kept (``history_lo``, for
spike baselines):

- :class:`RollingWindow` (the last ``W`` seconds): buckets of ``b`` seconds aligned to the unix epoch, ``b`` about
  ``W / 120`` and dividing ``W``; a bucket is in the window while its end is after ``now - W``, so a record leaves
  the window at most ``b`` seconds late, never early (1h → 30 s buckets, 10m → 5 s, 7d → 1h).
- :class:`CalendarWindow` (``day``, ``week`` from Monday, ``month``): one bucket per period, aligned to local
  midnight in an IANA timezone (https://docs.python.org/3/library/zoneinfo.html; DST days are 23 or 25 hours).

:class:`WindowAgg` keeps, per group, a vector of additive figures per bucket (counts, nano-USD, token sums) plus a
running total of the buckets inside the window, so adding a record, retracting one (``sign=-1``) and reading the
window's total are O(1); it keeps a sorted list of raw values only for rules that need quantiles, min or max.
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
import zoneinfo

from relay.alerting.rules.schema import WindowSpec, format_duration

__all__ = ["Window", "RollingWindow", "CalendarWindow", "WindowAgg", "make_window", "quantile", "bucket_size"]

_NICE = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
#: Target number of buckets per rolling window.
BUCKETS_PER_WINDOW = 120


def bucket_size(window_s: float) -> float:
    """Bucket length in seconds for a rolling window of ``window_s``: the largest "nice" size (1s … 1d) that is at
    most ``window_s / 120`` and divides ``window_s``; ``window_s / 120`` when none does."""
    target = window_s / BUCKETS_PER_WINDOW
    best = None
    for b in _NICE:
        if b > target:
            break
        if math.isclose(window_s / b, round(window_s / b)):
            best = b
    return float(best) if best is not None else max(window_s / BUCKETS_PER_WINDOW, 1e-3)


class Window:
    """Rule-level window arithmetic (shared by all groups of a rule). Times in unix seconds."""

    #: Length of one window in buckets (rolling) — used for spike baselines.
    span: int = 1

    def key(self, t: float) -> int:
        """The bucket key of time ``t``."""
        raise NotImplementedError

    def lo(self, now: float) -> int:
        """Smallest bucket key inside the window at ``now``."""
        raise NotImplementedError

    def history_lo(self, now: float) -> int:
        """Smallest bucket key kept at ``now`` (``lo`` unless baselines are needed)."""
        return self.lo(now)

    def lo_range(self, now: float) -> tuple[int, int, float, float]:
        """``(lo, history_lo, since, until)``: the keys at ``now`` and the time range ``[since, until)`` over which
        they stay the same (so callers can cache them)."""
        raise NotImplementedError

    def bounds(self, now: float) -> tuple[float, float]:
        """``(start, end)`` of the window at ``now``, unix seconds."""
        raise NotImplementedError

    def next_boundary(self, now: float) -> float | None:
        """When the window next rolls over as a whole (calendar period end), or None (rolling)."""
        return None

    def oldest_needed(self, now: float) -> float:
        """Earliest record time (unix seconds) any evaluation at ``now`` can use (for backfill scans)."""
        raise NotImplementedError

    def describe(self) -> str:
        """Human description (``last 1h``, ``month (Europe/Berlin)``)."""
        raise NotImplementedError


class RollingWindow(Window):
    """The last ``length`` seconds, in buckets of :func:`bucket_size`; ``history`` extra windows are kept before
    the current one (spike baselines)."""

    def __init__(self, length: float, history: int = 0):
        self.length = float(length)
        self.b = bucket_size(self.length)
        self.span = max(1, round(self.length / self.b))
        self.history = history

    def key(self, t: float) -> int:
        return int(t // self.b)

    def lo(self, now: float) -> int:
        return int((now - self.length) // self.b)

    def history_lo(self, now: float) -> int:
        return self.lo(now) - self.history * self.span

    def lo_range(self, now: float) -> tuple[int, int, float, float]:
        lo = int((now - self.length) // self.b)
        since, until = lo * self.b + self.length, (lo + 1) * self.b + self.length
        if not since <= now < until:  # float rounding at a boundary: do not cache
            since = until = now
        return lo, lo - self.history * self.span, since, until

    def bounds(self, now: float) -> tuple[float, float]:
        return now - self.length, now

    def oldest_needed(self, now: float) -> float:
        return self.history_lo(now) * self.b

    def describe(self) -> str:
        return f"last {format_duration(self.length)}"


class CalendarWindow(Window):
    """The current ``day``, ``week`` (Monday to Sunday) or ``month`` in ``timezone``. Keys are period ordinals:
    local date ordinal (day), ``(ordinal - 1) // 7`` (week; ordinal 1 is a Monday), ``year * 12 + month - 1``."""

    def __init__(self, period: str, timezone: str = "UTC"):
        if period not in ("day", "week", "month"):
            raise ValueError(f"unknown calendar period {period!r}")
        self.period = period
        self.timezone = timezone
        self.zone = zoneinfo.ZoneInfo(timezone)
        self._cache: tuple[float, float, int] = (0.0, -1.0, 0)  # start, end, key

    def _key_of_date(self, d: dt.date) -> int:
        if self.period == "day":
            return d.toordinal()
        if self.period == "week":
            return (d.toordinal() - 1) // 7
        return d.year * 12 + d.month - 1

    def _first_day(self, key: int) -> dt.date:
        if self.period == "day":
            return dt.date.fromordinal(key)
        if self.period == "week":
            return dt.date.fromordinal(key * 7 + 1)
        return dt.date(key // 12, key % 12 + 1, 1)

    def _start(self, key: int) -> float:
        d = self._first_day(key)
        return dt.datetime(d.year, d.month, d.day, tzinfo=self.zone).timestamp()

    def key(self, t: float) -> int:
        start, end, k = self._cache
        if start <= t < end:
            return k
        k = self._key_of_date(dt.datetime.fromtimestamp(t, self.zone).date())
        self._cache = (self._start(k), self._start(k + 1), k)
        return k

    def lo(self, now: float) -> int:
        return self.key(now)

    def bounds(self, now: float) -> tuple[float, float]:
        k = self.key(now)
        start, end, ck = self._cache
        if ck != k:  # pragma: no cover - key() just filled the cache
            return self._start(k), self._start(k + 1)
        return start, end

    def next_boundary(self, now: float) -> float | None:
        return self.bounds(now)[1]

    def lo_range(self, now: float) -> tuple[int, int, float, float]:
        k = self.key(now)
        start, end = self.bounds(now)
        return k, k, start, end

    def oldest_needed(self, now: float) -> float:
        return self.bounds(now)[0]

    def describe(self) -> str:
        return f"{self.period} ({self.timezone})"


def make_window(spec: WindowSpec, history: int = 0) -> Window:
    """The window of a rule's ``window:`` spec (``history`` baseline windows for spike rules)."""
    if spec.rolling is not None:
        return RollingWindow(spec.rolling, history)
    assert spec.calendar is not None
    return CalendarWindow(spec.calendar, spec.timezone)


def quantile(sorted_values: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) of ascending values, interpolating linearly between closest ranks like
    Prometheus' ``quantile_over_time``; NaN for no values."""
    n = len(sorted_values)
    if n == 0:
        return math.nan
    rank = q * (n - 1)
    lo = int(rank)
    hi = min(lo + 1, n - 1)
    w = rank - lo
    return sorted_values[lo] * (1 - w) + sorted_values[hi] * w


class WindowAgg:
    """One group's figures over a window: ``n`` additive figures per bucket key (``buckets[key][i]``), their total
    over the keys ``>= lo`` (``run``), and, with ``keep_values``, the raw values (per bucket and sorted over the
    window in ``values``). Call :meth:`advance` with the window's current ``lo``/``history_lo`` before reading or
    adding; keys below ``history_lo`` are dropped."""

    __slots__ = ("n", "keep_values", "lo", "buckets", "run", "values", "history_version", "cache", "oldest")

    def __init__(self, n: int, keep_values: bool = False):
        self.n = n
        self.keep_values = keep_values
        self.lo: int | None = None
        self.buckets: dict[int, list] = {}
        self.oldest = math.inf  # smallest key in buckets
        self.run: list = [0] * n
        self.values: list[float] | None = [] if keep_values else None
        #: Bumped when a bucket before ``lo`` changes (late records), so cached baselines can be reused.
        self.history_version = 0
        #: Free slot for an evaluator's cache (e.g. spike baselines keyed by ``(lo, history_version)``).
        self.cache: object = None

    def advance(self, lo: int, history_lo: int) -> None:
        """Move the window start to ``lo`` (never backwards): buckets below it leave the running total, buckets
        below ``history_lo`` are dropped."""
        old = self.lo
        if old is None:
            self.lo = lo
            return
        if lo <= old:
            return
        buckets, run, n = self.buckets, self.run, self.n
        keys = range(old, lo) if lo - old <= len(buckets) else [k for k in buckets if old <= k < lo]
        for k in keys:
            cell = buckets.get(k)
            if cell is None:
                continue
            for i in range(n):
                run[i] -= cell[i]
            if self.values is not None:
                for v in cell[n]:
                    self._remove_sorted(v)
        self.lo = lo
        if history_lo > self.oldest:
            for k in [k for k in buckets if k < history_lo]:
                del buckets[k]
            self.oldest = min(buckets) if buckets else math.inf

    def add(self, key: int, vec: tuple, value: float | None, sign: int, history_lo: int) -> bool:
        """Add (``sign=1``) or subtract (``sign=-1``) ``vec`` (and the raw ``value``) at bucket ``key``; returns False
        when the key is older than anything kept (nothing changed)."""
        if key < history_lo:
            return False
        n = self.n
        cell = self.buckets.get(key)
        if cell is None:
            if sign < 0:
                return False
            cell = [0] * n
            if self.keep_values:
                cell.append([])
            self.buckets[key] = cell
            if key < self.oldest:
                self.oldest = key
        for i in range(n):
            cell[i] += sign * vec[i]
        in_window = self.lo is None or key >= self.lo
        if in_window:
            run = self.run
            for i in range(n):
                run[i] += sign * vec[i]
        else:
            self.history_version += 1
        if self.keep_values and value is not None:
            if sign > 0:
                cell[n].append(value)
                if in_window:
                    assert self.values is not None
                    bisect.insort(self.values, value)
            else:
                try:
                    cell[n].remove(value)
                except ValueError:
                    return True
                if in_window:
                    self._remove_sorted(value)
        return True

    def _remove_sorted(self, v: float) -> None:
        vals = self.values
        assert vals is not None
        i = bisect.bisect_left(vals, v)
        if i < len(vals) and vals[i] == v:
            del vals[i]

    def empty(self) -> bool:
        """True when nothing is kept (the group can be forgotten)."""
        return not self.buckets

    def totals_before(self, lo: int, span: int, windows: int, index: int = 0) -> list[float]:
        """Sums of figure ``index`` over the ``windows`` windows of ``span`` keys right before ``lo`` (most recent
        first) — the trailing baseline of a spike rule."""
        out = [0.0] * windows
        first = lo - windows * span
        for k, cell in self.buckets.items():
            if first <= k < lo:
                out[(lo - 1 - k) // span] += cell[index]
        return out
