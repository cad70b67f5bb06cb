"""The rules engine on in-memory change feeds: each rule kind, ``for:``, resolution, upgrades and retractions,
routing, tenants, the sink contract, periodic evaluation and group expiry."""

from __future__ import annotations

import asyncio
import datetime as dt
import math

import pytest

from relay.alert import AlertState
from relay.alerting.evaluation.engine import RuleEngine
from relay.alerting.evaluation.windows import CalendarWindow, RollingWindow, WindowAgg, bucket_size, quantile
from relay.alerting.rules.load import RuleSet
from relay.usage.store import LedgerChange
from tests.support.clock import Clock
from tests.test_engine_support import T0, Sink, by, new, rec, upgrade, write_rules


async def engine_for(tmp_path, text: str, clock: Clock, sink: Sink, **kw) -> RuleEngine:
    rules = RuleSet.load([write_rules(tmp_path / "rules.yaml", text)])
    e = RuleEngine(rules, on_alerts=sink, now=clock, **kw)
    await e.restore(None)
    return e


def active(e: RuleEngine, name: str | None = None, **labels: str):
    return by(
        [a for a in e.alerts() if a.state is not AlertState.RESOLVED and (name is None or a.name == name)], **labels
    )


# ---------------------------------------------------------------------------------------------------- windows


def test_rolling_window_buckets_and_edges():
    assert [bucket_size(x) for x in (600, 3600, 604800, 30, 7)] == [5.0, 30.0, 3600.0, 0.25, 7 / 120]
    w = RollingWindow(600)
    now = 10_000.0
    lo = w.lo(now)
    assert w.key(now - 600) >= lo  # exactly W old: still in
    assert w.key(now - 605.0) < lo  # more than one bucket older: out
    assert w.bounds(now) == (9400.0, 10_000.0) and w.describe() == "last 10m"
    lo2, hlo, since, until = RollingWindow(600, history=3).lo_range(now)
    assert lo2 == lo and hlo == lo - 3 * 120 and since <= now < until and until - since == 5.0


def test_calendar_windows_align_in_their_timezone():
    month = CalendarWindow("month", "Europe/Berlin")
    t = dt.datetime(2026, 11, 30, 22, 59, 59, tzinfo=dt.UTC).timestamp()  # 23:59:59 in Berlin
    start, end = month.bounds(t)
    assert dt.datetime.fromtimestamp(start, dt.UTC) == dt.datetime(2026, 10, 31, 23, tzinfo=dt.UTC)
    assert end == t + 1 and month.key(t + 1) == month.key(t) + 1 and month.next_boundary(t) == end
    week = CalendarWindow("week", "America/New_York")
    wed = dt.datetime(2026, 11, 4, 12, tzinfo=dt.UTC).timestamp()
    ws, we = week.bounds(wed)
    assert dt.datetime.fromtimestamp(ws, week.zone).strftime("%a %H:%M") == "Mon 00:00" and we - ws == 7 * 86400
    day = CalendarWindow("day", "Europe/Berlin")  # 2026-03-29: clocks go forward, a 23-hour day
    ds, de = day.bounds(dt.datetime(2026, 3, 29, 12, tzinfo=dt.UTC).timestamp())
    assert de - ds == 23 * 3600


def test_window_agg_add_subtract_expire_and_quantiles():
    g = WindowAgg(2, keep_values=True)
    g.advance(10, 5)
    for k, v in ((9, 100.0), (10, 1.0), (11, 3.0), (12, 2.0)):
        g.add(k, (1, v), v, 1, 5)
    assert g.run == [3, 6.0] and g.values == [1.0, 2.0, 3.0]  # key 9 is history only
    g.add(11, (1, 3.0), 3.0, -1, 5)
    assert g.run == [2, 3.0] and g.values == [1.0, 2.0]
    g.advance(12, 12)
    assert g.run == [1, 2.0] and g.values == [2.0] and sorted(g.buckets) == [12]
    assert quantile([1, 2, 3, 4], 0.5) == 2.5 and quantile([5.0], 0.95) == 5.0 and math.isnan(quantile([], 0.5))
    assert WindowAgg(1).totals_before(10, 2, 3) == [0.0, 0.0, 0.0]


# ---------------------------------------------------------------------------------------------------- budgets

BUDGET = """\
groups:
  - name: b
    rules:
      - alert: TeamBudget
        kind: budget
        matchers: ['kind="llm"']
        group_by: [team.id]
        limit_usd: 100
        window: {calendar: month, timezone: Europe/Berlin}
        thresholds:
          - {percent: 50, severity: info}
          - {percent: 80, severity: warning}
          - {percent: 100, severity: critical}
        annotations:
          summary: '{{ labels["team.id"] }} at {{ values.percent | percent }} ({{ values.spend | usd }})'
"""


