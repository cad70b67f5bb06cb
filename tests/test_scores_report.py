"""The report's "quality" section from the ledger's score table: outcome counts, score distributions and the worst
sessions, computed from generated Claude Code sessions scored by a running relay."""

from __future__ import annotations

import argparse
import json
import time
import uuid
from datetime import UTC, datetime

import aiohttp
import pytest

from relay.cli import report as cli
from tests.fakes.langfuse import FakeLangfuse
from tests.support.cc_traffic import CCTraffic
from tests.support.inproc import running_relay, settle
from tests.support.scores_truth import scores_settled


def relay_report(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="relay")
    cli.add_subparser(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(["report", *argv])
    return args.fn(args)


async def test_weekly_report_has_a_quality_section(tmp_path, capsys):
    clean, failed, abandoned = CCTraffic(), CCTraffic(), CCTraffic()
    costs = {clean.session: 0.25, failed.session: 0.5, abandoned.session: 0.125}
    reqs = [
        clean.request(clean.event("user_prompt", prompt_length="3"), clean.api_request(0.25)),
        failed.request(
            failed.event("user_prompt", prompt_length="3"),
            failed.api_request(0.5),
            failed.api_error(529),
            failed.event("api_retries_exhausted", status_code=529, error="Overloaded"),
        ),
    ]
    tuid = f"toolu_{uuid.uuid4().hex[:20]}"
    reqs.append(
        abandoned.request(
            abandoned.event("user_prompt", prompt_length="3"),
            abandoned.api_request(0.125),
            abandoned.event(
                "tool_decision", tool_use_id=tuid, decision="reject", source="user_reject", tool_name="Bash"
            ),
        )
    )
    ov = {"scores": {"session_idle": "300ms", "check_interval": "50ms"}, "auth": {"default_tenant": "acme"}}
    async with FakeLangfuse() as lf:
        async with running_relay(tmp_path / "data", lf.base_url, ov) as relay:
            async with aiohttp.ClientSession() as s:
                for body in reqs:
                    async with s.post(
                        f"http://127.0.0.1:{relay.http.port}/v1/logs",
                        data=body,
                        headers={"Content-Type": "application/x-protobuf"},
                    ) as r:
                        assert r.status == 200
            await settle(relay)
            await scores_settled(relay)
    config = tmp_path / "config.yaml"
    config.write_text(f"storage:\n  directory: {tmp_path / 'data'}\nauth:\n  default_tenant: acme\n")
    day = datetime.fromtimestamp(time.time(), UTC).strftime("%Y-%m-%d")
    assert relay_report(["daily", "--day", day, "-c", str(config), "--tz", "UTC", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    q = doc["quality"]
    assert q["outcomes"] == {"clean": 1, "failed": 1, "abandoned": 1}
    assert [(w["session_id"], w["outcome"]) for w in q["worst"]] == [
        (failed.session, "failed"),
        (abandoned.session, "abandoned"),
    ]
    assert q["worst"][0]["cost_usd"] == pytest.approx(0.5)
    stats = {(s["name"], s["level"]): s for s in q["scores"]}
    session_cost = stats[("cost_usd", "session")]
    assert session_cost["count"] == 3 and session_cost["mean"] == pytest.approx(sum(costs.values()) / 3)
    assert stats[("retries_exhausted", "session")]["max"] == 1
    assert relay_report(["daily", "--day", day, "-c", str(config), "--tz", "UTC"]) == 0
    md = capsys.readouterr().out
    assert "## Quality" in md and f"| {failed.session} | failed |" in md
    # the Slack rendering of the same report carries the section, with the failed session linked first
    from zoneinfo import ZoneInfo

    from relay.reports.compute import ReportRequest
    from relay.reports.periods import period_containing
    from relay.reports.render_slack import render_slack
    from relay.reports.service import ReportService

    svc = ReportService(tmp_path / "data" / "relay.db", session_url=lambda t, s: f"https://lf.example/sessions/{s}")
    rep = svc.compute_sync(ReportRequest("acme", period_containing("daily", datetime.now(UTC), ZoneInfo("UTC"))))
    text = json.dumps(render_slack(rep)["blocks"])
    assert "*Quality*" in text and "failed 1" in text and "abandoned 1" in text
    assert text.index(f"https://lf.example/sessions/{failed.session}") < text.index(
        f"https://lf.example/sessions/{abandoned.session}"
    )
