"""The usage report's data model: plain dataclasses, JSON-ready through :meth:`Report.to_dict`.

Units: money is **nano-USD** (``*_nanos``, exact integers from the ledger); renderers show USD with two
decimals. Tokens are counts. Times are unix **seconds** (floats) for alert inputs and ISO-8601 strings in the
report header. ``None`` always means "not reported / source missing", never zero: renderers print ``n/a`` or
"not reported" for it, so a week without exported metrics does not look like a week without commits.

Inputs fed by other components (the lead wires them from the rules engine and the alert state):
:class:`BudgetSpec` (a budget rule: scope matchers, limit, calendar window) and :class:`AlertEvent` (one alert's
lifecycle and its Jira issue).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

__all__ = [
    "Figures",
    "Breakdown",
    "GroupRow",
    "SessionRow",
    "ErrorRow",
    "ToolRow",
    "Series",
    "BudgetSpec",
    "BudgetStatus",
    "AlertEvent",
    "AlertSummary",
    "Report",
    "ratio",
    "pct_change",
]


def ratio(num: float | None, den: float | None) -> float | None:
    """``num / den`` or None when either is missing or ``den`` is 0 (a rate of nothing is not 0 %)."""
    if num is None or den is None or den == 0:
        return None
    return num / den


def pct_change(cur: float | None, prev: float | None) -> float | None:
    """Relative change ``(cur - prev) / prev`` (0.25 = +25 %), None when either side is missing or prev is 0."""
    if cur is None or prev is None or prev == 0:
        return None
    return (cur - prev) / prev


@dataclass
class Figures:
    """The headline numbers of one scope over one period.

    ``records`` counts ledger records (LLM + tool). ``api_calls`` counts LLM calls (successful and failed);
    ``api_errors`` the failed ones; ``calls_without_cost`` successful calls with no cost (``cost_source=none``);
    ``cost_reported_nanos`` / ``cost_computed_nanos`` split the cost by source (reported by the agent / computed from
    relay's price table; the rest of ``cost_nanos`` is metric estimates' and has source ``reported`` too, counted in
    the first), ``calls_cost_computed`` successful calls relay priced itself;
    ``metric_estimates`` records derived from Claude Code's cost/token metrics (one per cost group and export: in
    cost and tokens, not in call counts). ``sessions`` are distinct session ids in the period; ``interactions``
    distinct prompt ids; ``active_users`` distinct ledger users (records without a user are not counted; see
    ``records_without_user``); ``session_seconds`` the summed first-to-last-record spans of the sessions.
    Tool figures: ``tool_calls`` executed tools (rejected ones excluded), ``tool_failures`` executed tools that
    failed, ``decisions_accept``/``decisions_reject`` tool permission decisions. Metric figures (lines of code,
    commits, pull requests) come from Claude Code's metrics and are None when no metrics were exported.
    """

    records: int = 0
    cost_nanos: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    api_calls: int = 0
    api_errors: int = 0
    calls_without_cost: int = 0
    cost_reported_nanos: int = 0
    cost_computed_nanos: int = 0
    calls_cost_computed: int = 0
    metric_estimates: int = 0
    records_without_user: int = 0
    sessions: int = 0
    interactions: int = 0
    active_users: int = 0
    tool_records: int = 0
    tool_calls: int = 0
    tool_failures: int = 0
    decisions_accept: int = 0
    decisions_reject: int = 0
    session_seconds: float = 0.0
    lines_added: int | None = None
    lines_removed: int | None = None
    commits: int | None = None
    pull_requests: int | None = None

    @property
    def total_tokens(self) -> int:
        """Input + output + cache read + cache creation tokens."""
        return self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_creation_tokens

    @property
    def cache_hit_ratio(self) -> float | None:
        """Cache reads over all prompt-side tokens (input + cache read + cache creation), 0..1; None without
        prompt tokens. (Anthropic's ``input_tokens`` excludes cache reads and writes.)"""
        return ratio(self.cache_read_tokens, self.input_tokens + self.cache_read_tokens + self.cache_creation_tokens)

    @property
    def error_rate(self) -> float | None:
        """Failed LLM calls over all LLM calls, 0..1; None without calls."""
        return ratio(self.api_errors, self.api_calls)

    @property
    def tool_success_rate(self) -> float | None:
        """Successful executed tools over executed tools, 0..1; None without tool calls."""
        return ratio(self.tool_calls - self.tool_failures, self.tool_calls)

    @property
    def accept_rate(self) -> float | None:
        """Accepted tool decisions over all decisions, 0..1; None without decisions."""
        return ratio(self.decisions_accept, self.decisions_accept + self.decisions_reject)

    @property
    def cost_per_pr_nanos(self) -> float | None:
        """Cost per pull request in nano-USD; None when PRs were not reported or are 0."""
        return ratio(self.cost_nanos, self.pull_requests)

    @property
    def cost_per_commit_nanos(self) -> float | None:
        """Cost per commit in nano-USD; None when commits were not reported or are 0."""
        return ratio(self.cost_nanos, self.commits)

    @property
    def avg_session_seconds(self) -> float | None:
        """Mean session length (first to last record of the session within the period), seconds."""
        return ratio(self.session_seconds, self.sessions)

    @property
    def has_metrics(self) -> bool:
        """True when Claude Code's metrics (lines of code, commits, PRs) were exported for this period."""
        return self.lines_added is not None or self.commits is not None or self.pull_requests is not None

    def to_dict(self) -> dict[str, Any]:
        """Fields plus derived ratios (``None`` when undefined) and ``cost_usd``."""
        d = asdict(self)
        d.update(
            cost_usd=round(self.cost_nanos / 1e9, 9),
            total_tokens=self.total_tokens,
            cache_hit_ratio=self.cache_hit_ratio,
            error_rate=self.error_rate,
            tool_success_rate=self.tool_success_rate,
            accept_rate=self.accept_rate,
            cost_per_pr_usd=None if self.cost_per_pr_nanos is None else round(self.cost_per_pr_nanos / 1e9, 9),
            avg_session_seconds=self.avg_session_seconds,
        )
        return d


@dataclass
class Breakdown:
    """One row of a cost breakdown (by model, by user): ``key`` is the model/user (``(none)`` when absent,
    ``others`` for the rows beyond top N). ``prev_cost_nanos`` is None when the previous period had no data."""

    key: str
    cost_nanos: int = 0
    prev_cost_nanos: int | None = None
    api_calls: int = 0
    tokens: int = 0
    sessions: int | None = None


@dataclass
class GroupRow:
    """One team/project section (``Report.group_label`` names the label, e.g. ``team.id``)."""

    key: str
    cost_nanos: int = 0
    prev_cost_nanos: int | None = None
    api_calls: int = 0
    api_errors: int = 0
    sessions: int = 0
    active_users: int = 0
    top_model: str | None = None


@dataclass
class SessionRow:
    """A session among the most expensive: cost in nano-USD, ``url`` its Langfuse session page (None when the
    Langfuse project is unknown), ``duration_s`` first to last record within the period."""

    session_id: str
    user: str | None
    cost_nanos: int
    interactions: int
    api_calls: int
    duration_s: float
    url: str | None = None


@dataclass
class ErrorRow:
    """A class of failed LLM calls: ``error_class`` as recorded by the pipeline (e.g. ``rate_limit``,
    ``repeated_529``), ``status_code`` the HTTP status (None for 529 overloads, which Claude Code reports without
    one), ``count`` failed calls."""

    error_class: str
    status_code: int | None
    count: int


@dataclass
class ToolRow:
    """Tool usage of one tool: ``calls`` executed, ``failures`` among them, ``accepts``/``rejects`` decisions."""

    tool: str
    calls: int = 0
    failures: int = 0
    accepts: int = 0
    rejects: int = 0

    @property
    def success_rate(self) -> float | None:
        """Successful over executed calls, None without calls."""
        return ratio(self.calls - self.failures, self.calls)


@dataclass
class Series:
    """Chart data: ``buckets`` labels (days or hours), ``stacks`` maps a model/team (``by``) to nano-USD per
    bucket (top N plus ``others``), ``previous`` the previous period's nano-USD per bucket (None without data)."""

    by: str
    buckets: list[str]
    stacks: dict[str, list[int]]
    previous: list[int] | None = None

    @property
    def totals(self) -> list[int]:
        """Micro-USD per bucket over all stacks."""
        return [sum(v[i] for v in self.stacks.values()) for i in range(len(self.buckets))]


@dataclass(frozen=True)
class BudgetSpec:
    """A budget to report on (fed from the rules engine's budget rules, see ``relay.reports.budgets``).

    ``matchers`` are Alertmanager matcher strings over ledger labels (``team.id="platform"``, ``user=~"a.*"``;
    empty: the whole tenant); ``limit_usd`` USD per window (per group with ``group_by``); ``window`` a calendar
    ``day``/``week``/``month`` in ``timezone`` (IANA), or with ``rolling_s`` the last that many seconds.
    ``group_by`` labels split the budget per group (e.g. ``("user",)``: each user has the limit); ``tenant``
    None: the report's tenant.
    """

    name: str
    limit_usd: float
    window: Literal["day", "week", "month"] = "month"
    matchers: tuple[str, ...] = ()
    timezone: str = "UTC"
    tenant: str | None = None
    rolling_s: float | None = None
    group_by: tuple[str, ...] = ()


@dataclass
class BudgetStatus:
    """A budget's standing at the end of the report period (``as_of``, ISO-8601).

    ``spend_nanos`` from the window start to ``as_of``; ``burn_rate_nanos_per_day`` = spend / elapsed days;
    ``forecast_nanos`` = spend + burn rate × remaining days (linear projection to the window end; a rolling
    window has no end: the forecast is the spend); ``status``: ``ok``, ``forecast_over`` (projected above the
    limit), ``over`` (already above). For a budget with ``group_by``, the figures are those of the group with
    the highest spend (``group``, e.g. ``user="alice"``), ``groups`` the number of groups with spend and
    ``groups_over`` how many of them are over the limit.
    """

    name: str
    scope: str
    window: str
    window_start: str
    window_end: str
    as_of: str
    limit_nanos: int
    spend_nanos: int
    burn_rate_nanos_per_day: float
    forecast_nanos: int
    status: str
    group: str | None = None
    groups: int | None = None
    groups_over: int | None = None

    @property
    def used(self) -> float | None:
        """Spend over limit (1.0 = 100 %)."""
        return ratio(self.spend_nanos, self.limit_nanos)


@dataclass(frozen=True)
class AlertEvent:
    """One alert's lifecycle (fed from the alert state). Times are unix seconds; ``resolved_at`` None while
    still firing; ``jira_key`` the Jira issue opened for it (``jira_opened_at``/``jira_resolved_at`` when the
    issue was created / moved to its resolved state)."""

    alertname: str
    fingerprint: str
    fired_at: float
    labels: dict[str, str] = field(default_factory=dict)
    severity: str = "warning"
    resolved_at: float | None = None
    jira_key: str | None = None
    jira_opened_at: float | None = None
    jira_resolved_at: float | None = None


@dataclass
class AlertSummary:
    """Alerts of the period: ``fired`` alerts that started firing in it, ``resolved`` that resolved in it,
    ``still_firing`` those firing at the period end (``[alertname, severity, fired_at ISO]``), Jira issues opened
    and resolved in the period and still open at its end."""

    fired: int = 0
    resolved: int = 0
    still_firing: list[tuple[str, str, str]] = field(default_factory=list)
    jira_opened: int = 0
    jira_resolved: int = 0
    jira_open: list[str] = field(default_factory=list)


@dataclass
class Report:
    """A usage report for one tenant (optionally narrowed by ``scope`` matchers) over one period.

    ``current``/``previous`` are the headline figures (``previous`` None when the previous period has no data,
    so deltas read "n/a"). ``empty`` is True when the period has no ledger records and no metrics: renderers
    then print a short message instead of tables. ``budgets``/``alerts`` are None when no source was wired.
    ``notes`` are data-quality remarks (calls without cost, records without user, missing sources).
    """

    tenant: str
    kind: str
    period: str
    start: str
    end: str
    timezone: str
    generated_at: str
    current: Figures
    previous: Figures | None
    scope: list[str] = field(default_factory=list)
    late: bool = False
    top_n: int = 5
    by_model: list[Breakdown] = field(default_factory=list)
    by_user: list[Breakdown] = field(default_factory=list)
    group_label: str | None = None
    by_group: list[GroupRow] = field(default_factory=list)
    top_sessions: list[SessionRow] = field(default_factory=list)
    errors: list[ErrorRow] = field(default_factory=list)
    tools: list[ToolRow] = field(default_factory=list)
    series: Series | None = None
    budgets: list[BudgetStatus] | None = None
    alerts: AlertSummary | None = None
    notes: list[str] = field(default_factory=list)
    #: Langfuse scores of the period (``relay.reports.quality.Quality``); None when there are none.
    quality: Any = None
    #: The period is still running: its figures cover it up to ``generated_at`` ("so far").
    partial: bool = False

    @property
    def empty(self) -> bool:
        """No ledger records and no metrics in the period."""
        return self.current.records == 0 and not self.current.has_metrics

    @property
    def noun(self) -> str:
        """``week``, ``day`` or ``month``."""
        return {"weekly": "week", "daily": "day", "monthly": "month"}.get(self.kind, self.kind)

    @property
    def title(self) -> str:
        """``Claude Code weekly report — acme — 2026-W47`` (with the scope when narrowed; ``(so far)`` while the
        period is still running)."""
        scope = f" ({', '.join(self.scope)})" if self.scope else ""
        return f"Claude Code {self.kind} report — {self.tenant}{scope} — {self.period}" + (
            " (so far)" if self.partial else ""
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: every field, derived ratios, and ``usd`` next to nano-USD figures of headlines."""
        d = asdict(self)
        d["current"] = self.current.to_dict()
        d["previous"] = None if self.previous is None else self.previous.to_dict()
        d["empty"] = self.empty
        d["title"] = self.title
        for t, row in zip(d["tools"], self.tools, strict=False):
            t["success_rate"] = row.success_rate
        if self.budgets is not None:
            for b, st in zip(d["budgets"], self.budgets, strict=False):
                b["used"] = st.used
        return d