async def test_budget_thresholds_are_separate_alerts_with_values(tmp_path):
    clock, sink = Clock(T0), Sink()
    e = await engine_for(tmp_path, BUDGET, clock, sink)
    team = {"team.id": "platform"}
    e.observe(new(rec("a", clock.t, cost=49.0, labels=team)))
    assert sink.take() == []
    e.observe(new(rec("b", clock.advance(60), cost=1.0, labels=team)))
    (a,) = sink.take()
    assert a.state is AlertState.FIRING and a.fired_at == clock.t == a.active_at
    assert a.labels == {
        "alertname": "TeamBudget",
        "tenant": "default",
        "team.id": "platform",
        "severity": "info",
        "threshold": "50",
    }
    assert a.value == 50.0 and a.rule.endswith("rules.yaml:TeamBudget") and a.window == "month (Europe/Berlin)"
    assert a.values["spend"] == 50.0 and a.values["limit"] == 100.0 and a.values["threshold"] == 50.0
    assert a.values["threshold_percent"] == 50.0 and a.values["percent"] == 50.0
    start, end = CalendarWindow("month", "Europe/Berlin").bounds(clock.t)
    assert (a.values["window_start"], a.values["window_end"]) == (start, end)
    assert a.annotations == {"summary": "platform at 50.0% ($50.00)"}
    e.observe(new(rec("c", clock.advance(60), cost=60.0, labels=team)))
    sent = sink.take()
    assert sorted(x.labels["threshold"] for x in sent) == ["100", "50", "80"]  # 50 re-sent: value moved > 5 %
    assert by(sent, threshold="100")[0].labels["severity"] == "critical"
    # other kinds and other teams do not count
    e.observe(
        new(
            rec("d", clock.advance(1), kind="tool", cost=500.0, labels=team),
            rec("e", clock.t, cost=70.0, labels={"team.id": "data"}),
        )
    )
    assert [x.labels["threshold"] for x in sink.take()] == ["50"]


async def test_budget_resets_at_the_calendar_boundary_in_its_timezone(tmp_path):
    berlin_midnight = dt.datetime(2026, 11, 30, 23, tzinfo=dt.UTC).timestamp()
    clock, sink = Clock(berlin_midnight - 3600), Sink()
    e = await engine_for(tmp_path, BUDGET, clock, sink)
    e.observe(new(rec("a", clock.t, cost=90.0, labels={"team.id": "p"})))
    assert len(sink.take()) == 2
    # the engine wakes exactly at the boundary, whatever the evaluation interval
    assert e.next_wakeup() == clock.t + 10.0
    clock.t = berlin_midnight - 1
    e.evaluate()
    assert [a.state for a in sink.take()] == [AlertState.FIRING] * 2  # re-sent after resend_interval
    assert len(active(e)) == 2
    assert e.next_wakeup() == berlin_midnight
    clock.t = berlin_midnight
    e.evaluate(due_only=True)
    resolved = sink.take()
    assert sorted(a.labels["threshold"] for a in resolved) == ["50", "80"]
    assert all(a.state is AlertState.RESOLVED and a.ends_at == berlin_midnight for a in resolved)
    assert resolved[0].values["spend"] == 0.0
    assert active(e) == [] and len(e.alerts()) == 2  # resolved alerts stay listed for the retention
    e.observe(new(rec("again", clock.t, cost=60.0, labels={"team.id": "p"})))
    assert sorted((a.labels["threshold"], a.state.value) for a in e.alerts()) == [("50", "firing"), ("80", "resolved")]
    assert len(sink.take()) == 1
    e.observe([LedgerChange(rec("again", clock.t, cost=60.0, labels={"team.id": "p"}), None)])
    assert sorted((a.labels["threshold"], a.state.value) for a in e.alerts()) == [
        ("50", "resolved"),
        ("80", "resolved"),
    ]
    assert len(sink.take()) == 1
    # a record of the old month arriving late does not count in the new one
    e.observe(new(rec("late", berlin_midnight - 10, cost=50.0, labels={"team.id": "p"})))
    assert sink.take() == []
    clock.advance(3601)
    e.evaluate()
    assert e.alerts() == []  # after resolved_retention


