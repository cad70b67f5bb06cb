"""Issue 5 end to end: a scheduled daily report through the running daemon (in-process relay, real sockets) to a
fake Slack on loopback (bot token, blocks validated with slack-sdk's models, files upload v2 flow).

The scheduler posts the period of the most recent cron firing, but never a firing from before the schedule was
first seen by the database (so adding a schedule does not post an old report at once), and a 5-field cron fires
at most once a minute. The daemon exposes no clock to inject, so the test drives the honest "relay was down at
the scheduled time" path with a short real wait:

1. relay ingests generated Claude Code API calls stamped in the report's day (at both of its boundaries), the
   day before and the next day, plus the replayed ``protobuf-tools`` capture;
2. relay starts with a daily schedule whose cron (croniter's optional 6th field, seconds) fires ~3 s later, so
   the schedule is recorded as seen, and is stopped before the firing;
3. relay starts again after the firing (more than ``late_after`` later): the missed day is posted once, marked
   late — one Block Kit message plus one PNG chart uploaded to the same channel;
4. relay starts a fourth time: nothing is posted again (``report_runs`` says posted).

The reported cost, call count and day-over-day change equal the figures computed in the test from what was sent
(the capture's own records count only when their date, 2026-11-21, falls in the reported day).
"""

from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest

from relay.model import usd_to_nanos
from tests.fakes.langfuse import FakeLangfuse
from tests.fakes.slack import FakeSlack
from tests.support.cc_traffic import CCTraffic
from tests.support.expected import by_name, events
from tests.support.inproc import replay, running_relay, settle

CHANNEL = "C0REPORTS"
TOKEN = "xoxb-report-token"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def overrides(slack: FakeSlack, cron: str | None) -> dict:
    """The Slack receiver; with ``cron``, the daily report schedule posting to it (late after 1 s)."""
    ov: dict = {
        "alerting": {
            "route": {"receiver": "usage"},
            "receivers": [
                {"name": "usage", "slack_configs": [{"bot_token": TOKEN, "channel": CHANNEL, "api_url": slack.api_url}]}
            ],
        }
    }
    if cron is not None:
        ov["reports"] = {
            "schedules": [
                {
                    "name": "daily-usage",
                    "period": "daily",
                    "cron": cron,
                    "timezone": "UTC",
                    "receiver": "usage",
                    "group_by": "team.id",
                    "late_after": "1s",
                }
            ]
        }
    return ov


def ns(dt: datetime) -> int:
    return int(dt.timestamp()) * 1_000_000_000


async def post_logs(relay, body: bytes) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.post(
            f"http://127.0.0.1:{relay.http.port}/v1/logs", data=body, headers={"Content-Type": "application/x-protobuf"}
        ) as r:
            assert r.status == 200, await r.text()


async def send_calls(relay, team: str, at: datetime, costs: list[float]) -> None:
    """One Claude Code session of ``team`` whose API calls (``costs`` in USD) happened at ``at`` + i minutes."""
    t = CCTraffic(resource={"team.id": team, "enduser.id": f"{team}-dev"})
    evs = []
    for i, c in enumerate(costs):
        name, attrs, _ = t.api_request(c)
        evs.append((name, attrs, ns(at + timedelta(minutes=i))))
    await post_logs(relay, t.request(*evs))


def micros(usd: float) -> int:
    """USD as the ledger's integer nano-USD (the name is historical)."""
    return usd_to_nanos(usd)


def usd(m: int) -> str:
    return f"${m / 1e9:,.2f}"


