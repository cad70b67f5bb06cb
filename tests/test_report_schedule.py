"""The report scheduler against the loopback fake Slack (real HTTP through slack-sdk) and a loopback webhook
receiver: one message with valid blocks and one uploaded PNG per period and destination; exactly once across
restarts, crashes and replicas sharing the database; a missed period posted once, late; retries after outages."""

from __future__ import annotations

import asyncio
import json
import struct
import time
from datetime import datetime

import pytest
from aiohttp import web

from relay.component import deadline_in
from relay.notify.config import ReceiverConfig
from relay.notify.slack.config import SlackConfig
from relay.notify.webhook.config import WebhookConfig
from relay.reports.config import ReportsConfig
from relay.reports.service import build_scheduler
from relay.store.sqlite import SqliteDB
from tests.fakes.slack import FakeSlack
from tests.support.webhook_signature import consumer_verifies
from tests.test_report_support import BERLIN, Ledger, generate_week, week_start, write_ledger

TOKEN = "xoxb-test-token"


class Clock:
    """A settable clock (unix seconds)."""

    def __init__(self, when: datetime):
        self.t = when.timestamp()

    def set(self, when: datetime) -> None:
        self.t = when.timestamp()

    def __call__(self) -> float:
        return self.t


def at(day: int, hour: int, minute: int = 0, month: int = 11) -> datetime:
    """A Berlin wall-clock time in 2026."""
    return datetime(2026, month, day, hour, minute, tzinfo=BERLIN)


@pytest.fixture(scope="module")
def ledger_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("sched") / "relay.db"
    led = Ledger()
    for w in (46, 47, 48):
        generate_week(led, week_start(2026, w), seed=w)
        generate_week(led, week_start(2026, w), tenant="other", seed=w + 100, prefix=f"o{w}")
    write_ledger(path, led)
    return path


@pytest.fixture
async def slack():
    async with FakeSlack((TOKEN,)) as fake:
        yield fake


@pytest.fixture
def db_path(ledger_path, tmp_path):
    path = tmp_path / "relay.db"
    path.write_bytes(ledger_path.read_bytes())
    return path


def reports_cfg(**kw) -> ReportsConfig:
    sched = {
        "name": "weekly",
        "period": "weekly",
        "cron": "0 9 * * 1",
        "timezone": "Europe/Berlin",
        "receiver": "team",
        "tenant": "acme",
        **kw,
    }
    return ReportsConfig.model_validate({"schedules": [sched], "claim_timeout": "10m", "retry_initial": "1m"})


def receivers(slack: FakeSlack, **extra) -> list[ReceiverConfig]:
    """Receiver ``team``: a bot-token Slack config posting to #reports of ``slack`` (plus ``extra`` configs)."""
    bot = SlackConfig(bot_token=TOKEN, channel="#reports", api_url=slack.api_url, timeout=5)
    return [ReceiverConfig(name="team", slack_configs=[bot], **extra)]


class Replica:
    """One relay process: its own connection to the shared database, its own scheduler (fresh owner id)."""

    def __init__(self, db_path, clock, cfg, recv, tenants=("acme",)):
        self.db = SqliteDB(db_path)
        self.db.open()
        self.scheduler, self.deliverer = build_scheduler(cfg, self.db, recv, list(tenants), now=clock)

    async def close(self) -> None:
        await self.scheduler.shutdown(deadline_in(5))
        self.db.close()


@pytest.fixture
async def replicas():
    made: list[Replica] = []

    def make(*args, **kw) -> Replica:
        r = Replica(*args, **kw)
        made.append(r)
        return r

    yield make
    for r in made:
        await r.close()


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def posts(slack: FakeSlack) -> list:
    return [m for m in slack.messages("#reports") if m.via == "api"]


