"""The YAML schema of relay's rule files, as pydantic models (unknown keys are errors), and ``RulesConfig`` (the
``rules:`` section of ``config.yaml``).

A rule file is Prometheus-shaped (https://prometheus.io/docs/prometheus/latest/configuration/alerting_rules/)::

    groups:
      - name: budgets
        interval: 1m                     # periodic evaluation (default: rules.evaluation_interval)
        rules:
          - alert: TeamMonthlyBudget
            kind: budget                 # budget | error_rate | threshold | spike | score
            matchers: ['kind="llm"']     # label matchers on the ledger's labels (UsageRecord.label_set)
            group_by: [team.id]          # plus ``tenant``, always
            limit_usd: 500
            window: {calendar: month, timezone: Europe/Berlin}
            thresholds: [{percent: 80, severity: warning}, {percent: 100, severity: critical}]
            for: 0s
            labels: {team: platform}
            annotations: {summary: "…{{ values.spend | usd }}…"}

Kinds and their fields: :class:`BudgetRule`, :class:`ErrorRateRule`, :class:`ThresholdRule`, :class:`SpikeRule`,
:class:`ScoreRule`.
Durations are Go/Prometheus strings (``30s``, ``5m``, ``1h30m``, ``7d``, ``2w``) or numbers of seconds; money is
USD; percentages are percent (80 = 80 %); ratios are 0..1.
"""

from __future__ import annotations

import re
import zoneinfo
from typing import Annotated, Any, Literal, get_args

from pydantic import BeforeValidator, ConfigDict, Field, field_validator, model_validator

from relay.config_types import _Model, parse_duration
from relay.usage.score_record import SCORE_KIND  # the kind of score records (re-exported)

__all__ = [
    "RulesConfig",
    "RuleFileModel",
    "RuleGroupModel",
    "RuleModel",
    "BudgetRule",
    "ErrorRateRule",
    "ThresholdRule",
    "SpikeRule",
    "ScoreRule",
    "ScoreMatch",
    "SCORE_KIND",
    "WindowSpec",
    "BudgetThreshold",
    "ForecastSpec",
    "ErrorSpec",
    "BaselineSpec",
    "RULE_KINDS",
    "SEVERITIES",
    "FIELDS",
    "AGGREGATES",
    "RESERVED_LABELS",
    "RETRIES_EXHAUSTED_KIND",
    "parse_rule_duration",
    "format_duration",
    "VALUE_NAMES",
]

#: Severities an alert may carry (``severity`` label); they select the colour of a Slack message.
SEVERITIES = ("info", "warning", "critical")
#: Labels the engine sets itself; ``group_by`` and rule ``labels`` may not use them.
RESERVED_LABELS = ("alertname", "tenant", "threshold")
#: The ``UsageRecord.kind`` of a record that marks Claude Code's ``api_retries_exhausted`` event (one request
#: that gave up after its retries; Claude Code docs "Events", https://code.claude.com/docs/en/monitoring-usage).
#: It carries no cost and no tokens.
RETRIES_EXHAUSTED_KIND = "retries_exhausted"
#: Aggregates of a threshold rule; ``pNN`` are quantiles (nearest rank).
AGGREGATES = ("count", "sum", "avg", "min", "max", "p50", "p90", "p95", "p99")

_NAME_RE = r"^[A-Za-z_][A-Za-z0-9_:.\-]*$"
_LABEL_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


#: Rule durations parse like every other duration of relay's config (Prometheus syntax, e.g. ``1h30m``).
parse_rule_duration = parse_duration


