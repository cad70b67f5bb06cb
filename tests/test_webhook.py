"""Webhook notifier against a loopback consumer (aiohttp): Alertmanager v4 payload shape, HMAC signature,
idempotency key, retry classification (503/429 retryable with Retry-After, 4xx permanent), timeout, outage.

Payload shape: Alertmanager ``webhook_config``
(https://prometheus.io/docs/alerting/latest/configuration/#webhook_config)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time

import pytest
from aiohttp import web

from relay.alert import AlertState
from relay.notify.base import NotifyError
from relay.notify.webhook.config import WebhookConfig
from relay.notify.webhook.notifier import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    ZERO_TIME,
    WebhookNotifier,
    build_payload,
    sign,
    verify_signature,
)
from tests.fakes.jira_support import GROUP_KEY, SESSION_URL, T0, Clock, make_alert, make_notification
from tests.support.webhook_signature import consumer_verifies

SECRET = "whsec-test-0123456789"
AM_KEYS = {
    "version",
    "groupKey",
    "truncatedAlerts",
    "status",
    "receiver",
    "groupLabels",
    "commonLabels",
    "commonAnnotations",
    "externalURL",
    "alerts",
}
AM_ALERT_KEYS = {"status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"}


class Consumer:
    """A webhook consumer that verifies signatures like a real one and drops duplicates by idempotency key.
    ``replies``: statuses (with optional Retry-After) to answer before answering 200; ``hang``: never answer."""

    def __init__(self, clock: Clock):
        self.clock = clock
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.accepted: list[dict] = []
        self.seen_keys: set[str] = set()
        self.replies: list[tuple[int, str | None]] = []
        self.hang = False
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/alerts?token=abc"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append((dict(request.headers), body))
        if self.hang:
            await asyncio.sleep(30)
        if self.replies:
            status, retry_after = self.replies.pop(0)
            return web.Response(status=status, text="nope", headers={"Retry-After": retry_after} if retry_after else {})
        if not consumer_verifies(
            SECRET, request.headers.get(TIMESTAMP_HEADER), body, request.headers.get(SIGNATURE_HEADER), now=self.clock()
        ):
            return web.Response(status=401, text="bad signature")
        key = request.headers[IDEMPOTENCY_HEADER]
        if key not in self.seen_keys:
            self.seen_keys.add(key)
            self.accepted.append(json.loads(body))
        return web.Response(status=200, text="ok")

    async def __aenter__(self) -> Consumer:
        app = web.Application()
        app.router.add_post("/hooks/alerts", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
async def consumer(clock):
    async with Consumer(clock) as c:
        yield c


@pytest.fixture
async def make(clock):
    made: list[WebhookNotifier] = []

    def build(url: str, **overrides) -> WebhookNotifier:
        n = WebhookNotifier("ops", 1, WebhookConfig(url=url, hmac_secret=SECRET, **overrides), clock=clock)
        made.append(n)
        return n

    yield build
    for n in made:
        await n.close()


async def test_delivers_a_signed_alertmanager_v4_payload(consumer, make):
    notifier = make(consumer.url)
    assert notifier.integration == "webhook/1" and notifier.send_resolved
    n = make_notification(
        make_alert(150.0), make_alert(90.0, user="bob@example.com", state=AlertState.RESOLVED, ends_at=T0 - 5)
    )
    assert await notifier.notify(n, {}) == {"delivered": 1}
    assert len(consumer.accepted) == 1
    headers, body = consumer.received[0]
    assert headers["Content-Type"] == "application/json" and headers[TIMESTAMP_HEADER] == str(int(T0))
    payload = json.loads(body)
    assert set(payload) == AM_KEYS | {"relay"}
    assert payload["version"] == "4" and payload["groupKey"] == GROUP_KEY and payload["status"] == "firing"
    assert payload["receiver"] == "ops" and payload["truncatedAlerts"] == 0
    assert payload["groupLabels"] == {"alertname": "BudgetExceeded", "team": "payments"}
    assert payload["commonLabels"] == {"alertname": "BudgetExceeded", "team": "payments", "severity": "critical"}
    assert payload["commonAnnotations"]["summary"] == "Monthly budget exceeded"
    assert payload["externalURL"] == "http://relay.example.com"
    firing, resolved = payload["alerts"]
    assert set(firing) == AM_ALERT_KEYS and set(resolved) == AM_ALERT_KEYS
    assert firing["status"] == "firing" and firing["endsAt"] == ZERO_TIME
    assert firing["startsAt"] == "2026-05-28T20:16:40.000Z"
    assert resolved["status"] == "resolved" and resolved["endsAt"] == "2026-05-28T20:26:35.000Z"
    assert firing["fingerprint"] == n.alerts[0].fingerprint and len(firing["fingerprint"]) == 16
    assert firing["generatorURL"] == "http://relay.example.com/api/v1/alerts"
    extras = payload["relay"]["alerts"][firing["fingerprint"]]
    assert extras["value"] == 150.0 and extras["values"]["limit"] == 100.0
    assert extras["links"] == {"Langfuse session": SESSION_URL}
    assert payload["relay"]["seq"] == 1 and payload["relay"]["repeat"] is False


def test_signature_helper_verifies_and_rejects_tampering():
    body = b'{"version":"4"}'
    sig = sign(SECRET, 1_700_000_000, body)
    assert sig.startswith("sha256=") and len(sig) == 7 + 64
    assert verify_signature(SECRET, "1700000000", body, sig, now=1_700_000_100)
    assert not verify_signature(SECRET, "1700000000", body + b" ", sig, now=1_700_000_100)  # body changed
    assert not verify_signature("other-secret", "1700000000", body, sig, now=1_700_000_100)
    assert not verify_signature(SECRET, "1700000001", body, sig, now=1_700_000_100)  # timestamp changed
    assert not verify_signature(SECRET, "1700000000", body, sig, now=1_700_000_301)  # too old (replay)
    assert not verify_signature(SECRET, "garbage", body, sig) and not verify_signature(SECRET, None, body, sig)
    assert not verify_signature(SECRET, "1700000000", body, None, now=1_700_000_000)


async def test_signature_sent_verifies_independently_and_with_the_helper(consumer, make, clock):
    await make(consumer.url).notify(make_notification(), {})
    headers, body = consumer.received[0]
    ts, sig = headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER]
    # the documented scheme, computed here with the standard library only
    assert ts == str(int(clock()))
    assert sig == "sha256=" + hmac.new(SECRET.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    assert consumer_verifies(SECRET, ts, body, sig, now=clock())
    assert verify_signature(SECRET, ts, body, sig, now=clock())  # the helper relay offers consumers agrees
    tampered = body.replace(b"BudgetExceeded", b"BudgetExceedeX")
    assert not consumer_verifies(SECRET, ts, tampered, sig, now=clock())
    assert not verify_signature(SECRET, ts, tampered, sig, now=clock())


async def test_unsigned_without_secret(consumer, clock):
    notifier = WebhookNotifier("ops", 0, WebhookConfig(url=consumer.url), clock=clock)
    try:
        with pytest.raises(NotifyError) as err:  # our consumer insists on signatures
            await notifier.notify(make_notification(), {})
    finally:
        await notifier.close()
    assert err.value.status == 401 and not err.value.retryable
    headers = consumer.received[0][0]
    assert SIGNATURE_HEADER not in headers and TIMESTAMP_HEADER not in headers


async def test_503_is_retryable_then_the_retry_is_delivered_once(consumer, make):
    notifier = make(consumer.url)
    consumer.replies = [(503, "12")]
    n = make_notification()
    with pytest.raises(NotifyError) as err:
        await notifier.notify(n, {})
    assert err.value.retryable and err.value.retry_after == 12 and err.value.status == 503
    await notifier.notify(n, {})
    await notifier.notify(n, {})  # a duplicate delivery (e.g. the answer was lost) is dropped by the consumer
    assert len(consumer.received) == 3 and len(consumer.accepted) == 1
    keys = {h[IDEMPOTENCY_HEADER] for h, _ in consumer.received}
    assert len(keys) == 1
    await notifier.notify(make_notification(seq=2, repeat=True), {})
    assert len(consumer.accepted) == 2  # the next notification of the group has its own key


@pytest.mark.parametrize(
    "status, retryable",
    [(429, True), (500, True), (502, True), (408, True), (400, False), (404, False), (410, False), (301, False)],
)
async def test_status_classification(consumer, make, status, retryable):
    consumer.replies = [(status, None)]
    with pytest.raises(NotifyError) as err:
        await make(consumer.url).notify(make_notification(), {})
    assert err.value.retryable is retryable and err.value.status == status
    assert "token=abc" not in str(err.value)  # the URL is a secret


async def test_timeout_is_honoured(consumer, make):
    consumer.hang = True
    started = time.monotonic()
    with pytest.raises(NotifyError) as err:
        await make(consumer.url, timeout="300ms").notify(make_notification(), {})
    assert err.value.retryable and "0.3s" in str(err.value)
    assert time.monotonic() - started < 2.0


async def test_outage_is_retryable_and_recovers(make, clock):
    consumer = Consumer(clock)
    async with consumer:
        url = consumer.url
    notifier = make(url)
    with pytest.raises(NotifyError) as err:
        await notifier.notify(make_notification(), {})
    assert err.value.retryable and err.value.status is None and "token=abc" not in str(err.value)
    async with consumer:  # back on the same port
        await notifier.notify(make_notification(), {})
    assert len(consumer.accepted) == 1


async def test_resolved_not_sent_without_send_resolved(consumer, make):
    resolved = make_notification(make_alert(state=AlertState.RESOLVED, ends_at=T0))
    assert await make(consumer.url, send_resolved=False).notify(resolved, {"x": 1}) == {"x": 1}
    assert consumer.received == []
    await make(consumer.url).notify(resolved, {})
    assert consumer.accepted[0]["status"] == "resolved"


def test_max_alerts_truncates_and_counts():
    alerts = [make_alert(user=f"u{i}") for i in range(5)]
    n = make_notification(*alerts)
    n.truncated_alerts = 2
    payload = build_payload(n, max_alerts=3)
    assert len(payload["alerts"]) == 3 and payload["truncatedAlerts"] == 4
    assert len(payload["relay"]["alerts"]) == 3
    assert len(build_payload(n)["alerts"]) == 5


def test_config_validation():
    with pytest.raises(ValueError):
        WebhookConfig(url="ftp://x.example.com/hook")
    with pytest.raises(ValueError):
        WebhookConfig(url="https://x.example.com/hook", timeout=0)
    cfg = WebhookConfig(url="https://x.example.com/hook?key=sekrit", hmac_secret="s3cr3t-key")
    assert "sekrit" not in repr(cfg) and "s3cr3t" not in repr(cfg) and cfg.max_alerts == 0