async def test_forecast_fires_after_min_elapsed_when_the_projection_exceeds_the_limit(tmp_path):
    forecast = "        forecast: {enabled: true, min_elapsed: 2d, severity: warning}\n"
    text = BUDGET.replace("        annotations:", forecast + "        annotations:")
    start = dt.datetime(2026, 10, 31, 23, tzinfo=dt.UTC).timestamp()  # 2026-11-01 00:00 Berlin
    clock, sink = Clock(start + 86400), Sink()  # day 1 of 30
    e = await engine_for(tmp_path, text, clock, sink)
    e.observe(new(rec("a", clock.t, cost=10.0, labels={"team.id": "p"})))  # pace: $300 a month
    assert sink.take() == []  # before min_elapsed: no forecast
    clock.t = start + 2 * 86400 - 1
    e.evaluate(due_only=True)
    assert sink.take() == [] and e.next_wakeup() == start + 2 * 86400  # wakes when the forecast becomes eligible
    clock.t = start + 2 * 86400
    e.evaluate(due_only=True)
    (f,) = sink.take()
    assert f.labels["threshold"] == "forecast" and f.labels["severity"] == "warning"
    assert f.value == pytest.approx(10.0 / 2 * 30) == f.values["forecast"]
    assert f.values["projected_exceeded_at"] == pytest.approx(start + 100 / (10.0 / (2 * 86400)))
    # the pace slows down: the projection falls under the limit by itself
    clock.t = start + 25 * 86400  # 10 × 30 / 25 = 12 < 100
    e.evaluate(due_only=True)
    (r,) = sink.take()
    assert r.state is AlertState.RESOLVED and r.labels["threshold"] == "forecast"


async def test_rolling_budget_forgets_old_spend(tmp_path):
    text = BUDGET.replace("window: {calendar: month, timezone: Europe/Berlin}", "window: 1d")
    clock, sink = Clock(T0), Sink()
    e = await engine_for(tmp_path, text, clock, sink)
    e.observe(new(rec("a", clock.t, cost=60.0, labels={"team.id": "p"})))
    assert len(sink.take()) == 1
    clock.advance(86400 - 60)
    e.evaluate()
    assert [a.state for a in sink.take()] == [AlertState.FIRING]  # still firing (re-sent)
    clock.advance(60 + bucket_size(86400))
    e.evaluate()
    (r,) = sink.take()
    assert r.state is AlertState.RESOLVED and r.values["spend"] == 0.0


# ---------------------------------------------------------------------------------------------------- changes


async def test_upgrades_and_retractions_are_counted_once(tmp_path):
    clock, sink = Clock(T0), Sink()
    e = await engine_for(tmp_path, BUDGET, clock, sink)
    team = {"team.id": "p"}
    computed = rec("call-1", clock.t, cost=45.0, labels=team, cost_source="computed")
    e.observe(new(computed))
    e.observe([upgrade(computed, cost_nanos=55_000_000_000, cost_source="reported")])
    (a,) = sink.take()
    assert a.values["spend"] == 55.0 and a.labels["threshold"] == "50"
    e.observe([upgrade(computed, cost_nanos=55_000_000_000, cost_source="reported")][:0])  # nothing: no-op
    reported = rec("call-1", clock.t, cost=55.0, labels=team)
    e.observe([LedgerChange(reported, None)])  # retraction
    (r,) = sink.take()
    assert r.state is AlertState.RESOLVED and r.values["spend"] == 0.0
    # retracting something never seen does not go negative
    e.observe([LedgerChange(rec("ghost", clock.t, cost=10.0, labels={"team.id": "q"}), None)])
    e.observe(new(rec("x", clock.t, cost=50.0, labels={"team.id": "q"})))
    assert [a.values["spend"] for a in sink.take()] == [50.0]


async def test_tenants_never_mix(tmp_path):
    clock, sink = Clock(T0), Sink()
    e = await engine_for(tmp_path, BUDGET, clock, sink)
    e.observe(
        new(
            rec("a", clock.t, cost=30.0, tenant="acme", labels={"team.id": "p"}),
            rec("a", clock.t, cost=30.0, tenant="globex", labels={"team.id": "p"}),
        )
    )
    assert sink.take() == []
    e.observe(new(rec("b", clock.t, cost=30.0, tenant="acme", labels={"team.id": "p"})))
    (a,) = sink.take()
    assert a.labels["tenant"] == "acme" and a.values["spend"] == 60.0


