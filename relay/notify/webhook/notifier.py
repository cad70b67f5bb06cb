"""The webhook notifier: one signed ``POST`` of Alertmanager's webhook payload (version 4) per notification.

Payload (``Content-Type: application/json``; Alertmanager ``docs/configuration.md`` "webhook_config",
https://prometheus.io/docs/alerting/latest/configuration/#webhook_config)::

    {"version": "4", "groupKey": "…", "truncatedAlerts": 0, "status": "firing|resolved", "receiver": "…",
     "groupLabels": {…}, "commonLabels": {…}, "commonAnnotations": {…}, "externalURL": "…",
     "alerts": [{"status": "firing|resolved", "labels": {…}, "annotations": {…},
                 "startsAt": "2026-05-01T10:00:00.000Z", "endsAt": "0001-01-01T00:00:00Z",
                 "generatorURL": "…", "fingerprint": "16 hex"}],
     "relay": {"seq": 1, "repeat": false, "createdAt": "…",
               "alerts": {"<fingerprint>": {"value": 1.0, "values": {…}, "links": {…}, "rule": "…", "window": "…"}}}}

Everything Alertmanager sends is there with its names and formats, so existing consumers work; relay's extras
(the figures and links of each alert, keyed by fingerprint) sit under the separate ``relay`` key, which
Alertmanager consumers ignore. Times are RFC 3339 UTC; an unset ``endsAt`` is Go's zero time
``0001-01-01T00:00:00Z`` as Alertmanager sends it. With ``max_alerts`` > 0 only that many alerts are sent and
``truncatedAlerts`` counts the rest.

Headers:

- ``X-Relay-Timestamp``: unix seconds (integer) when the request was signed;
- ``X-Relay-Signature: sha256=<hex>``: HMAC-SHA256 with ``hmac_secret`` over ``"<timestamp>.<body>"`` (the
  timestamp, a dot, then the exact body bytes) — the scheme of Stripe's and Slack's webhook signatures. Only
  sent when ``hmac_secret`` is configured. Consumers verify it with :func:`verify_signature` (or the same three
  lines in their language) and reject requests whose timestamp is more than 5 minutes off (replays);
- ``X-Relay-Idempotency-Key: <32 hex of SHA-256(group key)>:<seq>``: equal on every retry of one notification,
  different for the next one of the group, so a consumer can drop duplicates after a lost response.

Outcome: 2xx is delivered; 408, 429, 5xx, connection errors and the per-receiver ``timeout`` raise a retryable
:class:`~relay.notify.base.NotifyError` (with ``retry_after`` from ``Retry-After``); redirects and other 4xx are
permanent. The outbox retries with backoff.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from relay.alert import Alert, AlertState, Notification
from relay.exporters.retry import parse_retry_after
from relay.notify.base import Notifier, NotifyError
from relay.notify.http import LazySession
from relay.notify.webhook.config import WebhookConfig

__all__ = [
    "WebhookNotifier",
    "build_payload",
    "sign",
    "verify_signature",
    "idempotency_key",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "IDEMPOTENCY_HEADER",
    "ZERO_TIME",
]

SIGNATURE_HEADER = "X-Relay-Signature"
TIMESTAMP_HEADER = "X-Relay-Timestamp"
IDEMPOTENCY_HEADER = "X-Relay-Idempotency-Key"
#: Go's zero ``time.Time`` in RFC 3339, Alertmanager's ``endsAt`` for alerts without an end.
ZERO_TIME = "0001-01-01T00:00:00Z"


def _rfc3339(ts: float | None) -> str:
    if not ts:
        return ZERO_TIME
    ms = int(round(ts * 1000)) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(ts))) + f".{ms:03d}Z"


def _alert(a: Alert) -> dict[str, Any]:
    firing = a.state is AlertState.FIRING
    return {
        "status": "firing" if firing else "resolved",
        "labels": dict(a.labels),
        "annotations": dict(a.annotations),
        "startsAt": _rfc3339(a.fired_at or a.active_at),
        "endsAt": ZERO_TIME if firing else _rfc3339(a.ends_at),
        "generatorURL": a.generator_url,
        "fingerprint": a.fingerprint,
    }


def build_payload(notification: Notification, max_alerts: int = 0) -> dict[str, Any]:
    """The Alertmanager v4 webhook document for ``notification`` plus relay's ``relay`` extras (see the module
    docstring). ``max_alerts`` > 0 keeps the first that many alerts (firing first) and adds the rest to
    ``truncatedAlerts``."""
    alerts = sorted(notification.alerts, key=lambda a: a.state is not AlertState.FIRING)
    truncated = notification.truncated_alerts
    if max_alerts and len(alerts) > max_alerts:
        truncated += len(alerts) - max_alerts
        alerts = alerts[:max_alerts]
    return {
        "version": "4",
        "groupKey": notification.group_key,
        "truncatedAlerts": truncated,
        "status": notification.status,
        "receiver": notification.receiver,
        "groupLabels": dict(notification.group_labels),
        "commonLabels": notification.common_labels,
        "commonAnnotations": notification.common_annotations,
        "externalURL": notification.external_url,
        "alerts": [_alert(a) for a in alerts],
        "relay": {
            "seq": notification.seq,
            "repeat": notification.repeat,
            "createdAt": _rfc3339(notification.created_at),
            "alerts": {
                a.fingerprint: {
                    "value": a.value,
                    "values": dict(a.values),
                    "links": dict(a.links),
                    "rule": a.rule,
                    "window": a.window,
                }
                for a in alerts
            },
        },
    }


def sign(secret: str | bytes, timestamp: int | str, body: bytes) -> str:
    """The ``X-Relay-Signature`` value: ``sha256=`` + hex HMAC-SHA256 keyed with ``secret`` over
    ``b"<timestamp>." + body``."""
    key = secret.encode() if isinstance(secret, str) else secret
    mac = hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(
    secret: str | bytes,
    timestamp: int | str | None,
    body: bytes,
    signature: str | None,
    *,
    tolerance: float = 300,
    now: float | None = None,
) -> bool:
    """True when ``signature`` (the ``X-Relay-Signature`` header) is valid for ``body`` (the raw request bytes)
    and ``timestamp`` (the ``X-Relay-Timestamp`` header, unix seconds) is within ``tolerance`` seconds of ``now``
    (default: the current time). Constant-time comparison; never raises on malformed input."""
    if not signature or timestamp is None:
        return False
    try:
        ts = int(str(timestamp).strip())
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - ts) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, ts, body), signature.strip())


def idempotency_key(notification: Notification) -> str:
    """``<first 32 hex of SHA-256(group key)>:<seq>`` — the same for every retry of one notification."""
    return f"{hashlib.sha256(notification.group_key.encode()).hexdigest()[:32]}:{notification.seq}"


class WebhookNotifier(Notifier):
    """One ``webhook_configs`` entry of receiver ``receiver`` (``integration = "webhook/<index>"``). Stateless:
    :meth:`notify` returns ``{"delivered": seq}``. ``clock`` gives the signing time (unix seconds)."""

    def __init__(self, receiver: str, index: int, config: WebhookConfig, *, clock: Callable[[], float] = time.time):
        self.receiver = receiver
        self.integration = f"webhook/{index}"
        self.send_resolved = config.send_resolved
        self.config = config
        self._clock = clock
        self._http = LazySession(config.timeout, config.tls)

    async def close(self) -> None:
        """Close the HTTP session (idempotent)."""
        await self._http.close()

    async def notify(self, notification: Notification, state: dict[str, Any]) -> dict[str, Any]:
        """POST the payload once. Raises :class:`NotifyError` (retryable for 408/429/5xx, connection errors and
        timeouts; permanent for other non-2xx answers). The URL (a secret) never appears in error messages."""
        if notification.status != "firing" and not self.send_resolved:
            return dict(state)
        body = json.dumps(
            build_payload(notification, self.config.max_alerts), separators=(",", ":"), ensure_ascii=False
        ).encode()
        await post_signed(
            self._http.get(),
            self.config,
            body,
            where=f"webhook {self.integration} of receiver {self.receiver!r}",
            user_agent="relay-webhook",
            idempotency_key=idempotency_key(notification),
            now=self._clock,
        )
        return {"delivered": notification.seq}


async def post_signed(
    session: aiohttp.ClientSession,
    config: WebhookConfig,
    body: bytes,
    *,
    where: str,
    user_agent: str,
    idempotency_key: str,
    now: Callable[[], float] = time.time,
) -> int:
    """POST the JSON ``body`` to ``config.url`` once, signed when ``config.hmac_secret`` is set (headers above),
    within ``config.timeout`` seconds, without following redirects. Returns the 2xx status.

    Raises :class:`NotifyError` naming ``where``: retryable for 408, 429 and 5xx (with the server's
    ``Retry-After``), connection errors (with the OS reason) and timeouts; permanent for other statuses, with up to
    300 characters of the answer. The URL (a secret) never appears in messages."""
    headers = {"Content-Type": "application/json", "User-Agent": user_agent, IDEMPOTENCY_HEADER: idempotency_key}
    if config.hmac_secret is not None:
        ts = int(now())
        headers[TIMESTAMP_HEADER] = str(ts)
        headers[SIGNATURE_HEADER] = sign(config.hmac_secret.get_secret_value(), ts, body)
    try:
        async with session.post(
            config.url.get_secret_value(),
            data=body,
            headers=headers,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=config.timeout),
        ) as resp:
            status = resp.status
            text = (await resp.text(errors="replace"))[:300].strip()
            retry_after = parse_retry_after(resp.headers.get("Retry-After"))
    except TimeoutError:
        raise NotifyError(f"{where}: no answer within {config.timeout:g}s", retryable=True) from None
    except aiohttp.ClientConnectorError as exc:
        reason = getattr(exc.os_error, "strerror", None) or type(exc).__name__
        raise NotifyError(f"{where}: cannot connect: {reason}", retryable=True) from None
    except aiohttp.ClientError as exc:
        raise NotifyError(f"{where}: {type(exc).__name__}", retryable=True) from None
    if 200 <= status < 300:
        return status
    message = f"{where}: HTTP {status}" + (f": {text}" if text else "")
    if status in (408, 429) or status >= 500:
        raise NotifyError(message, retryable=True, retry_after=retry_after, status=status)
    raise NotifyError(message, retryable=False, status=status)
