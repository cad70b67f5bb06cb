"""Renderers: Slack blocks pass Slack's validation (slack-sdk models + Block Kit limits, as the fake Slack checks
them), JSON and CSV carry the same figures, the chart is a valid PNG of the requested size."""

from __future__ import annotations

import json
import struct
import zlib
from datetime import UTC, date, datetime

import pytest

from relay.reports.chart import CHART_HEIGHT, CHART_WIDTH, render_chart
from relay.reports.compute import ReportRequest, compute_report
from relay.reports.model import (
    AlertSummary,
    Breakdown,
    BudgetStatus,
    Figures,
    GroupRow,
    Report,
    Series,
    SessionRow,
    ToolRow,
)
from relay.reports.periods import Period
from relay.reports.render_csv import render_json
from relay.reports.render_md import render_markdown
from relay.reports.render_slack import render_slack
from relay.reports.sql import SqliteReportSource, open_readonly
from tests.fakes.slack_payload import check_message
from tests.test_report_support import BERLIN, Ledger, generate_week, week_start, write_ledger


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Report:
    path = tmp_path_factory.mktemp("render") / "relay.db"
    led = Ledger()
    for w in (46, 47):
        generate_week(led, week_start(2026, w), seed=w)
    write_ledger(path, led)
    conn = open_readonly(path)
    try:
        req = ReportRequest("acme", Period("weekly", date(2026, 11, 16), BERLIN))
        return compute_report(
            SqliteReportSource(conn), req, budgets=[], alerts=[], now=datetime(2026, 12, 1, tzinfo=UTC)
        )
    finally:
        conn.close()


def _huge() -> Report:
    """A report at every limit: long names, many users/teams/tools/errors, all sections."""
    long = "x" * 400
    f = Figures(
        records=10**7,
        cost_nanos=123_456_789_012,
        input_tokens=10**9,
        api_calls=10**6,
        api_errors=5,
        tool_records=9,
        tool_calls=9,
        lines_added=10,
        lines_removed=1,
        commits=0,
        pull_requests=0,
    )
    rows = [Breakdown(f"{long}-{i}", 10**6 * (50 - i), 10**6, 10, 100, 3) for i in range(20)]
    r = Report(
        "t" * 200,
        "weekly",
        "2026-W47",
        "2026-11-16T00:00:00+01:00",
        "2026-11-23T00:00:00+01:00",
        "Europe/Berlin",
        "2026-11-23T09:00:00+01:00",
        f,
        f,
        scope=[f'team.id="{long}"'],
        late=True,
        top_n=20,
        by_model=rows,
        by_user=rows,
        group_label="team.id",
        by_group=[GroupRow(f"{long}<&>{i}", 10**6, 0, 1, 0, 1, 1, long) for i in range(20)],
        top_sessions=[SessionRow(long, long, 10**6, 1, 1, 60.0, "https://lf.example/" + long)] * 20,
        tools=[ToolRow(long, 3, 1, 3, 1) for _ in range(20)],
        series=Series("model", ["Mon"] * 7, {f"m{i}": [10**6] * 7 for i in range(20)}, [10**6] * 7),
        budgets=[
            BudgetStatus(long, long, "month (UTC)", "", "", "", 10**6, 2 * 10**6, 1.0, 3 * 10**6, "over")
            for _ in range(30)
        ],
        alerts=AlertSummary(3, 1, [(long, "critical", "2026-11-20T00:00:00+00:00")] * 30, 1, 1, [long] * 30),
        notes=[long] * 10,
    )
    return r


def test_slack_message_is_valid_block_kit(report):
    msg = render_slack(report)
    checked = check_message({"text": msg["text"], "blocks": msg["blocks"]})
    assert checked["blocks"] and len(msg["blocks"]) <= 50
    assert msg["blocks"][0]["type"] == "header" and "2026-W47" in msg["blocks"][0]["text"]["text"]
    content = json.dumps(msg["blocks"])
    cost = f"${report.current.cost_nanos / 1e9:,.2f}"
    assert cost in msg["text"] and cost in content
    for section in (
        "Cost by model",
        "Cost by user",
        "Cost by team.id",
        "Top 5 sessions by cost",
        "Tools",
        "Budgets",
        "Alerts",
    ):
        assert section in content, section