async def test_one_message_and_one_png_per_period(slack, db_path, replicas):
    clock = Clock(at(16, 8, 50))
    r = replicas(db_path, clock, reports_cfg(), receivers(slack))
    assert await r.scheduler.tick() == []  # last firing (Nov 9) predates the schedule
    clock.set(at(23, 9, 0))
    [res] = await r.scheduler.tick()
    assert (res.status, res.period, res.late) == ("posted", "2026-W47", False)
    clock.set(at(23, 9, 30))
    assert await r.scheduler.tick() == []
    clock.set(at(30, 9, 1))
    [res] = await r.scheduler.tick()
    assert res.period == "2026-W48"
    msgs = posts(slack)
    assert [m.header for m in msgs] == [
        "Claude Code weekly report — acme — 2026-W47",
        "Claude Code weekly report — acme — 2026-W48",
    ]
    assert all("posted late" not in m.content() for m in msgs)
    files = list(slack.files().values())
    assert len(files) == 2 and all(f.completed and f.shared == [msgs[0].channel] for f in files)
    assert [f.filename for f in files] == [f"claude-code-weekly-acme-2026-W{w}.png" for w in (47, 48)]
    assert all(png_size(f.data) == (1200, 600) for f in files)
    runs = await r.scheduler.runs()
    assert [(x["period"], x["status"], x["destination"]) for x in runs] == [
        ("2026-W47", "posted", "team/slack/0"),
        ("2026-W48", "posted", "team/slack/0"),
    ]
    assert json.loads(runs[0]["state"])["ts"] == msgs[0].ts


async def test_restart_around_the_schedule_time_posts_once(slack, db_path, replicas):
    clock = Clock(at(23, 8, 58))
    cfg, recv = reports_cfg(), receivers(slack)
    first = replicas(db_path, clock, cfg, recv)
    assert await first.scheduler.tick() == []
    await first.close()  # stopped before 09:00
    clock.set(at(23, 9, 1))
    second = replicas(db_path, clock, cfg, recv)
    assert [x.status for x in await second.scheduler.tick()] == ["posted"]
    await second.close()  # restarted right after posting
    clock.set(at(23, 9, 2))
    third = replicas(db_path, clock, cfg, recv)
    assert await third.scheduler.tick() == []
    assert len(posts(slack)) == 1 and len(slack.files()) == 1


async def test_crash_before_posting_is_retried_after_the_claim_timeout(slack, db_path, replicas):
    clock = Clock(at(23, 8, 0))
    cfg, recv = reports_cfg(), receivers(slack)
    crashed = replicas(db_path, clock, cfg, recv)
    await crashed.scheduler.tick()
    clock.set(at(23, 9, 0))
    entered = asyncio.Event()
    real = crashed.scheduler.deliverer

    class Hanging:
        destinations = real.destinations

        async def deliver(self, *args):
            entered.set()
            await asyncio.Event().wait()

    crashed.scheduler.deliverer = Hanging()
    task = asyncio.create_task(crashed.scheduler.tick())
    await asyncio.wait_for(entered.wait(), 10)
    task.cancel()  # the process dies after claiming, before anything reached Slack
    await asyncio.gather(task, return_exceptions=True)
    clock.set(at(23, 9, 5))
    other = replicas(db_path, clock, cfg, recv)
    assert await other.scheduler.tick() == []  # still claimed by the dead process
    clock.set(at(23, 9, 11))
    assert [x.status for x in await other.scheduler.tick()] == ["posted"]
    assert [x["attempts"] for x in await other.scheduler.runs()] == [2]
    assert len(posts(slack)) == 1


async def test_crash_after_slack_accepted_is_the_documented_at_least_once_window(slack, db_path, replicas):
    clock = Clock(at(23, 8, 0))
    cfg, recv = reports_cfg(), receivers(slack)
    a = replicas(db_path, clock, cfg, recv)
    await a.scheduler.tick()
    clock.set(at(23, 9, 0))
    slack.reset_connection(method="chat.postMessage", after=True)  # posted, answer lost: relay cannot know
    [res] = await a.scheduler.tick()
    assert res.status == "retry"
    clock.set(at(23, 9, 2))
    [res] = await a.scheduler.tick()
    assert res.status == "posted"
    assert len(posts(slack)) == 2  # Slack has no idempotency key for chat.postMessage


