"""Notifier construction from receiver configs: stable integration ids that the dispatcher's nflog and the outbox
share, one notifier per integration of the right kind, ``send_resolved`` as configured."""

from __future__ import annotations

from relay.alerting.config import AlertingConfig
from relay.alerting.dispatch.outbox import split_integration
from relay.notify.config import integration_id, integrations
from relay.notify.factory import build_notifiers

CFG = AlertingConfig.model_validate(
    {
        "route": {"receiver": "team/a"},
        "receivers": [
            {
                "name": "team/a",
                "slack_configs": [
                    {"webhook_url": "http://127.0.0.1:9/s", "send_resolved": False},
                    {"bot_token": "xoxb-test", "channel": "C0123"},
                ],
                "webhook_configs": [{"url": "http://127.0.0.1:9/w"}],
                "jira_configs": [
                    {"api_url": "http://127.0.0.1:9", "user": "a@b.c", "api_token": "t", "project": "OPS"}
                ],
            },
            {"name": "empty"},
        ],
    }
)


def test_integration_ids_are_stable_and_name_receiver_kind_and_index():
    a, empty = CFG.receivers
    assert integrations(a) == [
        ("team/a/slack/0", False),
        ("team/a/slack/1", True),
        ("team/a/webhook/0", True),
        ("team/a/jira/0", True),
    ]
    assert integrations(empty) == []
    assert integration_id("r", "jira", 2) == "r/jira/2"
    assert split_integration("team/a/slack/1") == ("team/a", "slack")
    assert split_integration("odd") == ("odd", "unknown")


async def test_build_notifiers_makes_one_notifier_per_integration():
    notifiers = build_notifiers(CFG.receivers)
    try:
        assert list(notifiers) == [k for k, _ in integrations(CFG.receivers[0])]
        for key, n in notifiers.items():
            receiver, kind = split_integration(key)
            assert n.receiver == receiver and f"{receiver}/{n.integration}" == key
            assert (
                type(n).__name__
                == {"slack": "SlackNotifier", "webhook": "WebhookNotifier", "jira": "JiraNotifier"}[kind]
            )
        assert [n.send_resolved for n in notifiers.values()] == [False, True, True, True]
    finally:
        for n in notifiers.values():
            await n.close()