async def test_matchers_route_records_index_and_regex(tmp_path):
    text = """\
        groups:
          - name: g
            rules:
              - {alert: Eq, kind: threshold, matchers: ['team.id="a"', 'model=~"claude-.*"'], field: records,
                 aggregate: count, window: 1h, value: 0}
              - {alert: NotEq, kind: threshold, matchers: ['team.id!="a"'], field: records, aggregate: count,
                 window: 1h, value: 1}
              - {alert: All, kind: threshold, field: records, aggregate: count, window: 1h, value: 3}
              - {alert: Missing, kind: threshold, matchers: ['team.id=""'], field: records, aggregate: count,
                 window: 1h, value: 0}
        """
    clock, sink = Clock(T0), Sink()
    e = await engine_for(tmp_path, text, clock, sink)
    e.observe(
        new(
            rec("1", clock.t, model="claude-x", labels={"team.id": "a"}),
            rec("2", clock.t, model="gpt-4", labels={"team.id": "a"}),
        )
    )
    assert sorted(a.name for a in sink.take()) == ["Eq"]
    e.observe(new(rec("3", clock.t, model="claude-x", labels={"team.id": "b"}), rec("4", clock.t, model="claude-x")))
    assert sorted(a.name for a in sink.take()) == ["All", "Missing", "NotEq"]
    assert active(e, "Eq")[0].value == 1.0  # 'model=~' is checked after the index lookup
    assert active(e, "NotEq")[0].value == 2.0 and active(e, "Missing")[0].value == 1.0


# ---------------------------------------------------------------------------------------------------- error rates

ERRORS = """\
groups:
  - name: e
    rules:
      - alert: Errors
        kind: error_rate
        group_by: [model]
        window: 10m
        ratio: 0.2
        min_count: 4
        labels: {severity: warning}
      - alert: Overloaded
        kind: error_rate
        errors: {status_codes: [529]}
        window: 10m
        ratio: 0.3
        min_count: 2
      - alert: Exhausted
        kind: error_rate
        errors: {retries_exhausted: true}
        group_by: [user]
        window: 10m
        count: 2
        annotations: {summary: "{{ values.failed | int }} exhausted, {{ (100 // values.total) | int }}"}
      - alert: ToolFailures
        kind: error_rate
        matchers: ['error_class!="rejected"']
        errors: {kind: tool, error_classes: [ShellError]}
        window: 10m
        ratio: 0.3
        min_count: 2
"""


async def test_error_rate_needs_min_count_and_ratio(tmp_path):
    clock, sink = Clock(T0), Sink()
    e = await engine_for(tmp_path, ERRORS, clock, sink)
    m = {"model": "claude-x"}
    e.observe(new(rec("1", clock.t, success=False, status_code=500, **m)))
    e.observe(new(rec("2", clock.t, success=True, **m)))
    assert by(sink.take(), alertname="Errors") == []  # 1 of 2 failed: below min_count
    e.observe(new(rec("3", clock.t, **m), rec("4", clock.t, **m)))
    (a,) = by(sink.take(), alertname="Errors")
    assert a.value == 0.25 and a.values == {
        "ratio": 0.25,
        "failed": 1.0,
        "total": 4.0,
        "min_count": 4.0,
        "threshold": 0.2,
        "count_threshold": 0.0,
    }
    assert a.labels == {"alertname": "Errors", "tenant": "default", "model": "claude-x", "severity": "warning"}
    e.observe(new(rec("5", clock.t, **m)))  # 1 of 5 = 0.2: not above
    (r,) = by(sink.take(), alertname="Errors")
    assert r.state is AlertState.RESOLVED


async def test_529_without_status_code_counts_as_overload(tmp_path):
    clock, sink = Clock(T0), Sink()
    e = await engine_for(tmp_path, ERRORS, clock, sink)
    e.observe(
        new(
            rec("1", clock.t, success=False, status_code=500, error_class="server_error"),
            rec("2", clock.t, success=True),
        )
    )
    assert by(sink.take(), alertname="Overloaded") == []
    e.observe(new(rec("3", clock.t, success=False, error_class="overloaded", error="Repeated 529 Overloaded errors")))
    (a,) = by(sink.take(), alertname="Overloaded")
    assert a.values["failed"] == 1.0 and a.values["total"] == 3.0


async def test_retries_exhausted_counts_and_links_point_at_a_failure(tmp_path):
    clock, sink = Clock(T0), Sink()
    seen = []

    def links(labels, sample):
        seen.append((dict(labels), sample))
        return {"Langfuse session": f"https://lf/sessions/{sample.session_id}"} if sample else {}

    e = await engine_for(tmp_path, ERRORS, clock, sink, links=links)
    u = {"user": "jdoe"}
    e.observe(
        new(
            rec("r1", clock.t, kind="retries_exhausted", success=False, session_id="s-fail", **u),
            rec("c1", clock.t, success=False, session_id="s-fail", **u),
        )
    )
    assert by(sink.take(), alertname="Exhausted") == []
    e.observe(
        new(
            rec("r2", clock.t, kind="retries_exhausted", success=False, session_id="s-fail", **u),
            rec("c2", clock.t, success=True, session_id="s-ok", **u),
        )
    )
    (a,) = by(sink.take(), alertname="Exhausted")
    assert a.values["failed"] == 2.0 and a.values["total"] == 2.0 and a.value == 2.0
    assert a.annotations["summary"] == "2 exhausted, 50"
    assert a.links == {"Langfuse session": "https://lf/sessions/s-fail"}
    assert seen[-1][0]["user"] == "jdoe"