async def test_replicas_sharing_the_database_post_once(slack, db_path, replicas):
    clock = Clock(at(23, 8, 0))
    cfg, recv = reports_cfg(), receivers(slack)
    a, b = replicas(db_path, clock, cfg, recv), replicas(db_path, clock, cfg, recv)
    await a.scheduler.tick()
    await b.scheduler.tick()
    clock.set(at(23, 9, 0))
    slack.slow(0.3, method="chat.postMessage")  # both ticks overlap the slow post
    ra, rb = await asyncio.gather(a.scheduler.tick(), b.scheduler.tick())
    assert sorted(len(x) for x in (ra, rb)) == [0, 1]
    assert len(posts(slack)) == 1 and len(slack.files()) == 1


async def test_missed_period_is_posted_once_and_marked_late(slack, db_path, replicas):
    clock = Clock(at(9, 8, 0))
    cfg, recv = reports_cfg(), receivers(slack)
    r = replicas(db_path, clock, cfg, recv)
    await r.scheduler.tick()
    clock.set(at(16, 9, 0))
    assert [x.period for x in await r.scheduler.tick()] == ["2026-W46"]
    # relay is down from Nov 16 until Wednesday Dec 2: W47 and W48 were missed; only the latest is posted.
    clock.set(at(2, 10, 0, month=12))
    [res] = await r.scheduler.tick()
    assert (res.period, res.late, res.status) == ("2026-W48", True, "posted")
    clock.set(at(2, 11, 0, month=12))
    assert await r.scheduler.tick() == []
    msgs = posts(slack)
    assert [m.header.rsplit(" ", 1)[-1] for m in msgs] == ["2026-W46", "2026-W48"]
    assert "posted late" in msgs[1].content() and "posted late" not in msgs[0].content()
    runs = await r.scheduler.runs()
    assert [(x["period"], x["late"]) for x in runs] == [("2026-W46", 0), ("2026-W48", 1)]


async def test_ready_is_awaited_before_a_report_is_computed(slack, db_path, replicas):
    """The daemon's ``ready`` (the Langfuse project lookups answered) holds a due report back until it returns."""
    clock = Clock(at(9, 8, 0))
    r = replicas(db_path, clock, reports_cfg(), receivers(slack))
    await r.scheduler.tick()
    gate, order = asyncio.Event(), []
    compute = r.scheduler.compute

    async def ready() -> None:
        order.append("ready")
        await gate.wait()
        order.append("ready done")

    async def recording(*args):
        order.append("compute")
        return await compute(*args)

    r.scheduler.ready, r.scheduler.compute = ready, recording
    clock.set(at(16, 9, 0))
    tick = asyncio.create_task(r.scheduler.tick())
    deadline = time.monotonic() + 10
    while not order:  # the tick's database jobs come first
        assert time.monotonic() < deadline, "the tick never asked whether links are ready"
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)  # held there: nothing computed or posted while ready() waits
    assert order == ["ready"] and posts(slack) == []
    gate.set()
    [res] = await tick
    assert res.status == "posted" and order == ["ready", "ready done", "compute"]


async def test_outage_and_rate_limit_are_retried_with_backoff_without_duplicates(slack, db_path, replicas):
    clock = Clock(at(23, 8, 0))
    cfg, recv = reports_cfg(), receivers(slack)
    r = replicas(db_path, clock, cfg, recv)
    await r.scheduler.tick()
    clock.set(at(23, 9, 0))
    slack.rate_limit(retry_after=300, method="chat.postMessage")
    [res] = await r.scheduler.tick()
    assert res.status == "retry" and "ratelimited" in res.error
    clock.set(at(23, 9, 4))  # before Retry-After (5 min) has passed
    assert await r.scheduler.tick() == []
    clock.set(at(23, 9, 6))
    slack.fail(503, method="upload")  # message posted, chart upload fails
    [res] = await r.scheduler.tick()
    assert res.status == "retry"
    clock.set(at(23, 9, 9))  # backoff doubles: 2 min after the second failure
    [res] = await r.scheduler.tick()
    assert res.status == "posted"
    assert len(posts(slack)) == 1
    assert len([f for f in slack.files().values() if f.completed]) == 1  # the failed upload was never shared


