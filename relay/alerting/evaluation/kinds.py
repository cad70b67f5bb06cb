"""What each rule kind takes from a ledger record and how it decides, per group, whether its alerts are active.

Two halves per kind:

- an **aggregation** (:func:`make_aggregation`): from a :class:`~relay.model.UsageRecord` to a tuple of additive
  figures (and optionally a raw value for quantiles) — budget ``(cost nano-USD,)``, error rate ``(calls,
  failed)``, threshold ``(count, sum)``, spike ``(sum,)``. It depends only on ``Rule.agg_key()``, so rules that
  differ only in thresholds share it across reloads;
- an **evaluator** (:func:`make_evaluator`): the rule's conditions (one per alert of a group: each budget threshold,
  the forecast, or the single condition of other kinds) and, from a group's :class:`~relay.alerting.evaluation.windows.WindowAgg`,
  whether each is active, its compared ``value`` and the named ``values`` (``relay.alerting.rules.schema.VALUE_NAMES``).

Units: money USD (sums kept in integer nano-USD), durations milliseconds as recorded, times unix seconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from relay.alerting.evaluation.windows import CalendarWindow, Window, WindowAgg, make_window, quantile
from relay.alerting.rules.load import Rule
from relay.alerting.rules.schema import (
    RETRIES_EXHAUSTED_KIND,
    SCORE_KIND,
    BudgetRule,
    ErrorRateRule,
    ScoreRule,
    SpikeRule,
    ThresholdRule,
)
from relay.matchers import Matcher
from relay.model import UsageRecord

__all__ = ["Aggregation", "Condition", "Evaluator", "make_aggregation", "make_evaluator", "field_getter"]

#: ``(figures, raw value)`` a record contributes, or None when the record does not count for the rule.
Contribution = tuple[tuple, float | None] | None

_QUANTILES = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}


def field_getter(name: str) -> tuple[Callable[[UsageRecord], float | int | None], float]:
    """``(getter, scale)`` for a ledger field: ``getter(record)`` returns the raw figure (None when the record
    lacks it) and the figure divided by ``scale`` is in the field's unit (``cost_usd`` is kept in nano-USD, scale 1e9)."""
    if name == "records":
        return (lambda r: 1), 1.0
    if name == "cost_usd":
        return (lambda r: r.cost_nanos), 1e9
    if name == "total_tokens":
        return (lambda r: r.input_tokens + r.output_tokens + r.cache_read_tokens + r.cache_creation_tokens), 1.0
    if name in (
        "duration_ms",
        "ttft_ms",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_creation_tokens",
    ):
        return (lambda r: getattr(r, name)), 1.0
    raise ValueError(f"unknown field {name!r}")


@dataclass
class Aggregation:
    """How records feed a rule's window: ``contribute(record, labels)``, ``n`` figures, ``keep_values`` for raw
    values, the rule-level ``window``, and ``index``: label equality constraints ``{name: {values}}`` a record
    must satisfy (used to route records to rules without checking every rule)."""

    key: str
    window: Window
    matchers: tuple[Matcher, ...]
    group_by: tuple[str, ...]
    n: int
    keep_values: bool
    contribute: Callable[[UsageRecord, dict[str, str]], Contribution]
    index: dict[str, frozenset[str]]
    #: Keep a failed record as the group's sample (error-rate rules: links point at a failure).
    sample_failed: bool = False


