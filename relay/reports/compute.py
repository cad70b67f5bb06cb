"""Compute a :class:`~relay.reports.model.Report` from a :class:`~relay.reports.source.ReportSource`.

Per period two grouped queries (the usage cube and the session statistics) plus the metric totals, for the
report period and for the previous period (week-over-week deltas); the rest is small Python over grouped rows.
Budgets (:func:`budget_status`) and alerts (:func:`alert_summary`) are computed from their inputs here too.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from relay.matchers import Matcher, matches_all, parse_matchers
from relay.reports import fmt
from relay.reports.budgets import budget_status
from relay.reports.model import (
    AlertEvent,
    AlertSummary,
    Breakdown,
    BudgetSpec,
    ErrorRow,
    Figures,
    GroupRow,
    Report,
    Series,
    SessionRow,
    ToolRow,
)
from relay.reports.periods import Period, unix_ns
from relay.reports.quality import quality_section
from relay.reports.source import CubeRow, ErrorCell, MetricTotals, Query, ReportSource, SessionStats, ToolCell

__all__ = ["ReportRequest", "compute_report", "figures", "alert_summary", "NONE_KEY", "OTHERS_KEY"]

#: Key of rows whose model/user/group is absent.
NONE_KEY = "(none)"
#: Key of the rows beyond the top N.
OTHERS_KEY = "others"

SessionUrl = Callable[[str, str], "str | None"]


@dataclass(frozen=True)
class ReportRequest:
    """What to report: ``tenant``, ``period``, ``scope`` matcher strings, ``group_by`` breakdown label (None: no
    team/project section), ``chart_by`` (``model`` or a label), ``top_n`` rows per breakdown, ``late`` (posted
    after its time because relay was down)."""

    tenant: str
    period: Period
    scope: tuple[str, ...] = ()
    group_by: str | None = "team.id"
    chart_by: str = "model"
    top_n: int = 5
    late: bool = False


def _query(req: ReportRequest, period: Period, matchers: tuple[Matcher, ...]) -> Query:
    return Query(
        req.tenant,
        period.start_ns,
        period.end_ns,
        matchers,
        req.group_by,
        req.chart_by,
        tuple(b[1] for b in period.buckets()),
    )


def figures(
    cube: Iterable[CubeRow], tools: Iterable[ToolCell], sessions: SessionStats, metrics: MetricTotals
) -> Figures:
    """Headline figures from the grouped rows of one period (see :class:`Figures` for the definitions)."""
    f = Figures()
    for r in cube:
        f.records += r.n
        f.cost_nanos += r.cost_nanos
        f.records_without_user += r.no_user
        f.input_tokens += r.input_tokens
        f.output_tokens += r.output_tokens
        f.cache_read_tokens += r.cache_read_tokens
        f.cache_creation_tokens += r.cache_creation_tokens
        f.api_calls += r.n - r.derived
        f.metric_estimates += r.derived
        f.calls_without_cost += r.no_cost
        f.cost_reported_nanos += r.cost_reported_nanos
        f.cost_computed_nanos += r.cost_computed_nanos
        f.calls_cost_computed += r.computed
        f.api_errors += r.errors
    for t in tools:
        f.records += t.n
        f.records_without_user += t.no_user
        f.tool_records += t.n
        if t.decision == "accept":
            f.decisions_accept += t.n
        elif t.decision == "reject":
            f.decisions_reject += t.n
        if _executed(t):
            f.tool_calls += t.n
            if not t.success:
                f.tool_failures += t.n
    f.sessions = sessions.distinct
    f.interactions = sessions.interactions
    f.active_users = len({g.user for g in sessions.groups if g.user})
    f.session_seconds = sum(g.seconds for g in sessions.groups)
    f.lines_added, f.lines_removed = metrics.lines_added, metrics.lines_removed
    f.commits, f.pull_requests = metrics.commits, metrics.pull_requests
    return f


def _executed(t: ToolCell) -> bool:
    """A tool record that ran (a rejected tool has no result: decision reject / error class ``rejected``)."""
    return t.decision != "reject" and t.error_class != "rejected"


def _top(rows: dict[str, Breakdown], prev: dict[str, int] | None, n: int) -> list[Breakdown]:
    """Rows sorted by cost (desc, then key), the top ``n`` kept and the rest folded into ``others``."""
    for k, b in rows.items():
        b.prev_cost_nanos = None if prev is None else prev.get(k, 0)
    ordered = sorted(rows.values(), key=lambda b: (-b.cost_nanos, b.key))
    if len(ordered) <= n:
        return ordered
    rest = ordered[n:]
    others = Breakdown(
        OTHERS_KEY,
        sum(b.cost_nanos for b in rest),
        None if prev is None else sum(b.prev_cost_nanos or 0 for b in rest),
        sum(b.api_calls for b in rest),
        sum(b.tokens for b in rest),
        None if any(b.sessions is None for b in rest) else sum(b.sessions or 0 for b in rest),
    )
    return ordered[:n] + [others]


def _by(cube: Iterable[CubeRow], attr: str) -> dict[str, Breakdown]:
    out: dict[str, Breakdown] = {}
    for r in cube:
        key = getattr(r, attr) or NONE_KEY
        b = out.setdefault(key, Breakdown(key))
        b.cost_nanos += r.cost_nanos
        b.api_calls += r.n - r.derived
        b.tokens += r.input_tokens + r.output_tokens + r.cache_read_tokens + r.cache_creation_tokens
    return out


def _cost_by(cube: Iterable[CubeRow], attr: str) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for r in cube:
        out[getattr(r, attr) or NONE_KEY] += r.cost_nanos
    return dict(out)


def _groups(cube: list[CubeRow], prev_cube: list[CubeRow] | None, sessions: SessionStats, n: int) -> list[GroupRow]:
    rows: dict[str, GroupRow] = {}
    model_cost: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in cube:
        key = r.group or NONE_KEY
        g = rows.setdefault(key, GroupRow(key))
        g.cost_nanos += r.cost_nanos
        g.api_calls += r.n - r.derived
        g.api_errors += r.errors
        model_cost[key][r.model or NONE_KEY] += r.cost_nanos
    users: dict[str, set[str]] = defaultdict(set)
    for s in sessions.groups:
        key = s.group or NONE_KEY
        g = rows.setdefault(key, GroupRow(key))
        g.sessions += s.sessions
        if s.user:
            users[key].add(s.user)
    prev = None if prev_cube is None else _cost_by(prev_cube, "group")
    for key, g in rows.items():
        g.active_users = len(users[key])
        g.prev_cost_nanos = None if prev is None else prev.get(key, 0)
        if model_cost[key]:
            g.top_model = max(model_cost[key].items(), key=lambda kv: (kv[1], kv[0]))[0]
    ordered = sorted(rows.values(), key=lambda g: (-g.cost_nanos, g.key))
    if len(ordered) <= n:
        return ordered
    rest = ordered[n:]
    others = GroupRow(
        OTHERS_KEY,
        sum(g.cost_nanos for g in rest),
        None if prev is None else sum(g.prev_cost_nanos or 0 for g in rest),
        sum(g.api_calls for g in rest),
        sum(g.api_errors for g in rest),
        sum(g.sessions for g in rest),
        len(set().union(*(users[g.key] for g in rest))),
    )
    return ordered[:n] + [others]


def _series(req: ReportRequest, cube: list[CubeRow], prev_cube: list[CubeRow] | None) -> Series:
    labels = [b[0] for b in req.period.buckets()]
    stacks: dict[str, list[int]] = {}
    for r in cube:
        if r.bucket is None or r.cost_nanos == 0:
            continue
        key = r.chart or NONE_KEY
        stacks.setdefault(key, [0] * len(labels))[r.bucket] += r.cost_nanos
    order = sorted(stacks, key=lambda k: (-sum(stacks[k]), k))
    if len(order) > req.top_n:
        keep, rest = order[: req.top_n], order[req.top_n :]
        others = [sum(stacks[k][i] for k in rest) for i in range(len(labels))]
        stacks = {k: stacks[k] for k in keep}
        stacks[OTHERS_KEY] = others
    else:
        stacks = {k: stacks[k] for k in order}
    previous = None
    if prev_cube is not None:
        n_prev = len(req.period.previous().buckets())
        previous = [0] * n_prev
        for r in prev_cube:
            if r.bucket is not None and r.bucket < n_prev:
                previous[r.bucket] += r.cost_nanos
    return Series(req.chart_by, labels, stacks, previous)


def _errors(cells: Iterable[ErrorCell]) -> list[ErrorRow]:
    rows = [ErrorRow(e.error_class or "unknown", e.status_code, e.n) for e in cells]
    return sorted(rows, key=lambda e: (-e.count, e.error_class, e.status_code or 0))


def _tools(cells: Iterable[ToolCell]) -> list[ToolRow]:
    rows: dict[str, ToolRow] = {}
    for c in cells:
        t = rows.setdefault(c.tool or NONE_KEY, ToolRow(c.tool or NONE_KEY))
        if _executed(c):
            t.calls += c.n
            t.failures += 0 if c.success else c.n
        if c.decision == "accept":
            t.accepts += c.n
        elif c.decision == "reject":
            t.rejects += c.n
    return sorted(rows.values(), key=lambda t: (-(t.calls + t.rejects), t.tool))


def alert_summary(
    events: Iterable[AlertEvent], tenant: str, start_s: float, end_s: float, scope: Sequence[Matcher] = ()
) -> AlertSummary:
    """Alerts of ``[start_s, end_s)`` (unix seconds) for ``tenant`` (an alert with a ``tenant`` label of another
    tenant is skipped) within ``scope`` (matchers on the alert's labels)."""
    s = AlertSummary()
    for e in events:
        if e.labels.get("tenant", tenant) != tenant or not matches_all(scope, e.labels):
            continue
        if start_s <= e.fired_at < end_s:
            s.fired += 1
        if e.resolved_at is not None and start_s <= e.resolved_at < end_s:
            s.resolved += 1
        if e.fired_at < end_s and (e.resolved_at is None or e.resolved_at >= end_s):
            when = datetime.fromtimestamp(e.fired_at, UTC).isoformat(timespec="seconds")
            s.still_firing.append((e.alertname, e.severity, when))
        if e.jira_key and e.jira_opened_at is not None:
            if start_s <= e.jira_opened_at < end_s:
                s.jira_opened += 1
            if e.jira_resolved_at is not None and start_s <= e.jira_resolved_at < end_s:
                s.jira_resolved += 1
            if e.jira_opened_at < end_s and (e.jira_resolved_at is None or e.jira_resolved_at >= end_s):
                s.jira_open.append(e.jira_key)
    s.still_firing.sort(key=lambda a: (a[2], a[0]))
    s.jira_open.sort()
    return s


def _notes(req: ReportRequest, cur: Figures, prev: Figures | None, groups: list[GroupRow]) -> list[str]:
    notes: list[str] = []
    noun = req.period.noun
    if prev is None:
        notes.append(f"No usage recorded in the previous {noun}: changes are n/a.")
    if not cur.has_metrics:
        notes.append(
            "Claude Code metrics were not exported (OTEL_METRICS_EXPORTER): lines of code, commits and "
            "pull requests are not reported."
        )
    if cur.tool_records == 0:
        notes.append(f"No tool events recorded this {noun}: tool figures are not available.")
    if cur.calls_without_cost:
        notes.append(
            f"{cur.calls_without_cost:,} LLM calls have no known cost (no reported cost and a model "
            "missing from relay's price table); their cost is not included."
        )
    if cur.calls_cost_computed:
        notes.append(
            f"{cur.calls_cost_computed:,} LLM calls had no reported cost and were priced from relay's price "
            f"table: {fmt.usd(cur.cost_computed_nanos)} of {fmt.usd(cur.cost_nanos)} (cost source computed)."
        )
    if cur.metric_estimates:
        notes.append(
            f"{cur.metric_estimates:,} usage entries were derived from Claude Code's cost metrics "
            "(sessions without per-call events): included in cost and tokens, not in call counts."
        )
    if cur.records_without_user:
        notes.append(
            f"{cur.records_without_user:,} records carry no user identity (set enduser.id in OTEL_RESOURCE_ATTRIBUTES)."
        )
    if req.group_by and groups and all(g.key == NONE_KEY for g in groups):
        notes.append(f"No record carries the {req.group_by} label: no per-{req.group_by} breakdown.")
    return notes


def compute_report(
    source: ReportSource,
    req: ReportRequest,
    *,
    budgets: Sequence[BudgetSpec] | None = None,
    alerts: Sequence[AlertEvent] | None = None,
    session_url: SessionUrl | None = None,
    now: datetime | None = None,
) -> Report:
    """The report of ``req`` (synchronous; run it in a worker thread).

    ``budgets`` None: no budget section (no rules wired); ``alerts`` None: no alert section. ``session_url``
    maps ``(tenant, session_id)`` to a Langfuse session page (None when unknown). ``now`` (aware) bounds the
    budgets' ``as_of`` for a period still running and stamps ``generated_at``; for a period still running
    (``Report.partial``) the previous period is cut at the same elapsed time, so changes compare like for like. Raises ``ValueError`` on bad
    scope matchers.
    """
    now = now or datetime.now(UTC)
    matchers = tuple(parse_matchers(list(req.scope)))
    period, prev_period = req.period, req.period.previous()
    q, pq = _query(req, period, matchers), _query(req, prev_period, matchers)
    partial = period.end > now
    if partial:  # like for like: the previous period up to the same point ("this week so far" vs last week's)
        elapsed = max(unix_ns(now) - period.start_ns, 0)
        q = replace(q, end_ns=period.start_ns + elapsed)
        pq = replace(pq, end_ns=min(pq.end_ns, prev_period.start_ns + elapsed))
    cube, tools, sessions = source.usage_cube(q), source.tool_cube(q), source.session_stats(q, req.top_n)
    cur = figures(cube, tools, sessions, source.metric_totals(q))
    prev_cube = source.usage_cube(pq)
    prev: Figures | None = figures(
        prev_cube, source.tool_cube(pq), source.session_stats(pq, 0), source.metric_totals(pq)
    )
    if prev.records == 0 and not prev.has_metrics:  # type: ignore[union-attr]
        prev, prev_cube = None, None  # type: ignore[assignment]
    tz = period.tz
    report = Report(
        tenant=req.tenant,
        kind=period.kind,
        period=period.label,
        start=period.start.isoformat(),
        end=period.end.isoformat(),
        timezone=str(tz),
        generated_at=now.astimezone(tz).isoformat(timespec="seconds"),
        current=cur,
        previous=prev,
        scope=list(req.scope),
        late=req.late,
        top_n=req.top_n,
        group_label=req.group_by,
        partial=partial,
    )
    if report.empty:
        report.notes = [f"No Claude Code usage was recorded for {req.tenant} in {period.label}."]
        if budgets is not None:
            report.budgets = budget_status(source, req.tenant, budgets, min(period.end_ns, unix_ns(now)), req.scope)
        if alerts is not None:
            report.alerts = alert_summary(alerts, req.tenant, period.start_ns / 1e9, period.end_ns / 1e9, matchers)
        return report
    user_sessions: dict[str, int] = defaultdict(int)
    for g in sessions.groups:
        user_sessions[g.user or NONE_KEY] += g.sessions
    by_user = _by(cube, "user")
    for k, b in by_user.items():
        b.sessions = user_sessions.get(k, 0)
    report.by_model = _top(_by(cube, "model"), None if prev_cube is None else _cost_by(prev_cube, "model"), req.top_n)
    report.by_user = _top(by_user, None if prev_cube is None else _cost_by(prev_cube, "user"), req.top_n)
    if req.group_by:
        report.by_group = _groups(cube, prev_cube, sessions, req.top_n)
    report.top_sessions = [
        SessionRow(
            s.session_id,
            s.user,
            s.cost_nanos,
            s.interactions,
            s.api_calls,
            s.seconds,
            session_url(req.tenant, s.session_id) if session_url else None,
        )
        for s in sessions.top
    ]
    report.errors = _errors(source.error_cube(q)) if cur.api_errors else []
    report.tools = _tools(tools)
    report.series = _series(req, cube, prev_cube)
    if budgets is not None:
        report.budgets = budget_status(source, req.tenant, budgets, min(period.end_ns, unix_ns(now)), req.scope)
    if alerts is not None:
        report.alerts = alert_summary(alerts, req.tenant, period.start_ns / 1e9, period.end_ns / 1e9, matchers)
    report.notes = _notes(req, cur, prev, report.by_group)
    conn = getattr(source, "conn", None)
    if conn is not None:  # the SQLite source: the ledger's score table is in the same database
        report.quality = quality_section(
            conn, req.tenant, period.start_ns, period.end_ns, prev_period.start_ns, matchers, req.top_n, session_url
        )
    return report