async def test_template_errors_at_run_time_do_not_stop_evaluation(tmp_path):
    clock, sink = Clock(T0), Sink()
    e = await engine_for(tmp_path, ERRORS, clock, sink)
    e.observe(new(*(rec(f"r{i}", clock.t, kind="retries_exhausted", success=False, user="u") for i in range(2))))
    (a,) = by(sink.take(), alertname="Exhausted")  # total calls 0: 100 // 0 fails
    assert a.annotations["summary"].startswith("(template error:") and a.state is AlertState.FIRING


async def test_tool_failure_rate_excludes_rejections_and_filters_classes(tmp_path):
    clock, sink = Clock(T0), Sink()
    e = await engine_for(tmp_path, ERRORS, clock, sink)
    t = {"kind": "tool", "tool_name": "Bash"}
    e.observe(
        new(
            rec("1", clock.t, success=True, **t),
            rec("2", clock.t, success=False, error_class="rejected", **t),
            rec("3", clock.t, success=False, error_class="rejected", **t),
            rec("4", clock.t, success=False, error_class="McpToolCallError", **t),
        )
    )
    assert by(sink.take(), alertname="ToolFailures") == []  # McpToolCallError is not in error_classes
    e.observe(new(rec("5", clock.t, success=False, error_class="ShellError", **t)))
    (a,) = by(sink.take(), alertname="ToolFailures")
    assert a.values["failed"] == 1.0 and a.values["total"] == 3.0


KINDS = """\
groups:
  - name: k
    rules:
      - alert: LlmErrors
        kind: error_rate
        window: 10m
        ratio: 0.5
        min_count: 2
      - alert: ToolErrors
        kind: error_rate
        errors: {kind: tool}
        window: 10m
        ratio: 0.5
        min_count: 2
"""


async def test_error_rate_counts_only_calls_of_its_kind(tmp_path):
    """``errors.kind`` picks the calls: an llm rule neither fails on tool errors nor counts tool calls in its
    total, and a tool rule the other way round."""
    clock, sink = Clock(T0), Sink()
    e = await engine_for(tmp_path, KINDS, clock, sink)
    tool = {"kind": "tool", "tool_name": "Bash"}
    e.observe(
        new(
            *(rec(f"t{i}", clock.t, success=False, error_class="ShellError", **tool) for i in range(3)),
            rec("l1", clock.t, success=True),
            rec("l2", clock.t, success=True),
        )
    )
    fired = sink.take()
    (t,) = by(fired, alertname="ToolErrors")
    assert t.values["failed"] == 3.0 and t.values["total"] == 3.0  # the two llm calls are not tool calls
    assert by(fired, alertname="LlmErrors") == []  # 0 of 2 llm calls failed: tool failures do not count
    # llm failures: 3 of 5 llm calls (2 of 4 would be exactly 0.5, not above) — the 3 tool calls stay out
    e.observe(
        new(rec("l3", clock.t, success=False, status_code=500), rec("l4", clock.t, success=False, status_code=500))
    )
    assert by(sink.take(), alertname="LlmErrors") == []
    e.observe(new(rec("l5", clock.t, success=False, status_code=500)))
    (llm,) = by(sink.take(), alertname="LlmErrors")
    assert llm.values["failed"] == 3.0 and llm.values["total"] == 5.0
    (t,) = active(e, "ToolErrors")
    assert t.values["total"] == 3.0 and t.values["failed"] == 3.0  # llm calls never reach the tool rule


async def test_a_ratio_can_rise_by_time_alone_and_is_evaluated_periodically(tmp_path):
    clock, sink = Clock(T0), Sink()
    e = await engine_for(tmp_path, ERRORS.replace("min_count: 4", "min_count: 2"), clock, sink)
    m = {"model": "m"}
    e.observe(new(*(rec(f"ok{i}", clock.t, **m) for i in range(10))))
    clock.advance(300)
    e.observe(new(rec("f1", clock.t, success=False, **m), rec("f2", clock.t, success=False, **m)))
    assert by(sink.take(), alertname="Errors") == []  # 2 of 12
    clock.advance(300 + bucket_size(600))  # the successes left the window; no new record arrived
    e.evaluate(due_only=True)
    (a,) = by(sink.take(), alertname="Errors")
    assert a.values["ratio"] == 1.0 and a.values["total"] == 2.0


