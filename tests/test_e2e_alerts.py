"""Issue 3 end to end on the real wire: Claude Code fixtures plus generated Claude Code events pushed into a running
relay (OTLP/HTTP) cross a budget rule and an error-rate rule; a fake Slack (loopback, validating auth and blocks
with slack-sdk's models) receives exactly the expected messages within a second; inhibition keeps the 50 % alert
quiet once the 100 % one fires; a silence mutes; a restart in the middle changes nothing; the alert resolves (the
parent message edited, a resolved note in its thread); a broken rule file is refused on reload with a useful error.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest
import yaml

from tests.fakes.langfuse import FakeLangfuse
from tests.fakes.slack import FakeSlack
from tests.support.cc_traffic import CCTraffic
from tests.support.expected import by_name, events
from tests.support.inproc import replay, running_relay

CHANNEL = "C0ALERTS"
TOKEN = "xoxb-test-token"


def fixture_spend(scenario: str) -> float:
    """USD Claude Code reported for the scenario's API calls (decoded independently of relay)."""
    return sum(float(e.attrs["cost_usd"]) for e in by_name(events(scenario), "api_request"))


def write_rules(path: Path, limit_usd: float) -> None:
    path.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "budgets",
                        "rules": [
                            {
                                "alert": "PlatformBudget",
                                "kind": "budget",
                                "matchers": ['team.id="platform"'],
                                "group_by": ["team.id"],
                                "limit_usd": limit_usd,
                                "window": "3650d",
                                "thresholds": [
                                    {"percent": 50, "severity": "warning"},
                                    {"percent": 100, "severity": "critical"},
                                ],
                                "annotations": {
                                    "summary": "Team {{ labels['team.id'] }} spent {{ values.spend | usd }} of "
                                    "{{ values.limit | usd }}"
                                },
                            }
                        ],
                    },
                    {
                        "name": "failures",
                        "rules": [
                            {
                                "alert": "ApiErrorRate",
                                "kind": "error_rate",
                                "errors": {"kind": "llm"},
                                "group_by": ["team.id"],
                                "matchers": ['team.id=~"e2e-.*"'],
                                "window": "4s",
                                "ratio": 0.3,
                                "min_count": 4,
                                "labels": {"severity": "warning"},
                                "annotations": {"summary": "{{ values.ratio | ratio }} of API calls failed"},
                            }
                        ],
                    },
                ]
            }
        )
    )


def overrides(rules: Path, slack: FakeSlack) -> dict:
    return {
        # a long idle timeout: interactions stay open; the ledger still hears of each call at once
        "pipeline": {"idle_timeout": "30s", "root_grace": "30s"},
        "rules": {"files": [str(rules)], "evaluation_interval": "200ms", "watch": False},
        "alerting": {
            "route": {
                "receiver": "slack",
                "group_by": ["alertname", "team.id", "threshold"],
                "group_wait": "0s",
                "group_interval": "200ms",
                "repeat_interval": "1h",
            },
            "receivers": [
                {"name": "slack", "slack_configs": [{"bot_token": TOKEN, "channel": CHANNEL, "api_url": slack.api_url}]}
            ],
            "inhibit_rules": [
                {
                    "source_matchers": ['threshold="100"'],
                    "target_matchers": ['threshold="50"'],
                    "equal": ["alertname", "team.id", "tenant"],
                }
            ],
        },
    }


async def post_logs(relay, body: bytes) -> float:
    """POST an OTLP/HTTP protobuf logs request; returns the monotonic time the acknowledgement arrived."""
    async with aiohttp.ClientSession() as s:
        async with s.post(
            f"http://127.0.0.1:{relay.http.port}/v1/logs", data=body, headers={"Content-Type": "application/x-protobuf"}
        ) as r:
            assert r.status == 200, await r.text()
    return time.monotonic()


async def wait_messages(slack: FakeSlack, n: int, timeout: float = 5.0) -> float:
    """Wait until the channel has ``n`` top-level messages; returns the monotonic time it happened."""
    deadline = time.monotonic() + timeout
    while len(slack.messages(CHANNEL)) < n:
        assert time.monotonic() < deadline, f"{len(slack.messages(CHANNEL))} Slack messages, expected {n}"
        await asyncio.sleep(0.01)
    return time.monotonic()