async def test_permanent_error_is_not_retried(slack, db_path, replicas):
    clock = Clock(at(23, 8, 0))
    r = replicas(db_path, clock, reports_cfg(), receivers(slack))
    await r.scheduler.tick()
    clock.set(at(23, 9, 0))
    slack.error("channel_not_found", method="chat.postMessage")
    [res] = await r.scheduler.tick()
    assert res.status == "failed" and "channel_not_found" in res.error
    clock.set(at(23, 12, 0))
    assert await r.scheduler.tick() == []
    assert posts(slack) == []


async def test_every_tenant_and_destination_gets_one_post(slack, db_path, replicas):
    hits: list[tuple[dict, bytes]] = []
    secret = "s3cret"

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        if not consumer_verifies(
            secret,
            request.headers.get("X-Relay-Timestamp"),
            body,
            request.headers.get("X-Relay-Signature"),
            now=clock(),
        ):
            return web.Response(status=401, text="bad signature")
        hits.append((dict(request.headers), body))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        clock = Clock(at(23, 8, 0))
        cfg = reports_cfg(tenant=None, channel="#alerts")
        hook_cfg = WebhookConfig(url=f"http://127.0.0.1:{port}/hook", hmac_secret=secret)
        recv = receivers(slack, webhook_configs=[hook_cfg])
        r = replicas(db_path, clock, cfg, recv, tenants=("acme", "other"))
        await r.scheduler.tick()
        clock.set(at(23, 9, 0))
        results = await r.scheduler.tick()
        assert sorted((x.tenant, x.destination, x.status) for x in results) == [
            ("acme", "team/slack/0", "posted"),
            ("acme", "team/webhook/0", "posted"),
            ("other", "team/slack/0", "posted"),
            ("other", "team/webhook/0", "posted"),
        ]
        assert posts(slack) == [] and len(slack.messages("#alerts")) == 4  # 2 reports + 2 file shares
        assert sorted(json.loads(b)["tenant"] for _, b in hits) == ["acme", "other"]
        payload = json.loads(hits[0][1])
        assert payload["kind"] == "relay.usage_report" and payload["period"] == "2026-W47"
        assert payload["report"]["current"]["cost_nanos"] > 0 and payload["markdown"].startswith("# Claude Code")
        assert all(h["X-Relay-Idempotency-Key"].endswith(":report") for h, _ in hits)
        clock.set(at(23, 9, 30))
        assert await r.scheduler.tick() == []
    finally:
        await runner.cleanup()


async def test_incoming_webhook_slack_posts_blocks_without_the_chart(slack, db_path, replicas):
    clock = Clock(at(23, 8, 0))
    recv = [ReceiverConfig(name="team", slack_configs=[SlackConfig(webhook_url=slack.webhook_url("C0REPORTS"))])]
    r = replicas(db_path, clock, reports_cfg(), recv)
    await r.scheduler.tick()
    clock.set(at(23, 9, 0))
    assert [x.status for x in await r.scheduler.tick()] == ["posted"]
    [msg] = slack.messages("C0REPORTS")
    assert msg.via == "webhook" and "2026-W47" in msg.header and "cannot upload files" in msg.content()


async def test_empty_week_posts_a_short_message_without_a_chart(slack, db_path, replicas):
    clock = Clock(at(30, 8, 0, month=11))
    r = replicas(db_path, clock, reports_cfg(), receivers(slack))
    await r.scheduler.tick()
    clock.set(at(7, 9, 0, month=12))  # W49 has no usage
    assert [x.status for x in await r.scheduler.tick()] == ["posted"]
    [msg] = posts(slack)
    assert "No Claude Code usage was recorded for acme in 2026-W49" in msg.content()
    assert slack.files() == {}


async def test_background_loop_wakes_at_the_cron_time(slack, db_path, replicas):
    fire = at(23, 9, 0).timestamp()
    t0 = time.monotonic()
    start = fire - 0.3

    def clock() -> float:
        return start + (time.monotonic() - t0)

    r = replicas(db_path, clock, reports_cfg(), receivers(slack))
    r.scheduler.open()
    await r.db.run(lambda c: c.execute("INSERT INTO report_schedules VALUES ('weekly', ?)", (start - 3600,)))
    await r.scheduler.start()
    deadline = time.monotonic() + 10
    while not posts(slack) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert len(posts(slack)) == 1
    assert clock() >= fire
