"""Crashes during a notification call, on the real wire (issue 15, items 7 and 8): relay runs as a subprocess, a
Claude Code budget or failure record fires a rule, the fake service applies the call but holds its answer back,
and relay dies (``kill -9``) or is stopped (SIGTERM with a short ``shutdown_timeout``) before hearing back. After
the restart the alert must have reached the service exactly once:

- Slack: one parent message — found again with ``conversations.history`` by the metadata relay set on it;
- Jira Cloud whose search lags 3 s behind creates: one issue — relay waits out its ``search_lag`` and searches
  before creating, and the later repeat reminders comment on that issue.
"""

from __future__ import annotations

import time
import urllib.request

import pytest
import yaml

from tests.fakes.jira import FakeJira
from tests.fakes.slack import FakeSlack
from tests.support.cc_traffic import CCTraffic
from tests.support.relay_proc import RelayProcess
from tests.test_e2e_jira import overrides

CHANNEL, TOKEN = "C0ALERTS", "xoxb-test-token"
USER, API_TOKEN = "relay@example.com", "cloud-token"
TEAM = "e2e-crash"


def post(relay: RelayProcess, body: bytes) -> None:
    """POST an OTLP/HTTP protobuf logs request (200 expected)."""
    req = urllib.request.Request(
        relay.http_url + "/v1/logs", data=body, headers={"Content-Type": "application/x-protobuf"}
    )
    assert urllib.request.urlopen(req, timeout=5).status == 200


def wait(cond, what: str, relay: RelayProcess | None = None, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n" + (relay.logs()[-3000:] if relay else "")
        time.sleep(0.01)


def restarted(relay: RelayProcess, ov: dict) -> RelayProcess:
    return RelayProcess(
        relay.data_dir, overrides=ov, http_port=relay.http_port, grpc_port=relay.grpc_port, admin_port=relay.admin_port
    ).start()


def drained(relay: RelayProcess) -> bool:
    return relay.metric("relay_outbox_queue_size") == 0


# ------------------------------------------------------------------------------------------------------ Slack
def slack_overrides(rules, slack) -> dict:
    return {
        "pipeline": {"idle_timeout": "30s", "root_grace": "30s"},
        "rules": {"files": [str(rules)], "evaluation_interval": "200ms", "watch": False},
        "alerting": {
            "route": {
                "receiver": "slack",
                "group_by": ["alertname", "team.id"],
                "group_wait": "0s",
                "group_interval": "200ms",
                "repeat_interval": "1h",
            },
            "receivers": [
                {"name": "slack", "slack_configs": [{"bot_token": TOKEN, "channel": CHANNEL, "api_url": slack.api_url}]}
            ],
        },
    }


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_kill_9_during_a_slack_post_gives_one_message(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "budgets",
                        "rules": [
                            {
                                "alert": "TeamBudget",
                                "kind": "budget",
                                "matchers": [f'team.id="{TEAM}"'],
                                "group_by": ["team.id"],
                                "limit_usd": 1.0,
                                "window": "3650d",
                                "thresholds": [{"percent": 50, "severity": "warning"}],
                            }
                        ],
                    }
                ]
            }
        )
    )
    with FakeSlack.run_in_thread(bot_tokens=(TOKEN,), channels={CHANNEL: "alerts"}) as slack:
        ov = slack_overrides(rules, slack)
        relay = RelayProcess(tmp_path / "data", overrides=ov).start()
        try:
            slack.hold(60.0, method="chat.postMessage")  # Slack posts it; relay never hears back
            traffic = CCTraffic(resource={"team.id": TEAM})
            post(relay, traffic.request(traffic.api_request(0.6)))  # 60 % of the budget
            wait(lambda: slack.messages(CHANNEL), "the post to reach Slack", relay)
            time.sleep(0.01)
        finally:
            relay.kill9()
        slack.clear_faults()
        relay = restarted(relay, ov)
        try:
            time.sleep(0.5)
            wait(lambda: drained(relay), "the retried notification", relay)
            time.sleep(1.0)  # anything more would be a duplicate
            assert len(slack.messages(CHANNEL)) == 1, [m.ts for m in slack.messages(CHANNEL)]
            assert "TeamBudget" in slack.messages(CHANNEL)[0].content()
            assert slack.calls("conversations.history")  # found again by its metadata
            assert relay.metric("alertmanager_notifications_failed_total") == 0
        finally:
            assert relay.terminate() == 0


# ------------------------------------------------------------------------------------------------------ Jira
def jira_overrides(rules, jira) -> dict:
    """test_e2e_jira's Cloud setup with a 4 s search lag, a 2 s Jira timeout and a 1 s shutdown grace."""
    return {**overrides(rules, jira, search_lag="4s", timeout="2s"), "service": {"shutdown_timeout": "1s"}}


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("stop", ["kill -9", "SIGTERM"])
def test_stop_during_a_jira_cloud_create_with_search_lag_gives_one_issue(tmp_path, stop):
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "failures",
                        "rules": [
                            {
                                "alert": "ApiRetriesExhausted",
                                "kind": "error_rate",
                                "errors": {"retries_exhausted": True},
                                "count": 1,
                                "min_count": 1,
                                "matchers": [f'team.id="{TEAM}"'],
                                "group_by": ["team.id"],
                                "window": "60s",
                                "labels": {"severity": "critical"},
                            }
                        ],
                    }
                ]
            }
        )
    )
    with FakeJira.run_in_thread("cloud", user=USER, api_token=API_TOKEN, search_lag=3.0) as jira:
        ov = jira_overrides(rules, jira)
        relay = RelayProcess(tmp_path / "data", overrides=ov).start()
        try:
            jira.hold_response(60.0, method="POST", path="^issue$")  # Jira creates it; the answer never comes
            traffic = CCTraffic(resource={"team.id": TEAM})
            post(relay, traffic.request(traffic.event("api_error"), traffic.event("api_retries_exhausted")))
            wait(lambda: jira.issues(), "the create to reach Jira", relay)
            time.sleep(0.01)
        finally:
            if stop == "kill -9":
                relay.kill9()
            else:
                assert relay.terminate() == 0  # the held create is cancelled after shutdown_timeout
        jira.clear_faults()
        relay = restarted(relay, ov)
        try:
            # the retry searches (the issue is invisible for 3 s), waits, finds it; reminders then comment on it
            wait(lambda: any(jira.comments(i.key) for i in jira.issues()), "a reminder comment", relay, 30)
            assert len(jira.issues()) == 1, [(i.key, i.created) for i in jira.issues()]
            assert jira.comments(jira.issues()[0].key)
            assert len(jira.requests("POST", "^issue$")) == 1
            assert relay.metric("alertmanager_notifications_failed_total") == 0
        finally:
            assert relay.terminate() == 0
