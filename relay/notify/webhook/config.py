"""Webhook integration config (owned by the webhook notifier): ``receivers[].webhook_configs[]``.

Names follow Alertmanager's ``webhook_config`` (``url``, ``send_resolved``, ``max_alerts``, ``timeout``;
https://prometheus.io/docs/alerting/latest/configuration/#webhook_config) plus relay's ``hmac_secret``.
"""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator

from relay.config_security import TLSClientConfig
from relay.config_types import Duration, OptionalSecret, _Model

__all__ = ["WebhookConfig"]


class WebhookConfig(_Model):
    """A generic webhook: POST of Alertmanager's webhook payload (v4) with an HMAC-SHA256 signature.

    ``url``: the endpoint (a secret: URLs often embed tokens; http or https). ``hmac_secret``: key of the
    ``X-Relay-Signature`` header (HMAC-SHA256 over ``"<timestamp>.<body>"``, see :mod:`relay.notify.webhook.notifier`);
    without it the body is sent unsigned. ``send_resolved``: also POST resolved notifications (default true, as
    Alertmanager). ``timeout``: seconds for one delivery attempt (connect, send and answer). ``max_alerts``: at
    most this many alerts per payload, 0 = all (the rest are counted in ``truncatedAlerts``).
    """

    url: SecretStr
    hmac_secret: OptionalSecret = None
    send_resolved: bool = True
    timeout: Duration = 10.0
    #: Outbound TLS: ``ca_file`` for a receiver with a private CA (``configtls`` client keys).
    tls: TLSClientConfig = TLSClientConfig()
    max_alerts: int = Field(0, ge=0)

    @field_validator("url")
    @classmethod
    def _url(cls, v: SecretStr) -> SecretStr:
        value = v.get_secret_value().strip()
        if not value.lower().startswith(("http://", "https://")) or len(value) < 10:
            raise ValueError("url must be an http(s) URL")
        return SecretStr(value)

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("timeout must be positive")
        return v
