"""Receiver integration configs, in Alertmanager's shape (``receivers[].slack_configs`` / ``webhook_configs`` /
``jira_configs``; https://prometheus.io/docs/alerting/latest/configuration/#receiver-integration-settings).

Secrets (tokens, webhook URLs, API tokens, HMAC keys) are ``SecretStr``: write them as ``${env:…}`` or
``${file:…}`` references; they are never logged. Durations as in ``relay.config`` (``30s``, ``5m``…).
Each notifier module may extend its own model here; keep one model per integration kind.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator

from relay.config import Duration, OptionalSecret, _Model

__all__ = ["SlackConfig", "WebhookConfig", "JiraConfig", "ReceiverConfig"]


class SlackConfig(_Model):
    """A Slack integration: a bot token (``chat.postMessage`` / ``chat.update``, threads) with a ``channel``, or
    an incoming ``webhook_url`` (no threads, no edits: Slack returns no message ``ts``). Exactly one of
    ``bot_token`` and ``webhook_url``. ``api_url`` is Slack's Web API base (``https://slack.com/api/``;
    tests point it at a fake). ``send_resolved`` defaults to true for Slack in relay (Alertmanager: false),
    because resolving edits the original message."""

    bot_token: OptionalSecret = None
    webhook_url: OptionalSecret = None
    channel: str | None = None
    api_url: str = "https://slack.com/api/"
    send_resolved: bool = True
    #: Mention (e.g. ``<!subteam^S123>`` or ``@here``) added to critical alerts.
    mention_critical: str | None = None
    timeout: Duration = 10.0

    @model_validator(mode="after")
    def _one_mode(self) -> "SlackConfig":
        if (self.bot_token is None) == (self.webhook_url is None):
            raise ValueError("set exactly one of bot_token and webhook_url")
        if self.bot_token is not None and not self.channel:
            raise ValueError("channel is required with bot_token")
        return self


class WebhookConfig(_Model):
    """A generic webhook: POST of Alertmanager's webhook payload (v4) with an HMAC-SHA256 signature."""

    url: SecretStr
    #: HMAC-SHA256 key; without it the body is sent unsigned.
    hmac_secret: OptionalSecret = None
    send_resolved: bool = True
    timeout: Duration = 10.0
    max_alerts: int = Field(0, ge=0)


class JiraConfig(_Model):
    """A Jira project (Cloud: REST v3 + email/API token; Data Center: REST v2 + personal access token)."""

    flavor: Literal["cloud", "datacenter"] = "cloud"
    api_url: str
    user: str | None = None
    api_token: OptionalSecret = None
    personal_access_token: OptionalSecret = None
    project: str
    issue_type: str = "Bug"
    send_resolved: bool = True
    timeout: Duration = 10.0


class ReceiverConfig(_Model):
    """A named receiver with any number of integrations (all are notified)."""

    name: str = Field(min_length=1)
    slack_configs: list[SlackConfig] = []
    webhook_configs: list[WebhookConfig] = []
    jira_configs: list[JiraConfig] = []
