"""Receiver integration configs, in Alertmanager's shape (``receivers[].slack_configs`` / ``webhook_configs`` /
``jira_configs``; https://prometheus.io/docs/alerting/latest/configuration/#receiver-integration-settings).

Secrets (tokens, webhook URLs, API tokens, HMAC keys) are ``SecretStr``: write them as ``${env:…}`` or
``${file:…}`` references; they are never logged. Durations as in ``relay.config`` (``30s``, ``5m``…).
Each notifier module may extend its own model here; keep one model per integration kind.
"""

from __future__ import annotations

from pydantic import Field

from relay.config_types import _Model
from relay.notify.jira_config import JiraConfig
from relay.notify.slack_config import SlackConfig
from relay.notify.webhook_config import WebhookConfig

__all__ = ["SlackConfig", "WebhookConfig", "JiraConfig", "ReceiverConfig"]


class ReceiverConfig(_Model):
    """A named receiver with any number of integrations (all are notified)."""

    name: str = Field(min_length=1)
    slack_configs: list[SlackConfig] = []
    webhook_configs: list[WebhookConfig] = []
    jira_configs: list[JiraConfig] = []
