"""The report over a ledger filled by relay itself from Claude Code's captured exports (replayed byte for byte
into a running relay): its figures equal sums decoded from the captures without relay's code."""

from __future__ import annotations

import asyncio
import gzip
import math
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from relay.reports.compute import ReportRequest, compute_report
from relay.reports.periods import Period
from relay.reports.render_md import render_markdown
from relay.reports.render_slack import render_slack
from relay.reports.sql import SqliteReportSource, open_readonly
from relay.store.sqlite import SqliteDB
from relay.usage.sqlite_store import SqliteLedgerStore
from tests.fakes.slack_payload import check_message
from tests.support.expected import by_name, events
from tests.support.fixtures import load_scenario
from tests.support.inproc import replay, running_relay, settle

SCENARIOS = ["protobuf-tools", "protobuf-err529", "protobuf-subagent"]


def metric_sums(scenarios: list[str]) -> dict[tuple[str, str | None], float]:
    """Sum of every Sum data point per (metric name, ``type`` attribute), decoded from the captured protobuf."""
    out: dict[tuple[str, str | None], float] = {}
    for sc in scenarios:
        for req in load_scenario(sc):
            if req.signal != "metrics":
                continue
            body = gzip.decompress(req.body) if req.content_encoding == "gzip" else req.body
            msg = ExportMetricsServiceRequest.FromString(body)
            for rm in msg.resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        if m.WhichOneof("data") != "sum":
                            continue
                        assert m.sum.aggregation_temporality == 1  # the captures are DELTA
                        for p in m.sum.data_points:
                            typ = next((a.value.string_value for a in p.attributes if a.key == "type"), None)
                            key = (m.name, typ)
                            out[key] = out.get(key, 0.0) + (p.as_double or p.as_int)
    return out


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    data = tmp_path_factory.mktemp("fixtures") / "data"

    async def fill() -> None:
        async with running_relay(data) as relay:
            for sc in SCENARIOS:
                assert set(await replay(relay, sc)) == {200}
            await settle(relay)

    asyncio.run(fill())
    db = SqliteDB(data / "relay.db")
    db.open()
    SqliteLedgerStore(db)  # brings the ledger to the current layout (a no-op once relay writes it directly)
    db.close()
    conn = open_readonly(data / "relay.db")
    try:
        req = ReportRequest("default", Period("weekly", date(2026, 11, 16), ZoneInfo("UTC")))
        yield compute_report(SqliteReportSource(conn), req, now=datetime(2026, 12, 1, tzinfo=UTC))
    finally:
        conn.close()


def test_figures_equal_the_captures(report):
    evs = [e for sc in SCENARIOS for e in events(sc)]
    requests = by_name(evs, "api_request")
    errors = by_name(evs, "api_error")
    results = by_name(evs, "tool_result")
    calls = requests + errors + results
    c = report.current
    # exact to the nano-dollar: Σ cost_usd (the doubles Claude Code sent), not its micro-dollar rounding
    assert abs(c.cost_nanos - math.fsum(float(e.attrs["cost_usd"]) for e in requests) * 1e9) <= 1.0
    assert c.input_tokens == sum(int(e.attrs["input_tokens"]) for e in requests)
    assert c.output_tokens == sum(int(e.attrs["output_tokens"]) for e in requests)
    assert c.cache_read_tokens == sum(int(e.attrs["cache_read_tokens"]) for e in requests)
    assert c.cache_creation_tokens == sum(int(e.attrs["cache_creation_tokens"]) for e in requests)
    assert (c.api_calls, c.api_errors) == (len(requests) + len(errors), len(errors))
    assert c.tool_calls == len(results)
    assert c.tool_failures == sum(1 for e in results if e.attrs["success"] != "true")
    assert c.sessions == len({e.attrs["session.id"] for e in calls})
    assert c.interactions == len({e.attrs["prompt.id"] for e in calls})
    m = metric_sums(SCENARIOS)
    assert c.lines_added == m[("claude_code.lines_of_code.count", "added")]
    assert c.lines_removed == m[("claude_code.lines_of_code.count", "removed")]
    assert c.commits == m[("claude_code.commit.count", None)] == 1
    assert c.pull_requests == m[("claude_code.pull_request.count", None)] == 1
    assert c.cost_per_pr_nanos == c.cost_nanos


def test_breakdowns_of_the_captures(report):
    tools = by_name(events("protobuf-tools"), "api_request")
    team = {g.key: g.cost_nanos for g in report.by_group}
    assert (
        abs(team["platform"] - math.fsum(float(e.attrs["cost_usd"]) for e in tools) * 1e9) <= 1
    )  # OTEL_RESOURCE_ATTRIBUTES
    assert [b.key for b in report.by_model] == ["claude-opus-5-5"]
    [err] = report.errors
    assert err.status_code is None and err.count == len(by_name(events("protobuf-err529"), "api_error"))
    assert {t.tool for t in report.tools} == {
        e.attrs["tool_name"] for sc in SCENARIOS for e in by_name(events(sc), "tool_result")
    }
    subagent = by_name(events("protobuf-subagent"), "api_request")
    assert report.top_sessions[0].session_id == subagent[0].attrs["session.id"]


def test_renders(report):
    msg = render_slack(report)
    check_message({"text": msg["text"], "blocks": msg["blocks"]})
    md = render_markdown(report)
    assert "| Commits | 1 |" in md and "| Pull requests | 1 |" in md
