"""The report's numbers over a ledger filled with generated multi-user weeks (through the real SQLite ledger
store) equal sums computed independently from the generated records; missing sources read "not reported"."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from relay.reports.compute import ReportRequest, compute_report
from relay.reports.model import AlertEvent, BudgetSpec
from relay.reports.periods import Period, last_complete, parse_period
from relay.reports.render_md import render_markdown
from relay.reports.sql import SqliteReportSource, open_readonly
from relay.usage.metrics import MetricPoint
from tests.test_report_support import (
    BERLIN,
    MODELS,
    Ledger,
    cost_by,
    expected_figures,
    expected_metrics,
    generate_week,
    in_range,
    ns,
    week_start,
    write_ledger,
)

AFTER = datetime(2026, 12, 15, tzinfo=UTC)  # "now" for reports of November: every period is complete


def _build(path) -> Ledger:
    led = Ledger()
    for w in (44, 45, 46, 47, 48):
        generate_week(led, week_start(2026, w), seed=w)
    generate_week(led, week_start(2026, 47), tenant="other", seed=99, prefix="o")  # never in acme's figures
    generate_week(led, week_start(2026, 47), tenant="beta", seed=5, tools=False, metrics=False, prefix="b")
    # gamma exports metrics only: cost/token usage of one session, derived into the ledger by the store.
    t0 = ns(week_start(2026, 47) + timedelta(days=2, hours=10))
    attrs = {"session.id": "g-1", "model": "claude-sonnet-4-5", "user.id": "gina"}
    for i, (cost, inp) in enumerate(((0.25, 1000), (0.5, 3000))):
        t = t0 + i * 60_000_000_000
        led.points.append(
            MetricPoint(
                "gamma",
                "claude_code.cost.usage",
                "c",
                t - 60_000_000_000,
                t,
                cost,
                1,
                "USD",
                json.dumps(attrs, sort_keys=True),
                "gina",
                {},
            )
        )
        a = dict(attrs, type="input")
        led.points.append(
            MetricPoint(
                "gamma",
                "claude_code.token.usage",
                "t",
                t - 60_000_000_000,
                t,
                float(inp),
                1,
                "tokens",
                json.dumps(a, sort_keys=True),
                "gina",
                {},
            )
        )
    write_ledger(path, led)
    return led


@pytest.fixture(scope="module")
def ledger(tmp_path_factory):
    path = tmp_path_factory.mktemp("ledger") / "relay.db"
    led = _build(path)
    conn = open_readonly(path)
    yield led, SqliteReportSource(conn)
    conn.close()


def _report(source, tenant="acme", week=47, **kw):
    budgets = kw.pop("budgets", None)
    alerts = kw.pop("alerts", None)
    req = ReportRequest(tenant, Period("weekly", date.fromisocalendar(2026, week, 1), BERLIN), **kw)
    return compute_report(source, req, budgets=budgets, alerts=alerts, now=AFTER)


def _week(week: int) -> tuple[datetime, datetime]:
    start = week_start(2026, week)
    return start, week_start(2026, week + 1)


def test_weekly_headlines_equal_independent_sums(ledger):
    led, source = ledger
    r = _report(source)
    for week, figs in ((47, r.current), (46, r.previous)):
        lo, hi = _week(week)
        recs = in_range(led.records, lo, hi)
        assert recs, "the generator must fill the week"
        for name, value in expected_figures(recs).items():
            assert getattr(figs, name) == pytest.approx(value), (week, name)
        m = expected_metrics(led.points, lo, hi)
        assert (figs.lines_added, figs.lines_removed, figs.commits, figs.pull_requests) == (
            m["lines_added"],
            m["lines_removed"],
            m["commits"],
            m["pull_requests"],
        )
    c = r.current
    assert c.cache_hit_ratio == pytest.approx(
        c.cache_read_tokens / (c.input_tokens + c.cache_read_tokens + c.cache_creation_tokens)
    )
    assert c.cost_per_pr_nanos == pytest.approx(c.cost_nanos / c.pull_requests)
    assert c.calls_without_cost == 0 and c.metric_estimates == 0
    assert not r.empty and r.period == "2026-W47"


def test_breakdowns_equal_independent_sums(ledger):
    led, source = ledger
    r = _report(source, top_n=5)
    lo, hi = _week(47)
    recs = in_range(led.records, lo, hi)
    prev = in_range(led.records, *_week(46))

    by_model = cost_by(recs, lambda x: x.model)
    assert {b.key: b.cost_nanos for b in r.by_model} == by_model  # 3 models ≤ top 5: no "others"
    prev_model = cost_by(prev, lambda x: x.model)
    assert {b.key: b.prev_cost_nanos for b in r.by_model} == {k: prev_model.get(k, 0) for k in by_model}
    assert {b.key: b.api_calls for b in r.by_model} == Counter(x.model for x in recs if x.kind == "llm")

    users = sorted(cost_by(recs, lambda x: x.user).items(), key=lambda kv: (-kv[1], kv[0]))
    assert [(b.key, b.cost_nanos) for b in r.by_user] == users[:5] + [("others", sum(v for _, v in users[5:]))]
    sessions_of = defaultdict(set)
    for x in recs:
        sessions_of[x.user or "(none)"].add(x.session_id)
    assert {b.key: b.sessions for b in r.by_user[:5]} == {k: len(sessions_of[k]) for k, _ in users[:5]}

    teams = cost_by(recs, lambda x: x.labels.get("team.id"))
    assert {g.key: g.cost_nanos for g in r.by_group} == teams
    for g in r.by_group:
        team = None if g.key == "(none)" else g.key
        mine = [x for x in recs if x.labels.get("team.id") == team]
        assert g.sessions == len({x.session_id for x in mine})
        assert g.active_users == len({x.user for x in mine if x.user})
        assert g.api_errors == sum(1 for x in mine if x.kind == "llm" and not x.success)

    per_session = defaultdict(int)
    for x in recs:
        per_session[x.session_id] += x.cost_nanos
    top = sorted(per_session.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    assert [(s.session_id, s.cost_nanos) for s in r.top_sessions] == top

    errors = Counter((x.error_class, x.status_code) for x in recs if x.kind == "llm" and not x.success)
    assert {(e.error_class, e.status_code): e.count for e in r.errors} == errors
    assert [e.count for e in r.errors] == sorted(errors.values(), reverse=True)

    tools = defaultdict(lambda: [0, 0, 0, 0])
    for x in recs:
        if x.kind == "tool":
            t = tools[x.tool_name]
            if x.decision != "reject":
                t[0] += 1
                t[1] += not x.success
            t[2] += x.decision == "accept"
            t[3] += x.decision == "reject"
    assert {t.tool: [t.calls, t.failures, t.accepts, t.rejects] for t in r.tools} == dict(tools)


def test_chart_series_per_local_day_by_model_and_previous_week(ledger):
    led, source = ledger
    r = _report(source)
    lo, hi = _week(47)
    day_cost = defaultdict(lambda: [0] * 7)
    prev_days = [0] * 7
    for x in in_range(led.records, lo, hi):
        if x.kind == "llm":
            day = (datetime.fromtimestamp(x.time_ns / 1e9, BERLIN).date() - lo.date()).days
            day_cost[x.model][day] += x.cost_nanos
    plo, phi = _week(46)
    for x in in_range(led.records, plo, phi):
        prev_days[(datetime.fromtimestamp(x.time_ns / 1e9, BERLIN).date() - plo.date()).days] += x.cost_nanos
    s = r.series
    assert s.buckets == ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    assert s.stacks == {m: day_cost[m] for m in s.stacks} and set(s.stacks) == set(day_cost)
    assert s.previous == prev_days
    assert sum(s.totals) == r.current.cost_nanos


def test_chart_by_team_stacks_team_costs(ledger):
    led, source = ledger
    r = _report(source, chart_by="team.id")
    teams = cost_by(in_range(led.records, *_week(47)), lambda x: x.labels.get("team.id"))
    assert {k: sum(v) for k, v in r.series.stacks.items()} == teams


def test_scope_matchers_narrow_every_figure(ledger):
    led, source = ledger
    r = _report(source, scope=('team.id="platform"',))
    lo, hi = _week(47)
    recs = in_range(led.records, lo, hi, team="platform")
    for name, value in expected_figures(recs).items():
        assert getattr(r.current, name) == pytest.approx(value), name
    platform_users = {x.user for x in recs}
    assert {b.key for b in r.by_user} == platform_users
    pts = [p for p in led.points if (p.labels or {}).get("team.id") == "platform"]
    assert r.current.commits == expected_metrics(pts, lo, hi)["commits"]

    rx = _report(source, scope=('user=~"a.*|c.*"', 'model!="claude-haiku-4-5"'))
    want = [
        x
        for x in in_range(led.records, lo, hi)
        if (x.user or "")[:1] in ("a", "c") and (x.model or "") != "claude-haiku-4-5"
    ]
    assert rx.current.cost_nanos == sum(x.cost_nanos for x in want)
    assert rx.current.records == len(want)


def test_budget_spend_burn_rate_and_forecast(ledger):
    led, source = ledger
    budgets = [
        BudgetSpec("platform-monthly", 50.0, "month", ('team.id="platform"',), "Europe/Berlin"),
        BudgetSpec("tenant-weekly", 1.0, "week", (), "Europe/Berlin"),
        BudgetSpec("other-tenant", 1.0, "month", (), tenant="other"),
    ]
    r = _report(source, budgets=budgets)
    assert [b.name for b in r.budgets] == ["platform-monthly", "tenant-weekly"]
    month_start = datetime(2026, 11, 1, tzinfo=BERLIN)
    as_of = week_start(2026, 48)  # the report period's end
    spend = sum(x.cost_nanos for x in in_range(led.records, month_start, as_of, team="platform"))
    b = r.budgets[0]
    elapsed = (as_of - month_start).total_seconds() / 86400  # 22 days
    assert b.spend_nanos == spend and b.limit_nanos == 50_000_000_000
    assert b.burn_rate_nanos_per_day == pytest.approx(spend / elapsed)
    assert b.forecast_nanos == round(spend / elapsed * 30)
    assert b.status == ("over" if spend > 50e9 else "forecast_over" if spend / elapsed * 30 > 50e9 else "ok")
    w = r.budgets[1]
    week_spend = sum(x.cost_nanos for x in in_range(led.records, *_week(47)))
    assert w.spend_nanos == week_spend and w.forecast_nanos == week_spend and w.status == "over"
    # A team's report shows the team's budgets only.
    scoped = _report(source, budgets=budgets, scope=('team.id="platform"',))
    assert [b.name for b in scoped.budgets] == ["platform-monthly"]


def test_alerts_of_the_week(ledger):
    _, source = ledger
    lo, hi = (t.timestamp() for t in _week(47))
    day = 86400
    events = [
        AlertEvent(
            "BudgetWarning",
            "a1",
            lo + day,
            {"tenant": "acme"},
            "warning",
            lo + 2 * day,
            "OPS-1",
            lo + day,
            lo + 3 * day,
        ),
        AlertEvent("ErrorRate", "a2", lo + 4 * day, {"tenant": "acme"}, "critical", None, "OPS-2", lo + 4 * day),
        AlertEvent("OldOpen", "a3", lo - 5 * day, {"tenant": "acme"}, "warning", hi + day, "OPS-0", lo - 5 * day),
        AlertEvent("NextWeek", "a4", hi + 1, {"tenant": "acme"}),
        AlertEvent("OtherTenant", "a5", lo + day, {"tenant": "other"}),
    ]
    a = _report(source, alerts=events).alerts
    assert (a.fired, a.resolved, a.jira_opened, a.jira_resolved) == (2, 1, 2, 1)
    assert sorted(x[0] for x in a.still_firing) == ["ErrorRate", "OldOpen"]
    assert a.jira_open == ["OPS-0", "OPS-2"]


def test_empty_week_is_a_short_honest_message(ledger):
    _, source = ledger
    r = _report(source, week=30, alerts=[])
    assert r.empty and r.previous is None and r.series is None and r.by_model == []
    md = render_markdown(r)
    assert "No Claude Code usage was recorded for acme in 2026-W30." in md
    assert "## Summary" not in md and "$0.00" not in md


def test_missing_tool_events_and_metrics_read_not_reported(ledger):
    _, source = ledger
    r = _report(source, tenant="beta")
    c = r.current
    assert c.api_calls > 0 and c.tool_records == 0
    assert (c.lines_added, c.commits, c.pull_requests, c.cost_per_pr_nanos) == (None, None, None, None)
    assert c.tool_success_rate is None and c.accept_rate is None
    md = render_markdown(r)
    assert "| Lines added | n/a | n/a | n/a |" in md and "| Tool calls | n/a |" in md
    assert "No tool events recorded" in md and "metrics were not exported" in md


def test_metrics_only_sender_counts_cost_not_calls(ledger):
    _, source = ledger
    r = _report(source, tenant="gamma")
    c = r.current
    assert c.cost_nanos == 750_000_000 and c.input_tokens == 4000
    assert c.api_calls == 0 and c.metric_estimates == 2 and c.sessions == 1
    assert any("derived from Claude Code's cost metrics" in n for n in r.notes)


def test_periods_follow_local_calendar_and_dst():
    week = parse_period("weekly", "2026-W43", BERLIN)  # DST ends Sunday 2026-10-25 in Berlin
    assert (week.end_ns - week.start_ns) / 3.6e12 == 7 * 24 + 1
    assert [b[0] for b in week.buckets()][-1] == "Sun"
    assert (week.buckets()[-1][2] - week.buckets()[-1][1]) / 3.6e12 == 25
    day = parse_period("daily", "2026-10-25", BERLIN)
    assert len(day.buckets()) == 25
    assert parse_period("monthly", "2026-12", BERLIN).next().label == "2027-01"
    assert parse_period("monthly", "2026-01", BERLIN).previous().label == "2025-12"
    assert parse_period("weekly", "2026-W01", BERLIN).previous().label == "2025-W52"
    assert last_complete("weekly", datetime(2026, 11, 23, 9, tzinfo=BERLIN), BERLIN).label == "2026-W47"
    assert last_complete("daily", datetime(2026, 11, 23, 0, 30, tzinfo=BERLIN), BERLIN).label == "2026-11-22"
    # 23:30 UTC on Sunday is already Monday in Berlin.
    assert last_complete("weekly", datetime(2026, 11, 22, 23, 30, tzinfo=UTC), BERLIN).label == "2026-W47"
    utc_week = parse_period("weekly", "2026-W47", ZoneInfo("UTC"))
    assert utc_week.start_ns == ns(datetime(2026, 11, 16, tzinfo=UTC))
    for kind, bad in (("weekly", "2026-47"), ("daily", "2026-13-01"), ("monthly", "Nov")):
        with pytest.raises(ValueError, match="invalid"):
            parse_period(kind, bad, BERLIN)


def test_models_cover_generator():
    assert len(MODELS) <= 5  # by-model breakdown test assumes no "others" row


def test_budget_rules_from_rule_files_grouped_and_rolling(ledger):
    from relay.alerting.rules.load import RuleSet
    from relay.reports.budgets import budget_specs

    led, source = ledger
    specs = budget_specs(RuleSet.load(["rules/budgets.yaml"]).rules)
    team, user, rolling = specs[:3]
    assert (team.name, team.group_by, team.window, team.timezone) == (
        "TeamMonthlyBudget",
        ("team.id",),
        "month",
        "Europe/Berlin",
    )
    assert user.group_by == ("user",) and user.window == "day"
    assert rolling.rolling_s == 7 * 86400 and rolling.group_by == ()
    r = _report(source, budgets=specs)
    got = {b.name: b for b in r.budgets}
    as_of = week_start(2026, 48)

    month = defaultdict(int)
    for x in in_range(led.records, datetime(2026, 11, 1, tzinfo=BERLIN), as_of):
        if x.labels.get("team.id"):
            month[x.labels["team.id"]] += x.cost_nanos
    top_team, top_spend = max(month.items(), key=lambda kv: kv[1])
    t = got["TeamMonthlyBudget"]
    assert (t.group, t.spend_nanos, t.groups, t.groups_over) == (f'team.id="{top_team}"', top_spend, len(month), 0)

    day = defaultdict(int)
    for x in in_range(led.records, as_of - timedelta(days=1), as_of):
        if x.user:
            day[x.user] += x.cost_nanos
    u = got["UserDailyBudget"]
    assert u.spend_nanos == max(day.values()) and u.groups == len(day)
    assert u.forecast_nanos == u.spend_nanos  # the day is over: nothing left to project

    w = got["TenantRollingWeekBudget"]
    assert w.spend_nanos == sum(x.cost_nanos for x in in_range(led.records, *_week(47)))
    assert w.forecast_nanos == w.spend_nanos and w.group is None

    scoped = _report(source, budgets=specs, scope=('team.id="web"',))
    [only] = scoped.budgets  # per-team budget narrowed to the report's team; the others do not apply
    assert only.name == "TeamMonthlyBudget" and only.group == 'team.id="web"' and only.spend_nanos == month["web"]
