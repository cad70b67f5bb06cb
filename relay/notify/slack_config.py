"""Slack integration config (owned by the Slack notifier)."""

from __future__ import annotations


from pydantic import model_validator

from relay.config import Duration, OptionalSecret, _Model

__all__ = ["SlackConfig"]


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