def format_duration(seconds: float) -> str:
    """``5400`` → ``1h30m``; ``604800`` → ``7d``; ``0.5`` → ``500ms``; ``0`` → ``0s`` (parsed back by
    :func:`parse_rule_duration`)."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    out, rest = "", round(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            out += f"{rest // size}{unit}"
            rest %= size
    return out or "0s"


RuleDuration = Annotated[float, BeforeValidator(parse_rule_duration)]

#: Ledger figures a threshold or spike rule aggregates (``records`` counts them; ``total_tokens`` sums every type).
LedgerField = Literal[
    "records",
    "cost_usd",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
    "total_tokens",
    "duration_ms",
    "ttft_ms",
]
#: The ledger fields of ``LedgerField``, as a tuple.
FIELDS: tuple[str, ...] = get_args(LedgerField)


class RulesConfig(_Model):
    """``rules:`` in ``config.yaml``: which rule files to load and how often to evaluate them.

    ``files`` are paths or globs (``rules/*.yaml``, ``**`` allowed), relative to the config file's directory; a
    glob that matches nothing is fine, a plain path that does not exist is an error. ``evaluation_interval`` is
    the default periodic evaluation of every group (records are also evaluated as they arrive);
    ``resend_interval`` re-sends still-firing alerts to the dispatcher (Prometheus' ``resend_delay`` idea);
    ``resolved_retention`` keeps resolved alerts in ``/api/v1/alerts`` and the state table; ``watch`` reloads the
    files when they change (polling every ``watch_interval``), in addition to SIGHUP and ``POST /-/reload``.
    """

    files: list[str] = []
    evaluation_interval: RuleDuration = 10.0
    resend_interval: RuleDuration = 60.0
    resolved_retention: RuleDuration = 3600.0
    watch: bool = True
    watch_interval: RuleDuration = 1.0

    @field_validator("evaluation_interval", "watch_interval")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("must be > 0")
        return v


class WindowSpec(_Model):
    """The time window a rule aggregates over: ``rolling`` (the last N seconds, e.g. ``1h``) or a ``calendar``
    period (``day``, ``week`` starting Monday, ``month``) aligned in ``timezone`` (IANA name). A plain duration
    string is shorthand for ``{rolling: …}``."""

    rolling: RuleDuration | None = None
    calendar: Literal["day", "week", "month"] | None = None
    timezone: str = "UTC"

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        if isinstance(v, (str, int, float)) and not isinstance(v, bool):
            return {"rolling": v}
        return v

    @model_validator(mode="after")
    def _one(self) -> WindowSpec:
        if (self.rolling is None) == (self.calendar is None):
            raise ValueError("set exactly one of 'rolling' (e.g. 1h) or 'calendar' (day, week, month)")
        if self.rolling is not None and self.rolling < 1:
            raise ValueError("rolling: must be at least 1s")
        if self.rolling is not None and "timezone" in self.model_fields_set:
            raise ValueError("timezone: only applies to calendar windows")
        return self

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {v!r} (use an IANA name such as Europe/Berlin or UTC)") from None
        return v

    def describe(self) -> str:
        """Human description: ``last 1h`` or ``month (Europe/Berlin)``."""
        if self.rolling is not None:
            return f"last {format_duration(self.rolling)}"
        return f"{self.calendar} ({self.timezone})"


Severity = Literal["info", "warning", "critical"]


class _RuleBase(_Model):
    """Fields every rule kind has. ``alert`` is the ``alertname``; ``matchers`` select ledger records by their
    labels (``=``, ``!=``, ``=~``, ``!~``; see ``relay.matchers``); ``group_by`` names labels whose values
    split the rule into one alert per group (``tenant`` is always added: tenants' data never mix); ``for`` is how
    long the condition must hold before the alert fires; ``labels`` are static labels added to the alert;
    ``annotations`` are Jinja2 templates (``summary``, ``description``, ``runbook_url``…) rendered with ``labels``,
    ``values``, ``value`` and ``rule``."""

    alert: str = Field(pattern=_NAME_RE, max_length=200)
    matchers: list[str] = []
    group_by: list[str] = []
    for_: RuleDuration = Field(0.0, alias="for")
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("group_by")
    @classmethod
    def _group_by(cls, v: list[str]) -> list[str]:
        for name in v:
            if not _LABEL_RE.match(name):
                raise ValueError(f"{name!r} is not a label name")
            if name in RESERVED_LABELS or name == "severity":
                raise ValueError(f"{name!r} is set by the engine and cannot be grouped by")
        if len(set(v)) != len(v):
            raise ValueError("repeated label")
        return v

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        for name, value in v.items():
            if not _LABEL_RE.match(name):
                raise ValueError(f"{name!r} is not a label name")
            if name in RESERVED_LABELS:
                raise ValueError(f"{name!r} is set by the engine")
            if name == "severity" and value not in SEVERITIES:
                raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}")
        return v

    @field_validator("labels", mode="before")
    @classmethod
    def _stringify(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {
                k: (str(x).lower() if isinstance(x, bool) else str(x)) if isinstance(x, (int, float, bool)) else x
                for k, x in v.items()
            }
        return v


class BudgetThreshold(_Model):
    """One threshold of a budget: ``percent`` of the limit (e.g. 80) at which its own alert fires, with its
    ``severity``."""

    percent: float = Field(gt=0, le=1000)
    severity: Severity = "warning"


class ForecastSpec(_Model):
    """Projected-overrun alert of a calendar budget: fires when ``spend / elapsed × window length`` (a linear
    projection to the window's end) exceeds the limit, once ``min_elapsed`` of the window has passed (default: a
    tenth of it)."""

    enabled: bool = True
    min_elapsed: RuleDuration | None = None
    severity: Severity = "warning"


class BudgetRule(_RuleBase):
    """``kind: budget``: spend in USD (the records' ``cost_usd``) over a calendar or rolling window against
    ``limit_usd``. Each threshold is its own alert, labelled ``threshold="<percent>"``; the forecast alert is
    labelled ``threshold="forecast"``. Values: ``spend``, ``limit``, ``percent`` (spend/limit in percent),
    ``threshold`` (USD at the threshold), ``threshold_percent``, ``forecast``, ``projected_exceeded_at``,
    ``window_start``, ``window_end`` (unix seconds).

    ``enforce`` (optional) makes the budget stop spend, not only report it: agents' hooks ask relay before a
    prompt or tool call (``relay.hooks``) and, once the group's spend has reached ``limit_usd``, ``block`` refuses
    it (naming the budget, the spend and when the window resets) while ``warn`` lets it through with that
    warning. Unset: the budget only alerts."""

    kind: Literal["budget"]
    limit_usd: float = Field(gt=0)
    window: WindowSpec
    thresholds: list[BudgetThreshold] = Field(
        default_factory=lambda: [BudgetThreshold(percent=100, severity="critical")]
    )
    forecast: ForecastSpec | None = None
    enforce: Literal["block", "warn"] | None = None

    @field_validator("thresholds")
    @classmethod
    def _unique(cls, v: list[BudgetThreshold]) -> list[BudgetThreshold]:
        if not v:
            raise ValueError("at least one threshold is needed")
        pcts = [t.percent for t in v]
        if len(set(pcts)) != len(pcts):
            raise ValueError("each percent may appear once")
        return v

    @model_validator(mode="after")
    def _forecast(self) -> BudgetRule:
        if self.forecast is not None and self.forecast.enabled and self.window.calendar is None:
            raise ValueError("forecast: needs a calendar window (a rolling window has no end to project to)")
        return self


class ErrorSpec(_Model):
    """Which calls count and which of them count as failures, for an ``error_rate`` rule.

    ``kind``: the calls (``llm`` API calls or ``tool`` calls); a call failed when ``success`` is false. Optional
    filters narrow the failures: ``status_codes`` (e.g. ``[429, 529]``; 529 also matches failures without a status
    code whose ``error_class`` is ``overloaded``, since Claude Code sends none for 529 — observed in Claude Code's
    exports, ``tests/fixtures/claude-code/``), ``error_classes`` (``overloaded``, ``rate_limit``, ``server_error``,
    ``client_error``, ``timeout``, ``connection_error``, ``unknown``; tools: the tool's error type or
    ``rejected``), and ``matchers`` on the failed records. Status codes and classes combine with OR, matchers
    with AND. ``retries_exhausted: true`` counts ledger records of kind ``retries_exhausted`` (requests that gave
    up after all retries) as the failures instead, against all ``llm`` calls.
    """

    kind: Literal["llm", "tool"] = "llm"
    status_codes: list[int] = []
    error_classes: list[str] = []
    matchers: list[str] = []
    retries_exhausted: bool = False

    @model_validator(mode="after")
    def _check(self) -> ErrorSpec:
        if self.retries_exhausted and self.kind != "llm":
            raise ValueError("retries_exhausted: only applies to kind llm")
        return self


class ErrorRateRule(_RuleBase):
    """``kind: error_rate``: failed calls against all calls over ``window``. Fires when ``total >= min_count``
    and ``failed / total > ratio`` (when ``ratio`` is set) and ``failed >= count`` (when ``count`` is set); at
    least one of them is needed. Values: ``ratio``, ``failed``, ``total``, ``min_count``, ``threshold`` (the ratio
    threshold), ``count_threshold``."""

    kind: Literal["error_rate"]
    errors: ErrorSpec = ErrorSpec()
    window: WindowSpec
    ratio: float | None = Field(None, ge=0, le=1)
    count: int | None = Field(None, ge=1)
    min_count: int = Field(10, ge=1)

    @model_validator(mode="after")
    def _check(self) -> ErrorRateRule:
        if self.ratio is None and self.count is None:
            raise ValueError("set 'ratio' (failed/total above it) and/or 'count' (at least this many failures)")
        return self


class ThresholdRule(_RuleBase):
    """``kind: threshold``: ``aggregate`` of ``field`` over ``window``, compared with ``op`` to ``value``, once at
    least ``min_count`` records carry the field (e.g. one session's cost in the last hour: ``group_by: [session]``,
    ``field: cost_usd``, ``aggregate: sum``; p95 time to first token: ``field: ttft_ms``, ``aggregate: p95``).
    Values: ``value``, ``threshold``, ``count``."""

    kind: Literal["threshold"]
    field: LedgerField
    aggregate: Literal["count", "sum", "avg", "min", "max", "p50", "p90", "p95", "p99"] = "sum"
    window: WindowSpec
    op: Literal[">", ">=", "<", "<="] = ">"
    value: float
    min_count: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _check(self) -> ThresholdRule:
        if self.field == "records" and self.aggregate not in ("count", "sum"):
            raise ValueError("aggregate: 'records' can only be counted (count or sum)")
        return self


class BaselineSpec(_Model):
    """The trailing baseline of a spike rule: the ``windows`` windows (each as long as the rule's window) right
    before the current one. ``min_baseline``: the baseline mean below which the rule is not evaluated;
    ``min_stddev``: floor of the baseline's standard deviation for z-scores (default: 10 % of the mean, so a
    perfectly regular baseline does not turn a small wobble into a huge z-score)."""

    windows: int = Field(6, ge=1, le=1000)
    min_baseline: float = Field(0.0, ge=0)
    min_stddev: float | None = Field(None, gt=0)


class SpikeRule(_RuleBase):
    """``kind: spike``: the sum of ``field`` in the current rolling window against the trailing baseline windows.
    ``method: ratio`` fires when ``current / mean(baseline) > threshold``; ``zscore`` when
    ``(current - mean) / stddev > threshold``. ``min_current`` ignores small absolute values. Values: ``current``,
    ``baseline`` (mean), ``stddev``, ``ratio``, ``zscore``, ``threshold``."""

    kind: Literal["spike"]
    field: LedgerField = "cost_usd"
    window: WindowSpec
    baseline: BaselineSpec = BaselineSpec()
    method: Literal["ratio", "zscore"] = "ratio"
    threshold: float = Field(gt=0)
    min_current: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> SpikeRule:
        if self.window.rolling is None:
            raise ValueError("window: a spike rule needs a rolling window (e.g. 1h)")
        if self.method == "zscore" and self.baseline.windows < 2:
            raise ValueError("baseline.windows: a z-score needs at least 2 baseline windows")
        return self


class ScoreMatch(_Model):
    """Which scores count as hits for ``aggregate: rate``: ``equals`` a value (a categorical label such as
    ``failed``, or a number such as ``0`` for a thumbs-down), or ``op`` ``value`` on numeric scores."""

    equals: str | float | None = None
    op: Literal[">", ">=", "<", "<="] | None = None
    value: float | None = None

    @model_validator(mode="after")
    def _check(self) -> ScoreMatch:
        if (self.equals is None) == (self.op is None):
            raise ValueError("set either 'equals' or 'op' with 'value'")
        if self.op is not None and self.value is None:
            raise ValueError("'op' needs 'value'")
        return self


class ScoreRule(_RuleBase):
    """``kind: score``: Langfuse scores named ``score`` (relay's own, e.g. ``tool_accept_rate``, or posted by apps,
    e.g. ``thumbs``; the ledger's score table) over ``window``, grouped by any label of the scored trace or session
    (``team.id``, ``user``…; also ``score_source``: ``relay``/``api``). ``aggregate`` of the numeric values
    (``avg`` default, ``sum``, ``min``, ``max``, ``count``, ``p50``…``p99``) or ``rate``: the share of scores that
    ``match`` (e.g. ``outcome`` ``equals: failed``); compared with ``op`` to ``value`` once ``min_count`` scores
    are in the window. Values: ``value``, ``threshold``, ``count``."""

    kind: Literal["score"]
    score: str = Field(min_length=1, max_length=200)
    aggregate: Literal["count", "sum", "avg", "min", "max", "p50", "p90", "p95", "p99", "rate"] = "avg"
    match: ScoreMatch | None = None
    window: WindowSpec
    op: Literal[">", ">=", "<", "<="] = "<"
    value: float
    min_count: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _check(self) -> ScoreRule:
        if (self.aggregate == "rate") != (self.match is not None):
            raise ValueError("'match' goes with 'aggregate: rate' (the share of scores that match)")
        return self


#: One rule of any kind.
RuleModel = BudgetRule | ErrorRateRule | ThresholdRule | SpikeRule | ScoreRule
#: ``kind`` → model class.
RULE_KINDS: dict[str, type[_RuleBase]] = {
    "budget": BudgetRule,
    "error_rate": ErrorRateRule,
    "threshold": ThresholdRule,
    "spike": SpikeRule,
    "score": ScoreRule,
}


class RuleGroupModel(_Model):
    """A named group of rules with an optional periodic evaluation ``interval``. ``rules`` are validated one by
    one by ``relay.alerting.rules.load`` (so errors name the rule), hence raw mappings here."""

    name: str = Field(min_length=1, max_length=200)
    interval: RuleDuration | None = None
    rules: list[dict[str, Any]] = []

    @field_validator("interval")
    @classmethod
    def _positive(cls, v: float | None) -> float | None:
        if v is not None and v <= 0:
            raise ValueError("must be > 0")
        return v


class RuleFileModel(_Model):
    """A rule file: ``groups`` (raw mappings, validated one by one)."""

    groups: list[dict[str, Any]] = []


#: The names in ``Alert.values`` per rule kind (what templates and messages can show). Times are unix seconds,
#: money USD, ``percent`` in percent, ratios 0..1.
VALUE_NAMES: dict[str, tuple[str, ...]] = {
    "budget": (
        "spend",
        "limit",
        "percent",
        "threshold",
        "threshold_percent",
        "forecast",
        "projected_exceeded_at",
        "window_start",
        "window_end",
    ),
    "error_rate": ("ratio", "failed", "total", "min_count", "threshold", "count_threshold"),
    "threshold": ("value", "threshold", "count"),
    "spike": ("current", "baseline", "stddev", "ratio", "zscore", "threshold"),
    "score": ("value", "threshold", "count"),
}