# ---------------------------------------------------------------------------------------------------- thresholds

THRESHOLDS = """\
groups:
  - name: t
    rules:
      - alert: SessionCost
        kind: threshold
        group_by: [session]
        field: cost_usd
        window: 1h
        value: 10
      - alert: SlowTTFT
        kind: threshold
        matchers: ['kind="llm"']
        group_by: [model]
        field: ttft_ms
        aggregate: p95
        window: 15m
        value: 5000
        min_count: 5
        for: 2m
      - alert: FewCalls
        kind: threshold
        field: records
        aggregate: count
        window: 10m
        op: "<"
        value: 3
        min_count: 1
"""


async def test_session_cost_in_the_last_hour(tmp_path):
    clock, sink = Clock(T0), Sink()
    e = await engine_for(tmp_path, THRESHOLDS, clock, sink)
    e.observe(new(rec("1", clock.t, cost=6, session_id="s1"), rec("2", clock.t, cost=6, session_id="s2")))
    clock.advance(1800)
    e.observe(new(rec("3", clock.t, cost=6, session_id="s1")))
    (a,) = by(sink.take(), alertname="SessionCost")
    assert (
        a.labels["session"] == "s1" and a.value == 12.0 and a.values == {"value": 12.0, "threshold": 10.0, "count": 2.0}
    )
    clock.advance(1800 + 30)
    e.evaluate()
    (r,) = by(sink.take(), alertname="SessionCost")
    assert r.state is AlertState.RESOLVED and r.values["value"] == 6.0


async def test_p95_ttft_with_min_count_and_for(tmp_path):
    clock, sink = Clock(T0), Sink()
    e = await engine_for(tmp_path, THRESHOLDS, clock, sink)
    m = {"model": "opus"}
    e.observe(
        new(*(rec(f"f{i}", clock.t, ttft_ms=1000.0, **m) for i in range(3)), rec("s1", clock.t, ttft_ms=9000.0, **m))
    )
    assert active(e, "SlowTTFT") == []  # 4 calls < min_count 5
    e.observe(new(rec("s2", clock.t, ttft_ms=9000.0, **m), rec("tool", clock.t, kind="tool", ttft_ms=99999.0)))
    (p,) = active(e, "SlowTTFT")
    assert p.state is AlertState.PENDING and p.value == pytest.approx(9000.0)
    assert by(sink.take(), alertname="SlowTTFT") == []  # pending alerts are not sent
    assert e.next_wakeup() == clock.t + 10.0
    clock.advance(119)
    e.evaluate(due_only=True)
    assert active(e, "SlowTTFT")[0].state is AlertState.PENDING
    assert e.next_wakeup() == T0 + 120  # the exact for: deadline
    clock.t = T0 + 120
    e.evaluate(due_only=True)
    (a,) = by(sink.take(), alertname="SlowTTFT")
    assert a.state is AlertState.FIRING and a.active_at == T0 and a.fired_at == T0 + 120
    assert a.values["count"] == 5.0


async def test_pending_alert_whose_condition_clears_is_dropped_silently(tmp_path):
    clock, sink = Clock(T0), Sink()
    e = await engine_for(tmp_path, THRESHOLDS, clock, sink)
    m = {"model": "opus"}
    recs = [rec(f"s{i}", clock.t, ttft_ms=9000.0, **m) for i in range(5)]
    e.observe(new(*recs))
    assert active(e, "SlowTTFT")[0].state is AlertState.PENDING
    clock.advance(60)
    e.observe([LedgerChange(r, None) for r in recs[:3]])  # retracted: 2 calls left, below min_count
    assert active(e, "SlowTTFT") == [] and by(sink.take(), alertname="SlowTTFT") == []
    assert by(e.alerts(), alertname="SlowTTFT") == []  # not listed as resolved either


async def test_less_than_rules_fire_when_traffic_stops(tmp_path):
    clock, sink = Clock(T0), Sink()
    e = await engine_for(tmp_path, THRESHOLDS, clock, sink)
    e.observe(new(*(rec(f"r{i}", clock.t) for i in range(5))))
    assert by(sink.take(), alertname="FewCalls") == []
    clock.advance(8 * 60)
    e.observe(new(rec("x", clock.t), rec("y", clock.t)))
    clock.advance(2 * 60 + bucket_size(600))
    e.evaluate(due_only=True)
    (a,) = by(sink.take(), alertname="FewCalls")
    assert a.value == 2.0


# ---------------------------------------------------------------------------------------------------- spikes

