"""Slack integration config (owned by the Slack notifier, :mod:`relay.notify.slack.notifier`)."""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from relay.config_security import TLSClientConfig
from relay.config_types import Duration, OptionalSecret, _Model

__all__ = ["SlackConfig"]

_DURATION_HINT = re.compile(r"^\d+(ms|s|m|h|d|w)$")


class SlackConfig(_Model):
    """A Slack integration: a bot token (``chat.postMessage`` / ``chat.update``, threads; scopes ``chat:write``, plus
    ``files:write`` for reports) with a ``channel`` (ID like ``C0123ABCD`` or ``#name``), or an incoming
    ``webhook_url`` (no threads, no edits: Slack returns no message ``ts``). Exactly one of ``bot_token`` and
    ``webhook_url``. ``api_url`` is Slack's Web API base (``https://slack.com/api/``; tests point it at a fake).
    ``send_resolved`` defaults to true for Slack in relay (Alertmanager: false), because resolving edits the
    original message. ``timeout`` (seconds) bounds each HTTP request; retries belong to the outbox."""

    bot_token: OptionalSecret = None
    webhook_url: OptionalSecret = None
    channel: str | None = None
    api_url: str = "https://slack.com/api/"
    send_resolved: bool = True
    #: Mention (e.g. ``<!subteam^S123>``, ``<@U123>`` or ``@here``) added to critical alerts.
    mention_critical: str | None = None
    timeout: Duration = Field(10.0, gt=0)
    #: Outbound TLS: ``ca_file`` for a Slack proxy with a private CA (``configtls`` client keys).
    tls: TLSClientConfig = TLSClientConfig()
    #: Duration put in the silence hint of firing messages (``relay silence add … --duration 2h``).
    silence_duration: str = "2h"

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("api_url must be an http(s) URL")
        return v if v.endswith("/") else v + "/"

    @field_validator("silence_duration")
    @classmethod
    def _silence_duration(cls, v: str) -> str:
        if not _DURATION_HINT.match(v):
            raise ValueError("silence_duration must look like 30m, 2h or 1d")
        return v

    @model_validator(mode="after")
    def _one_mode(self) -> SlackConfig:
        if (self.bot_token is None) == (self.webhook_url is None):
            raise ValueError("set exactly one of bot_token and webhook_url")
        if self.bot_token is not None and not self.channel:
            raise ValueError("channel is required with bot_token")
        if self.webhook_url is not None and not self.webhook_url.get_secret_value().startswith(("http://", "https://")):
            raise ValueError("webhook_url must be an http(s) URL")
        return self