def make_aggregation(rule: Rule) -> Aggregation:
    """The aggregation of ``rule`` (see the module docstring)."""
    m = rule.model
    index = {x.name: frozenset([x.value]) for x in rule.matchers if x.op == "=" and x.value != ""}
    history = m.baseline.windows if isinstance(m, SpikeRule) else 0
    window = make_window(m.window, history)
    keep = False
    contribute: Callable[[UsageRecord, dict[str, str]], Contribution]
    if isinstance(m, BudgetRule):
        n = 1

        def contribute(r: UsageRecord, labels: dict[str, str]) -> Contribution:
            return ((r.cost_nanos,), None) if r.cost_nanos else None
    elif isinstance(m, ErrorRateRule):
        n = 2
        contribute = _error_contribution(rule)
        index["kind"] = frozenset(["llm", RETRIES_EXHAUSTED_KIND] if m.errors.retries_exhausted else [m.errors.kind])
    elif isinstance(m, ThresholdRule):
        n = 2
        keep = m.aggregate in ("min", "max") or m.aggregate in _QUANTILES
        get, _ = field_getter(m.field)

        def contribute(r: UsageRecord, labels: dict[str, str]) -> Contribution:
            x = get(r)
            return None if x is None else ((1, x), x)
    elif isinstance(m, ScoreRule):
        n = 2
        keep = m.aggregate in ("min", "max") or m.aggregate in _QUANTILES
        index.update(kind=frozenset([SCORE_KIND]), score=frozenset([m.score]))
        hit = _score_match(m)

        def contribute(r: UsageRecord, labels: dict[str, str]) -> Contribution:
            if r.kind != SCORE_KIND or labels.get("score") != m.score:
                return None
            x = hit(r) if hit is not None else getattr(r, "value", None)
            return None if x is None else ((1, x), x)
    else:
        assert isinstance(m, SpikeRule)
        n = 1
        get, _ = field_getter(m.field)

        def contribute(r: UsageRecord, labels: dict[str, str]) -> Contribution:
            x = get(r)
            return ((x,), None) if x else None

    if not isinstance(m, ScoreRule):  # score records (relay.scores.records) feed score rules only
        usage = contribute

        def contribute(r: UsageRecord, labels: dict[str, str]) -> Contribution:
            return None if r.kind == SCORE_KIND else usage(r, labels)

    return Aggregation(
        rule.agg_key(),
        window,
        rule.matchers,
        tuple(m.group_by),
        n,
        keep,
        contribute,
        index,
        sample_failed=isinstance(m, ErrorRateRule),
    )


def _error_contribution(rule: Rule) -> Callable[[UsageRecord, dict[str, str]], Contribution]:
    m = rule.model
    assert isinstance(m, ErrorRateRule)
    spec = m.errors
    codes = frozenset(spec.status_codes)
    classes = frozenset(spec.error_classes)
    overloaded = 529 in codes
    extra = rule.error_matchers
    ONE, FAIL = ((1, 0), None), ((1, 1), None)

    def selected(r: UsageRecord, labels: dict[str, str]) -> bool:
        if codes or classes:
            hit = (
                r.status_code in codes
                or (r.error_class in classes)
                or (overloaded and r.status_code is None and r.error_class == "overloaded")
            )
            if not hit:
                return False
        return all(x.matches(labels) for x in extra)

    if spec.retries_exhausted:

        def contribute(r: UsageRecord, labels: dict[str, str]) -> Contribution:
            if r.kind == "llm":
                return ONE
            if r.kind == RETRIES_EXHAUSTED_KIND and selected(r, labels):
                return ((0, 1), None)
            return None
    else:
        kind = spec.kind

        def contribute(r: UsageRecord, labels: dict[str, str]) -> Contribution:
            if r.kind != kind:
                return None
            return FAIL if not r.success and selected(r, labels) else ONE

    return contribute


def _score_match(m: ScoreRule) -> Callable[[UsageRecord], float | None] | None:
    """For ``aggregate: rate``: 1.0 when a score record matches ``m.match``, else 0.0 (None: not a rate rule)."""
    spec = m.match
    if spec is None:
        return None
    if spec.equals is not None:
        want = spec.equals

        def hit(r: UsageRecord) -> float | None:
            value, label = getattr(r, "value", None), getattr(r, "string_value", None)
            if isinstance(want, str):
                return float(label == want or (value is not None and label is None and str(value) == want))
            return float(value is not None and value == want)

        return hit
    assert spec.op is not None and spec.value is not None  # ScoreMatch: equals, or op with value
    op, cut = _OPS[spec.op], spec.value

    def hit_op(r: UsageRecord) -> float | None:
        value = getattr(r, "value", None)
        return None if value is None else float(op(value, cut))

    return hit_op