def capture_calls(start: datetime, end: datetime) -> list[int]:
    """Costs (micro-USD) of the capture's API calls whose event time falls in [start, end), decoded independently."""
    out = []
    for e in by_name(events("protobuf-tools"), "api_request"):
        when = datetime.strptime(e.attrs["event.timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        if start <= when < end:
            out.append(micros(float(e.attrs["cost_usd"])))
    return out


@pytest.mark.timeout(90)
async def test_missed_daily_report_posted_once_late_with_exact_figures(tmp_path):
    data = tmp_path / "data"
    now = datetime.now(UTC)
    to_midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC) - now
    if to_midnight < timedelta(seconds=40):  # keep the whole test inside one UTC day (deterministic periods)
        await asyncio.sleep(to_midnight.total_seconds() + 1)
    today_start = datetime.combine(datetime.now(UTC).date(), datetime.min.time(), UTC)
    day_start, day_end = today_start - timedelta(days=1), today_start  # the day the report covers: yesterday
    label = day_start.date().isoformat()

    # what is sent, and so what the report must say ([start, end) of the day: both boundaries are exercised)
    in_day = {"platform": (day_start, [1.25, 0.5]), "research": (day_end - timedelta(seconds=1), [2.13])}  # USD
    day_before = (day_start - timedelta(hours=5), [1.0])
    next_day = (day_end, [9.0])
    capture = capture_calls(day_start, day_end)
    total = sum(micros(c) for _, cs in in_day.values() for c in cs) + sum(capture)
    calls = sum(len(cs) for _, cs in in_day.values()) + len(capture)
    prev = micros(1.0) + sum(capture_calls(day_start - timedelta(days=1), day_start))
    change = f"{'+' if total > prev else '−'}{abs(total - prev) / prev * 100:.0f}%"

    async with FakeLangfuse() as lf, FakeSlack(bot_tokens=(TOKEN,), channels={CHANNEL: "claude-usage"}) as slack:
        # 1. the traffic, before any schedule exists
        async with running_relay(data, lf.base_url, overrides(slack, None)) as relay:
            for team, (at, costs) in in_day.items():
                await send_calls(relay, team, at, costs)
            await send_calls(relay, "platform", *day_before)
            await send_calls(relay, "platform", *next_day)
            assert set(await replay(relay, "protobuf-tools")) == {200}
            await settle(relay)

        # 2. relay starts with a daily schedule firing in ~3 s (cron with croniter's seconds field) and stops
        #    before it: the schedule is now known, yesterday's 09:00-style firing before that is never posted
        fire_at = math.ceil(time.time()) + 3
        fire = datetime.fromtimestamp(fire_at, UTC)
        assert fire.date() == today_start.date()
        ov = overrides(slack, f"{fire.minute} {fire.hour} * * * {fire.second}")
        async with running_relay(data, lf.base_url, ov) as relay:
            seen = lambda c: c.execute("SELECT first_seen FROM report_schedules").fetchall()  # noqa: E731
            deadline = time.monotonic() + 2
            while not await relay.spool.db.run(seen):  # the scheduler's first tick recorded the schedule
                assert time.monotonic() < deadline, "the report scheduler did not tick at start"
                await asyncio.sleep(0.02)
            assert await relay.reports.runs() == []
        assert time.time() < fire_at - 0.5, "relay was still running at the firing: the test machine is too slow"
        assert slack.requests == []

        # 3. relay is down at the firing and starts again more than late_after (1 s) later: posted once, late
        await asyncio.sleep(fire_at + 1.5 - time.time())
        async with running_relay(data, lf.base_url, ov) as relay:
            deadline = time.monotonic() + 15
            while not [f for f in slack.files().values() if f.completed]:
                assert time.monotonic() < deadline, f"no report posted: {[r.method for r in slack.requests]}"
                await asyncio.sleep(0.05)
            runs = await relay.reports.runs()

        # one Block Kit message (validated by the fake with slack-sdk's models) and one PNG in the same channel
        posts = slack.calls("chat.postMessage")
        assert [(p.status, p.response["ok"]) for p in posts] == [(200, True)]
        [msg] = [m for m in slack.messages(CHANNEL) if m.via == "api"]
        [png] = slack.files().values()
        assert png.completed and png.shared == [CHANNEL] and png.data.startswith(PNG_MAGIC)
        assert png.filename == f"claude-code-daily-default-{label}.png"
        assert [m.files for m in slack.messages(CHANNEL) if m.via == "file_share"] == [[png.id]]

        title = f"Claude Code daily report — default — {label}"
        assert msg.header == title
        content = msg.content()
        assert "posted late" in content
        assert f"*Cost*\n{usd(total)} ({change})" in content, content
        assert f"*API calls*\n{calls} " in content, content
        assert msg.text == f"{title}: {usd(total)} ({change} vs previous day)"
        assert "`platform`" in content and "`research`" in content  # the team.id breakdown
        assert f"<{lf.base_url}/project/project-test/sessions/" in content  # top sessions link to Langfuse
        assert [(r["period"], r["status"], r["late"]) for r in runs] == [(label, "posted", 1)]

        # 4. a fourth start: the period is already posted, nothing is sent again
        async with running_relay(data, lf.base_url, ov) as relay:
            await asyncio.sleep(1.0)
            runs = await relay.reports.runs()
        assert len(slack.calls("chat.postMessage")) == 1 and len(slack.files()) == 1
        assert [(r["period"], r["status"]) for r in runs] == [(label, "posted")]
