"""Webhook integration config (owned by the webhook notifier)."""

from __future__ import annotations


from pydantic import Field, SecretStr

from relay.config import Duration, OptionalSecret, _Model

__all__ = ["WebhookConfig"]


class WebhookConfig(_Model):
    """A generic webhook: POST of Alertmanager's webhook payload (v4) with an HMAC-SHA256 signature."""

    url: SecretStr
    #: HMAC-SHA256 key; without it the body is sent unsigned.
    hmac_secret: OptionalSecret = None
    send_resolved: bool = True
    timeout: Duration = 10.0
    max_alerts: int = Field(0, ge=0)