@dataclass(frozen=True)
class Condition:
    """One alert of a group: extra identity ``labels`` (e.g. ``{"threshold": "80"}``) and its ``severity``."""

    labels: tuple[tuple[str, str], ...]
    severity: str


class Evaluator:
    """A rule's conditions and their evaluation over a group's figures (subclasses per kind).

    ``time_sensitive``: whether an inactive condition can become active by time passing alone (records leaving
    the window can raise a ratio, a quantile or a z-score; a forecast becomes eligible). When False (sums and
    counts against ``>``/``>=``, budget thresholds), the engine re-evaluates only groups with active alerts
    periodically, since a group's figures only fall between records.
    """

    conditions: list[Condition]
    time_sensitive = True

    def __init__(self, rule: Rule, agg: Aggregation):
        self.rule = rule
        self.window = agg.window
        sev = rule.model.labels.get("severity", "warning")
        self.conditions = [Condition((), sev)]

    def full_scan(self, last: float, now: float) -> bool:
        """Whether a periodic evaluation at ``now`` (the previous one was at ``last``) must visit every group."""
        return self.time_sensitive

    def next_event(self, now: float) -> float | None:
        """A future time at which an inactive condition can become active by time alone (a full scan is then
        due), or None."""
        return None

    def check(self, g: WindowAgg, now: float) -> list[tuple[bool, float]]:
        """``(active, value)`` per condition."""
        raise NotImplementedError

    def values(self, g: WindowAgg, now: float, index: int) -> dict[str, float]:
        """The named figures of condition ``index`` (floats; NaN never — absent figures are 0)."""
        raise NotImplementedError


def _fmt_pct(p: float) -> str:
    return f"{p:g}"


class BudgetEvaluator(Evaluator):
    """Budget thresholds (``spend >= limit × percent / 100``) and the forecast (linear projection to the end of the
    calendar window ``> limit``, after ``min_elapsed``, default a tenth of the window)."""

    def __init__(self, rule: Rule, agg: Aggregation):
        super().__init__(rule, agg)
        m = rule.model
        assert isinstance(m, BudgetRule)
        self.limit = m.limit_usd
        self.levels = [t.percent for t in m.thresholds]
        self.conditions = [Condition((("threshold", _fmt_pct(t.percent)),), t.severity) for t in m.thresholds]
        self.forecast = m.forecast if m.forecast is not None and m.forecast.enabled else None
        if self.forecast is not None:
            self.conditions.append(Condition((("threshold", "forecast"),), self.forecast.severity))
        # The projection spend × length / elapsed only falls while no records arrive, except when the forecast
        # becomes eligible (min_elapsed into the window): one full scan then (see full_scan / next_event).
        self.time_sensitive = False
        self.cuts = [self.limit * p / 100.0 - 1e-9 for p in self.levels]

    def _eligible_at(self, now: float) -> float:
        start, end = self.window.bounds(now)
        assert self.forecast is not None
        return start + (self.forecast.min_elapsed if self.forecast.min_elapsed is not None else (end - start) / 10)

    def full_scan(self, last: float, now: float) -> bool:
        return self.forecast is not None and last < self._eligible_at(now) <= now

    def next_event(self, now: float) -> float | None:
        if self.forecast is None:
            return None
        at = self._eligible_at(now)
        return at if at > now else None

    def _forecast(self, spend: float, now: float) -> tuple[float, float, bool]:
        """``(forecast USD, projected_exceeded_at, eligible)``."""
        start, end = self.window.bounds(now)
        elapsed = max(now - start, 1e-9)
        if spend <= 0 or not isinstance(self.window, CalendarWindow):
            return spend, 0.0, False
        rate = spend / elapsed
        projected = spend + rate * max(end - now, 0.0)
        crossing = start + self.limit / rate
        min_elapsed = (
            self.forecast.min_elapsed if self.forecast and self.forecast.min_elapsed is not None else (end - start) / 10
        )
        return projected, crossing, now - start >= min_elapsed

    def check(self, g: WindowAgg, now: float) -> list[tuple[bool, float]]:
        spend = g.run[0] / 1e9
        out = [(spend >= cut, spend) for cut in self.cuts]
        if self.forecast is not None:
            if spend > 0:
                projected, _, eligible = self._forecast(spend, now)
                out.append((eligible and projected > self.limit, projected))
            else:
                out.append((False, 0.0))
        return out

    def values(self, g: WindowAgg, now: float, index: int) -> dict[str, float]:
        spend = g.run[0] / 1e9
        start, end = self.window.bounds(now)
        projected, crossing, _ = self._forecast(spend, now)
        pct = self.levels[index] if index < len(self.levels) else 100.0
        return {
            "spend": spend,
            "limit": self.limit,
            "percent": spend / self.limit * 100.0,
            "threshold": self.limit * pct / 100.0,
            "threshold_percent": pct,
            "forecast": projected,
            "projected_exceeded_at": crossing if projected > self.limit > spend else 0.0,
            "window_start": start,
            "window_end": end,
        }