async def quiet(slack: FakeSlack, seconds: float = 1.0) -> list:
    """Let ``seconds`` pass and return every chat call made meanwhile (none expected)."""
    before = len(slack.requests)
    await asyncio.sleep(seconds)
    return [r for r in slack.requests[before:] if r.method.startswith("chat.")]


def text_of(msg) -> str:
    return " ".join([msg.text or "", str(msg.all_blocks())])


async def api(relay, method: str, path: str, body=None):
    async with aiohttp.ClientSession() as s:
        async with s.request(method, f"http://127.0.0.1:{relay.admin_port}{path}", json=body) as r:
            if r.content_type == "application/json":
                return r.status, await r.json()
            return r.status, await r.text()


@pytest.mark.timeout(90)
async def test_budget_and_error_rate_alerts_reach_slack(tmp_path):
    spend = fixture_spend("protobuf-tools")
    limit = spend / 0.4  # the fixture session alone is 40 % of the budget
    rules = tmp_path / "rules.yaml"
    write_rules(rules, limit)
    data = tmp_path / "data"
    async with FakeLangfuse() as lf, FakeSlack(bot_tokens=(TOKEN,), channels={CHANNEL: "alerts"}) as slack:
        ov = overrides(rules, slack)
        async with running_relay(data, lf.base_url, ov) as relay:
            assert set(await replay(relay, "protobuf-tools")) == {200}
            assert await quiet(slack, 1.0) == []  # 40 %: below every threshold

            # generated traffic of the same team: +15 % crosses 50 %
            platform = CCTraffic(resource={"team.id": "platform", "enduser.id": "jdoe"})
            acked = await post_logs(relay, platform.request(platform.api_request(0.15 * limit)))
            arrived = await wait_messages(slack, 1)
            assert arrived - acked < 1.0, f"Slack message {arrived - acked:.3f}s after the crossing record"
            [m50] = slack.messages(CHANNEL)
            assert "PlatformBudget" in text_of(m50) and "50" in text_of(m50)

            # +50 % more crosses 100 %: a new critical message; the 50 % alert is inhibited (no update to it)
            await post_logs(relay, platform.request(platform.api_request(0.5 * limit)))
            await wait_messages(slack, 2)
            m100 = slack.messages(CHANNEL)[1]
            assert "PlatformBudget" in text_of(m100) and "critical" in text_of(m100).lower()
            status, body = await api(relay, "GET", "/api/v1/alerts")
            assert status == 200
            budget = {
                a["labels"]["threshold"]: a
                for a in body["data"]["alerts"]
                if a["labels"]["alertname"] == "PlatformBudget"
            }
            assert budget["50"]["state"] == budget["100"]["state"] == "firing"
            assert budget["50"]["inhibitedBy"] and not budget["100"]["inhibitedBy"]
            assert budget["100"]["values"]["spend"] == pytest.approx(
                spend + 0.65 * limit, abs=5e-6
            )  # ledger keeps micro-USD

            # a silence mutes the errors of team e2e-muted; team e2e-loud pages
            status, sil = await api(
                relay,
                "POST",
                "/api/v2/silences",
                {
                    "matchers": [{"name": "team.id", "value": "e2e-muted", "isRegex": False, "isEqual": True}],
                    "startsAt": _rfc3339(time.time() - 1),
                    "endsAt": _rfc3339(time.time() + 3600),
                    "createdBy": "test",
                    "comment": "known outage",
                },
            )
            assert status == 200 and sil["silenceID"]
            for team in ("e2e-muted", "e2e-loud"):
                t = CCTraffic(resource={"team.id": team})
                await post_logs(
                    relay, t.request(t.api_request(0.001), t.api_request(0.001), *(t.api_error(500) for _ in range(3)))
                )
            await wait_messages(slack, 3)
            assert await quiet(slack, 0.5) == []
            [loud] = [m for m in slack.messages(CHANNEL) if "ApiErrorRate" in text_of(m)]
            assert "e2e-loud" in text_of(loud) and "e2e-muted" not in text_of(loud)
            loud_ts = loud.ts

        # restart while the error alert still fires: nothing is re-sent
        async with running_relay(data, lf.base_url, ov) as relay:
            assert await quiet(slack, 1.0) == []
            status, body = await api(relay, "GET", "/api/v1/alerts")
            firing = {
                (a["labels"]["alertname"], a["labels"].get("team.id"))
                for a in body["data"]["alerts"]
                if a["state"] == "firing"
            }
            assert ("ApiErrorRate", "e2e-loud") in firing

            # the errors leave the 4 s window: resolved — the parent is edited and a note lands in its thread
            deadline = time.monotonic() + 10
            while not slack.thread(CHANNEL, loud_ts):
                assert time.monotonic() < deadline, "no resolved note"
                await asyncio.sleep(0.05)
            parent = slack.message(CHANNEL, loud_ts)
            assert parent.edits >= 1 and "resolved" in text_of(parent).lower()
            assert "resolved" in text_of(slack.thread(CHANNEL, loud_ts)[-1]).lower()
            assert len(slack.messages(CHANNEL)) == 3  # still exactly three parents

            # a broken rule file is refused; the old rules keep running
            rules.write_text(rules.read_text().replace("ratio: 0.3", "ratio: lots"))
            status, body = await api(relay, "POST", "/-/reload")
            assert status == 500
            text = str(body)
            assert "rules.yaml" in text and "ApiErrorRate" in text and "ratio" in text
            status, body = await api(relay, "GET", "/api/v1/alerts")
            assert any(a["labels"]["alertname"] == "PlatformBudget" for a in body["data"]["alerts"])