def test_slack_message_at_the_limits_is_still_valid():
    msg = render_slack(_huge())
    check_message({"text": msg["text"], "blocks": msg["blocks"]})
    assert len(msg["blocks"]) <= 50
    assert len(msg["blocks"][0]["text"]["text"]) <= 150
    assert "posted late" in json.dumps(msg["blocks"])
    assert "&lt;&amp;&gt;" in json.dumps(msg["blocks"])  # data is escaped for mrkdwn


def test_empty_report_renders_short_everywhere():
    f = Figures()
    r = Report(
        "acme",
        "weekly",
        "2026-W30",
        "2026-07-20T00:00:00+02:00",
        "2026-07-27T00:00:00+02:00",
        "Europe/Berlin",
        "2026-07-27T09:00:00+02:00",
        f,
        None,
        notes=["No Claude Code usage was recorded for acme in 2026-W30."],
    )
    msg = render_slack(r)
    check_message({"text": msg["text"], "blocks": msg["blocks"]})
    assert len(msg["blocks"]) == 3 and "no usage recorded" in msg["text"]
    assert render_chart(r) is None
    assert json.loads(render_json(r))["empty"] is True


def test_json_carries_the_report_figures(report):
    d = json.loads(render_json(report))
    c = report.current
    assert d["current"]["cost_nanos"] == c.cost_nanos and d["current"]["cost_usd"] == round(c.cost_nanos / 1e9, 9)
    assert d["current"]["cache_hit_ratio"] == pytest.approx(c.cache_hit_ratio)
    assert d["previous"]["cost_nanos"] == report.previous.cost_nanos
    assert [m["key"] for m in d["by_model"]] == [b.key for b in report.by_model]
    assert d["period"] == "2026-W47" and d["timezone"] == "Europe/Berlin" and d["empty"] is False


def test_markdown_has_every_section(report):
    md = render_markdown(report)
    for heading in (
        "## Summary",
        "## Cost by model",
        "## Cost by user",
        "## Cost by team.id",
        "## Top 5 sessions",
        "## API errors",
        "## Tools",
        "## Budgets",
        "## Alerts",
    ):
        assert heading in md, heading
    assert f"| Cost | ${report.current.cost_nanos / 1e9:,.2f} | ${report.previous.cost_nanos / 1e9:,.2f} |" in md


def _png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk, checking the signature and the chunk CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, ctype = struct.unpack(">I4s", data[8:16])
    assert ctype == b"IHDR" and length == 13
    body = data[16 : 16 + length]
    (crc,) = struct.unpack(">I", data[16 + length : 20 + length])
    assert zlib.crc32(ctype + body) == crc
    assert data.endswith(b"IEND\xaeB`\x82")
    return struct.unpack(">II", body[:8])


def test_chart_is_a_png_of_the_expected_size(report):
    png = render_chart(report)
    assert _png_size(png) == (CHART_WIDTH, CHART_HEIGHT)
    assert _png_size(render_chart(report, 800, 400)) == (800, 400)
    assert _png_size(render_chart(_huge())) == (CHART_WIDTH, CHART_HEIGHT)


_APART_CHILD = """
import asyncio, pickle, sys
from relay.reports.deliver import render_chart_apart

report = pickle.load(open(sys.argv[1], "rb"))
png = asyncio.run(render_chart_apart(report))
sys.stdout.buffer.write(b"%d %d\\n" % (len(png), "matplotlib" in sys.modules))
"""


def test_the_daemon_renders_charts_in_a_child_process(report, tmp_path):
    """Scheduled reports render their chart in a short-lived child process: the same PNG, and the process that
    posts it never loads matplotlib (~40 MiB it would keep for good). Run in a fresh interpreter, since this test
    process has matplotlib loaded."""
    import pickle
    import subprocess
    import sys
    from pathlib import Path

    path = tmp_path / "report.pickle"
    path.write_bytes(pickle.dumps(report))
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", _APART_CHILD, str(path)], cwd=root, capture_output=True, check=True, timeout=120
    )
    size, loaded = out.stdout.split()
    assert int(size) == len(render_chart(report)) and loaded == b"0"