class ErrorRateEvaluator(Evaluator):
    """``failed / total > ratio`` (with ``total >= min_count``) and/or ``failed >= count``."""

    def __init__(self, rule: Rule, agg: Aggregation):
        super().__init__(rule, agg)
        m = rule.model
        assert isinstance(m, ErrorRateRule)
        self.ratio, self.count, self.min_count = m.ratio, m.count, m.min_count
        self.time_sensitive = m.ratio is not None

    def check(self, g: WindowAgg, now: float) -> list[tuple[bool, float]]:
        total, failed = g.run[0], g.run[1]
        ratio = failed / total if total > 0 else (1.0 if failed > 0 else 0.0)
        active = True
        if self.ratio is not None:
            active = total >= self.min_count and ratio > self.ratio
        if self.count is not None:
            active = active and failed >= self.count
        return [(active, ratio if self.ratio is not None else float(failed))]

    def values(self, g: WindowAgg, now: float, index: int) -> dict[str, float]:
        total, failed = g.run[0], g.run[1]
        return {
            "ratio": failed / total if total > 0 else 0.0,
            "failed": float(failed),
            "total": float(total),
            "min_count": float(self.min_count),
            "threshold": float(self.ratio or 0.0),
            "count_threshold": float(self.count or 0),
        }


_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
}


class ThresholdEvaluator(Evaluator):
    """``aggregate(field) op value`` once ``min_count`` records carry the field."""

    def __init__(self, rule: Rule, agg: Aggregation):
        super().__init__(rule, agg)
        m = rule.model
        assert isinstance(m, ThresholdRule)
        _, self.scale = field_getter(m.field)
        self.aggregate, self.op, self.value, self.min_count = m.aggregate, _OPS[m.op], m.value, m.min_count
        self.time_sensitive = not (m.op in (">", ">=") and m.aggregate in ("count", "sum", "max"))

    def figure(self, g: WindowAgg) -> float:
        """The aggregate over the window (field units); NaN without records."""
        count, total = g.run[0], g.run[1]
        a = self.aggregate
        if count <= 0:
            return math.nan
        if a == "count":
            return float(count)
        if a == "sum":
            return total / self.scale
        if a == "avg":
            return total / count / self.scale
        vals = g.values or []
        if not vals:
            return math.nan
        if a == "min":
            return vals[0] / self.scale
        if a == "max":
            return vals[-1] / self.scale
        return quantile(vals, _QUANTILES[a]) / self.scale

    def check(self, g: WindowAgg, now: float) -> list[tuple[bool, float]]:
        x = self.figure(g)
        if math.isnan(x) or g.run[0] < self.min_count:
            return [(False, 0.0)]
        return [(self.op(x, self.value), x)]

    def values(self, g: WindowAgg, now: float, index: int) -> dict[str, float]:
        x = self.figure(g)
        return {"value": 0.0 if math.isnan(x) else x, "threshold": self.value, "count": float(g.run[0])}