SPIKES = """\
groups:
  - name: s
    rules:
      - alert: Ratio
        kind: spike
        field: cost_usd
        window: 1h
        baseline: {windows: 3, min_baseline: 1}
        method: ratio
        threshold: 3
      - alert: Z
        kind: spike
        field: records
        window: 1h
        baseline: {windows: 4}
        method: zscore
        threshold: 3
"""


async def test_spike_ratio_and_zscore(tmp_path):
    hour = T0 - T0 % 3600
    clock, sink = Clock(hour), Sink()
    e = await engine_for(tmp_path, SPIKES, clock, sink)
    for h, calls in enumerate([4, 8, 4, 8]):  # $2 an hour; 4, 8, 4, 8 calls (mean 6, sd 2)
        clock.t = hour + h * 3600 + 1800
        e.observe(new(*(rec(f"h{h}-{i}", clock.t, cost=2.0 / calls) for i in range(calls))))
    clock.t = hour + 4 * 3600 + 1860  # the current hour is empty; the baselines are hours 3, 2, 1 (and 0)
    e.evaluate()
    sink.take()  # (while the baseline was still filling up, the early hours looked like spikes)
    assert active(e) == []
    fired: dict[str, tuple[int, object]] = {}
    for i in range(1, 15):
        e.observe(new(rec(f"new{i}", clock.advance(60), cost=0.5)))
        for a in sink.take():
            fired.setdefault(a.name, (i, a))
    n, z = fired["Z"]
    assert n == 13 and z.values == {
        "current": 13.0,
        "baseline": 6.0,
        "stddev": 2.0,
        "ratio": 13 / 6,
        "zscore": 3.5,
        "threshold": 3.0,
    }
    assert z.value == 3.5
    n, r = fired["Ratio"]
    assert n == 13 and r.value == pytest.approx(3.25) and r.values["baseline"] == pytest.approx(2.0)
    assert r.values["current"] == pytest.approx(6.5)


async def test_spike_on_a_zero_or_small_baseline_never_fires(tmp_path):
    clock, sink = Clock(T0), Sink()
    e = await engine_for(tmp_path, SPIKES, clock, sink)
    e.observe(new(*(rec(f"r{i}", clock.t, cost=100.0) for i in range(50))))
    e.evaluate()
    assert sink.take() == []
    assert active(e) == []


FLAT_AND_GAPPY = """\
groups:
  - name: s
    rules:
      - alert: Flat
        kind: spike
        field: records
        window: 1h
        baseline: {windows: 4}
        method: zscore
        threshold: 3
      - alert: FlatMinStddev
        kind: spike
        field: records
        window: 1h
        baseline: {windows: 4, min_stddev: 2.5}
        method: zscore
        threshold: 3
      - alert: GappyRatio
        kind: spike
        field: cost_usd
        window: 1h
        baseline: {windows: 4}
        method: ratio
        threshold: 3
      - alert: GappyZ
        kind: spike
        field: cost_usd
        window: 1h
        baseline: {windows: 4}
        method: zscore
        threshold: 3
"""


async def first_firing(e: RuleEngine, clock: Clock, sink: Sink, make, n: int = 30) -> dict[str, tuple[int, object]]:
    """Add ``make(i)`` one a minute for i = 1..n; the first alert of each rule with the i that fired it."""
    fired: dict[str, tuple[int, object]] = {}
    for i in range(1, n + 1):
        e.observe(new(make(i, clock.advance(60))))
        for a in sink.take():
            fired.setdefault(a.name, (i, a))
    return fired


async def test_spike_zscore_floors_a_flat_baselines_stddev(tmp_path):
    """Four hours of exactly 10 calls: stddev 0. The z-score divides by the floor instead — 10 % of the mean (1)
    by default, ``min_stddev`` when set — so 11 calls is no spike; 14 (z 4) and 18 (z 3.2) are."""
    hour = T0 - T0 % 3600
    clock, sink = Clock(hour), Sink()
    e = await engine_for(tmp_path, FLAT_AND_GAPPY, clock, sink)
    for h in range(4):
        clock.t = hour + h * 3600 + 1800
        e.observe(new(*(rec(f"h{h}-{i}", clock.t) for i in range(10))))
    clock.t = hour + 4 * 3600 + 1860
    e.evaluate()
    sink.take()  # (while the baseline was filling up the early hours looked like spikes)
    assert active(e, "Flat") == [] and active(e, "FlatMinStddev") == []
    fired = await first_firing(e, clock, sink, lambda i, t: rec(f"new{i}", t))
    n, flat = fired["Flat"]
    assert n == 14 and flat.values["baseline"] == 10.0 and flat.values["stddev"] == 0.0
    assert flat.values["zscore"] == pytest.approx(4.0)
    n, floored = fired["FlatMinStddev"]
    assert n == 18 and floored.values["zscore"] == pytest.approx(3.2)