def _rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


@pytest.mark.slow
def test_kill_9_after_notifying_neither_forgets_nor_renotifies(tmp_path):
    """relay as a subprocess: a budget alert fires and reaches Slack; SIGKILL; a restart keeps the alert firing
    (``/api/v1/alerts``) and sends nothing again; a further crossing still notifies once."""
    import json
    import urllib.request

    from tests.support.relay_proc import RelayProcess

    rules = tmp_path / "rules.yaml"
    write_rules(rules, limit_usd=1.0)
    with FakeSlack.run_in_thread(bot_tokens=(TOKEN,), channels={CHANNEL: "alerts"}) as slack:
        ov = overrides(rules, slack)
        relay = RelayProcess(tmp_path / "data", overrides=ov).start()
        platform = CCTraffic(resource={"team.id": "platform"})

        def post(body: bytes) -> None:
            req = urllib.request.Request(
                relay.http_url + "/v1/logs", data=body, headers={"Content-Type": "application/x-protobuf"}
            )
            assert urllib.request.urlopen(req, timeout=5).status == 200

        def wait(n: int) -> None:
            deadline = time.monotonic() + 10
            while len(slack.messages(CHANNEL)) < n:
                assert time.monotonic() < deadline, relay.logs()[-2000:]
                time.sleep(0.02)

        post(platform.request(platform.api_request(0.6)))  # 60 %: the 50 % alert
        wait(1)
        relay.kill9()
        relay2 = RelayProcess(
            tmp_path / "data",
            overrides=ov,
            http_port=relay.http_port,
            grpc_port=relay.grpc_port,
            admin_port=relay.admin_port,
        ).start()
        try:
            time.sleep(1.5)
            assert len(slack.messages(CHANNEL)) == 1 and not slack.thread(CHANNEL, slack.messages(CHANNEL)[0].ts)
            with urllib.request.urlopen(f"http://127.0.0.1:{relay2.admin_port}/api/v1/alerts", timeout=5) as r:
                alerts = json.load(r)["data"]["alerts"]
            assert [(a["labels"]["threshold"], a["state"]) for a in alerts] == [("50", "firing")]
            relay = relay2
            post(platform.request(platform.api_request(0.5)))  # 110 %: the 100 % alert, once
            wait(2)
            time.sleep(0.5)
            assert len(slack.messages(CHANNEL)) == 2
        finally:
            assert relay2.terminate() == 0