class ScoreEvaluator(ThresholdEvaluator):
    """A score rule: the threshold comparison over score values (``rate``: the average of the 0/1 matches)."""

    def __init__(self, rule: Rule, agg: Aggregation):
        Evaluator.__init__(self, rule, agg)
        m = rule.model
        assert isinstance(m, ScoreRule)
        self.scale = 1.0
        self.aggregate = "avg" if m.aggregate == "rate" else m.aggregate
        self.op, self.value, self.min_count = _OPS[m.op], m.value, m.min_count
        self.time_sensitive = True


class SpikeEvaluator(Evaluator):
    """Current window's sum against the mean of the trailing ``baseline.windows`` windows: ``ratio`` (current /
    mean) or ``zscore`` ((current - mean) / stddev, stddev floored at ``min_stddev`` or 10 % of the mean, so a perfectly
    regular baseline does not turn a small wobble into a huge z-score). Never
    active on a zero baseline or below ``min_baseline`` / ``min_current``."""

    def __init__(self, rule: Rule, agg: Aggregation):
        super().__init__(rule, agg)
        m = rule.model
        assert isinstance(m, SpikeRule)
        _, self.scale = field_getter(m.field)
        self.m = m

    def stats(self, g: WindowAgg, now: float) -> dict[str, float]:
        """``current``, ``baseline`` (mean), ``stddev``, ``ratio``, ``zscore``, ``threshold``."""
        w = self.window
        lo = w.lo(now)
        cached = g.cache
        if isinstance(cached, tuple) and cached[0] == lo and cached[1] == g.history_version:
            mean, std = cached[2], cached[3]
        else:
            totals = [x / self.scale for x in g.totals_before(lo, w.span, self.m.baseline.windows)]
            mean = sum(totals) / len(totals)
            std = math.sqrt(sum((x - mean) ** 2 for x in totals) / len(totals))
            g.cache = (lo, g.history_version, mean, std)
        current = g.run[0] / self.scale
        floor = self.m.baseline.min_stddev if self.m.baseline.min_stddev is not None else max(abs(mean) * 0.1, 1e-12)
        std_eff = max(std, floor)
        return {
            "current": current,
            "baseline": mean,
            "stddev": std,
            "ratio": current / mean if mean > 0 else 0.0,
            "zscore": (current - mean) / std_eff if mean > 0 else 0.0,
            "threshold": self.m.threshold,
        }

    def check(self, g: WindowAgg, now: float) -> list[tuple[bool, float]]:
        s = self.stats(g, now)
        m = self.m
        stat = s["ratio"] if m.method == "ratio" else s["zscore"]
        ok = s["baseline"] > 0 and s["baseline"] >= m.baseline.min_baseline and s["current"] >= m.min_current
        return [(ok and stat > m.threshold, stat)]

    def values(self, g: WindowAgg, now: float, index: int) -> dict[str, float]:
        return self.stats(g, now)


def make_evaluator(rule: Rule, agg: Aggregation) -> Evaluator:
    """The evaluator of ``rule`` over ``agg``."""
    cls = {
        "budget": BudgetEvaluator,
        "error_rate": ErrorRateEvaluator,
        "threshold": ThresholdEvaluator,
        "spike": SpikeEvaluator,
        "score": ScoreEvaluator,
    }[rule.kind]
    return cls(rule, agg)