async def test_spike_baseline_counts_empty_windows_as_zero(tmp_path):
    """Baseline hours with no records count as 0: $8, $0, $8, $0 is a mean of $4 (stddev $4), not $8 — so $13 is
    a ratio spike (3.25) and $17 a z-score one ((17 - 4) / 4 = 3.25)."""
    hour = T0 - T0 % 3600
    clock, sink = Clock(hour), Sink()
    e = await engine_for(tmp_path, FLAT_AND_GAPPY, clock, sink)
    for h in (0, 2):
        clock.t = hour + h * 3600 + 1800
        e.observe(new(*(rec(f"h{h}-{i}", clock.t, cost=1.0) for i in range(8))))
    clock.t = hour + 4 * 3600 + 1860
    e.evaluate()
    sink.take()
    assert active(e, "GappyRatio") == [] and active(e, "GappyZ") == []
    fired = await first_firing(e, clock, sink, lambda i, t: rec(f"new{i}", t, cost=1.0))
    n, ratio = fired["GappyRatio"]
    assert n == 13 and ratio.values["baseline"] == pytest.approx(4.0) and ratio.value == pytest.approx(3.25)
    n, z = fired["GappyZ"]
    assert n == 17 and z.values["stddev"] == pytest.approx(4.0) and z.value == pytest.approx(3.25)


# ---------------------------------------------------------------------------------------------------- sink


async def test_sink_gets_copies_resends_and_awaitables_are_scheduled(tmp_path):
    clock = Clock(T0)
    got, done = [], asyncio.Event()

    async def sink(alerts):
        await asyncio.sleep(0)
        got.extend(alerts)
        done.set()

    e = await engine_for(tmp_path, BUDGET, clock, sink, resend_interval=60.0)
    e.observe(new(rec("a", clock.t, cost=50.0, labels={"team.id": "p"})))
    await asyncio.wait_for(done.wait(), 5)
    (a,) = got
    a.labels["severity"] = "mutated"
    assert active(e)[0].labels["severity"] == "info"
    e.observe(new(rec("b", clock.advance(1), cost=1.0, labels={"team.id": "p"})))  # +2 %: not material
    clock.advance(30)
    e.evaluate()
    await e.drain()
    assert len(got) == 1
    clock.advance(30)
    e.evaluate()  # resend_interval passed
    await e.drain()
    assert len(got) == 2 and got[1].fired_at == a.fired_at and got[1].values["spend"] == 51.0
    assert e.alerts_sent == 2


async def test_a_failing_sink_does_not_break_evaluation(tmp_path, caplog):
    clock = Clock(T0)

    def sink(alerts):
        raise RuntimeError("boom")

    e = await engine_for(tmp_path, BUDGET, clock, sink)
    e.observe(new(rec("a", clock.t, cost=80.0, labels={"team.id": "p"})))
    assert len(active(e)) == 2 and "alert sink failed" in caplog.text


async def test_expired_groups_are_forgotten(tmp_path):
    clock, sink = Clock(T0), Sink()
    e = await engine_for(tmp_path, THRESHOLDS, clock, sink)
    e.observe(new(*(rec(f"r{i}", clock.t, cost=1.0, session_id=f"s{i}") for i in range(100))))
    (art,) = [a for a in e._agg_runtimes.values() if a.rules[0].rule.name == "SessionCost"]
    assert len(art.groups) == 100
    clock.advance(1800)
    e.observe(new(rec("live", clock.t, cost=1.0, session_id="s-live")))
    clock.advance(1800 + 60)
    e.evaluate()
    assert list(art.groups) == [("default", "s-live")]
    clock.advance(3600)
    e.evaluate()
    assert art.groups == {}


async def test_run_loop_evaluates_periodically(tmp_path):
    clock, sink = Clock(T0), Sink()
    e = await engine_for(
        tmp_path,
        BUDGET.replace("calendar: month, timezone: Europe/Berlin", "rolling: 1m"),
        clock,
        sink,
        evaluation_interval=0.01,
    )
    e.observe(new(rec("a", clock.t, cost=60.0, labels={"team.id": "p"})))
    assert len(sink.take()) == 1
    task = asyncio.create_task(e.run())
    clock.advance(120)
    for _ in range(200):
        await asyncio.sleep(0.01)
        if sink.batches:
            break
    task.cancel()
    (r,) = sink.take()
    assert r.state is AlertState.RESOLVED
