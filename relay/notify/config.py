"""Receiver integration configs, in Alertmanager's shape (``receivers[].slack_configs`` / ``webhook_configs`` /
``jira_configs``; https://prometheus.io/docs/alerting/latest/configuration/#receiver-integration-settings).

Secrets (tokens, webhook URLs, API tokens, HMAC keys) are ``SecretStr``: write them as ``${env:…}`` or
``${file:…}`` references; they are never logged. Durations as in ``relay.config`` (``30s``, ``5m``…).
Each notifier module may extend its own model here; keep one model per integration kind.
"""

from __future__ import annotations

from pydantic import Field

from relay.config_types import _Model
from relay.notify.jira.config import JiraConfig
from relay.notify.slack.config import SlackConfig
from relay.notify.webhook.config import WebhookConfig

__all__ = ["SlackConfig", "WebhookConfig", "JiraConfig", "ReceiverConfig", "KINDS", "integration_id", "integrations"]


class ReceiverConfig(_Model):
    """A named receiver with any number of integrations (all are notified)."""

    name: str = Field(min_length=1)
    slack_configs: list[SlackConfig] = []
    webhook_configs: list[WebhookConfig] = []
    jira_configs: list[JiraConfig] = []


#: (kind, ReceiverConfig field, module, class) of every integration kind.
KINDS: tuple[tuple[str, str, str, str], ...] = (
    ("slack", "slack_configs", "relay.notify.slack.notifier", "SlackNotifier"),
    ("webhook", "webhook_configs", "relay.notify.webhook.notifier", "WebhookNotifier"),
    ("jira", "jira_configs", "relay.notify.jira.notifier", "JiraNotifier"),
)


def integration_id(receiver: str, kind: str, index: int) -> str:
    """``<receiver>/<kind>/<index>``, the stable id of one integration."""
    return f"{receiver}/{kind}/{index}"


def integrations(receiver: ReceiverConfig) -> list[tuple[str, bool]]:
    """``(integration id, send_resolved)`` of every integration of ``receiver``, in config order (Slack, then
    webhooks, then Jira)."""
    out = []
    for kind, field, _, _ in KINDS:
        for i, cfg in enumerate(getattr(receiver, field)):
            out.append((integration_id(receiver.name, kind, i), bool(getattr(cfg, "send_resolved", True))))
    return out
