"""Issue 4 end to end, webhooks: a running relay (in-process, real sockets) turns replayed and generated Claude Code
error traffic into Alertmanager v4 webhook POSTs, signed with HMAC-SHA256, to a consumer on loopback that verifies
the signature like a real one (an independent standard-library HMAC check of the documented scheme,
``tests/support/webhook_signature.py``) and drops duplicates by idempotency key.

- The consumer is down (connection refused) when the replayed ``protobuf-err529`` capture fires a
  retries-exhausted rule: relay's outbox retries with backoff, and the notification arrives once the consumer
  is back — exactly once, with a valid signature.
- A restart of relay sends nothing again (notification log persisted; ``repeat_interval`` 1h).
- A response lost after the consumer processed the request: relay retries with the same idempotency key and
  byte-identical body, so the consumer's de-duplicated view holds the notification once.
- The alert resolves: a signed ``resolved`` notification with the next sequence number.

The capture's events are dated 2026-11-21; its rule uses a ten-year window so it still counts them later.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from relay.notify.webhook.notifier import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, ZERO_TIME
from tests.fakes.langfuse import FakeLangfuse
from tests.support.cc_traffic import CCTraffic
from tests.support.expected import by_name, events
from tests.support.inproc import replay, running_relay
from tests.support.webhook_signature import consumer_verifies

SECRET = "whsec-e2e-0123456789abcdef"
TEAM = "e2e-hook"


class Consumer:
    """A webhook endpoint on loopback (``/hooks/relay?token=…``). Every request is kept in ``received`` as
    ``(headers, body, answered status or None)``; a correctly signed one is answered 200 and, the first time its
    ``X-Relay-Idempotency-Key`` is seen, appended to ``accepted`` (the consumer's de-duplicated view); a bad
    signature gets 401. ``drop`` > 0: process the next request(s), then close the connection unanswered."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes, int | None]] = []
        self.accepted: list[dict] = []
        self.keys: set[str] = set()
        self.drop = 0
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/relay?token=s3cr3t"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = dict(request.headers)
        if request.query.get("token") != "s3cr3t" or not consumer_verifies(
            SECRET, headers.get(TIMESTAMP_HEADER), body, headers.get(SIGNATURE_HEADER)
        ):
            self.received.append((headers, body, 401))
            return web.Response(status=401, text="bad signature")
        key = headers[IDEMPOTENCY_HEADER]
        if key not in self.keys:
            self.keys.add(key)
            self.accepted.append(json.loads(body))
        if self.drop > 0:
            self.drop -= 1
            self.received.append((headers, body, None))
            request.transport.abort()  # processed, but the answer is lost
            raise asyncio.CancelledError
        self.received.append((headers, body, 200))
        return web.Response(status=200, text="ok")

    async def start(self) -> Consumer:
        app = web.Application()
        app.router.add_post("/hooks/relay", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        """Stop listening (connections are refused until :meth:`start` again on the same port)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def write_rules(path: Path) -> None:
    [ev] = by_name(events("protobuf-err529"), "api_retries_exhausted")  # decoded without relay's code
    common = {
        "kind": "error_rate",
        "errors": {"retries_exhausted": True},
        "count": 1,
        "min_count": 1,
        "labels": {"severity": "warning"},
        "annotations": {"summary": "{{ values.failed | int }} requests gave up after all retries"},
    }
    path.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "failures",
                        "rules": [
                            {
                                **common,
                                "alert": "CaptureRetriesExhausted",
                                "matchers": [f'session="{ev.attrs["session.id"]}"'],
                                "window": "3650d",
                            },
                            {
                                **common,
                                "alert": "ApiRetriesExhausted",
                                "matchers": [f'team.id="{TEAM}"'],
                                "group_by": ["team.id"],
                                "window": "2s",
                            },
                        ],
                    }
                ]
            }
        )
    )


def overrides(rules: Path, consumer: Consumer) -> dict:
    return {
        "pipeline": {"idle_timeout": "30s", "root_grace": "30s"},
        "rules": {"files": [str(rules)], "evaluation_interval": "200ms", "watch": False},
        "alerting": {
            "external_url": "http://relay.example:8888",
            "route": {
                "receiver": "hook",
                "group_by": ["alertname", "team.id"],
                "group_wait": "0s",
                "group_interval": "200ms",
                "repeat_interval": "1h",
            },
            "receivers": [
                {"name": "hook", "webhook_configs": [{"url": consumer.url, "hmac_secret": SECRET, "timeout": "3s"}]}
            ],
        },
    }


async def post_logs(relay, body: bytes) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.post(
            f"http://127.0.0.1:{relay.http.port}/v1/logs", data=body, headers={"Content-Type": "application/x-protobuf"}
        ) as r:
            assert r.status == 200, await r.text()


async def metric(relay, name: str, **labels: str) -> float:
    """Sum of the samples ``name`` with ``labels`` on relay's ``/metrics`` (0 when absent)."""
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{relay.admin_port}/metrics") as r:
            text = await r.text()
    return sum(
        smp.value
        for fam in text_string_to_metric_families(text)
        for smp in fam.samples
        if smp.name == name and all(smp.labels.get(k) == v for k, v in labels.items())
    )


async def until(cond, what: str, timeout: float = 8.0) -> None:
    """Poll ``cond()`` (sync or async) every 20 ms until truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def by_alert(consumer: Consumer, name: str) -> list[dict]:
    return [p for p in consumer.accepted if p["commonLabels"].get("alertname") == name]


@pytest.mark.timeout(60)
async def test_signed_webhooks_survive_outage_restart_and_lost_responses(tmp_path):
    rules = tmp_path / "rules.yaml"
    write_rules(rules)
    data = tmp_path / "data"
    consumer = await Consumer().start()
    await consumer.stop()  # the endpoint is down: connections refused
    try:
        async with FakeLangfuse() as lf:
            ov = overrides(rules, consumer)
            async with running_relay(data, lf.base_url, ov) as relay:
                # the capture (replayed twice: an exporter retry) fires while the consumer is down
                assert set(await replay(relay, "protobuf-err529")) == {200}
                assert set(await replay(relay, "protobuf-err529")) == {200}
                await until(
                    lambda: metric(relay, "relay_notifications_retried_total", integration="webhook"),
                    "a failed delivery attempt during the outage",
                )
                assert consumer.received == []
                await consumer.start()  # back on the same port: the outbox's next retry delivers
                await until(lambda: consumer.accepted, "the notification after the outage", 10)
                [headers, body, status] = consumer.received[0]
                assert status == 200 and len(consumer.received) == 1

                # the signature: HMAC-SHA256 over "<timestamp>.<body>", fresh timestamp; it fails when tampered
                ts = headers[TIMESTAMP_HEADER]
                assert abs(int(ts) - time.time()) < 30
                assert re.fullmatch(r"sha256=[0-9a-f]{64}", headers[SIGNATURE_HEADER])
                assert consumer_verifies(SECRET, ts, body, headers[SIGNATURE_HEADER])
                assert not consumer_verifies("another-secret", ts, body, headers[SIGNATURE_HEADER])
                assert not consumer_verifies(
                    SECRET, ts, body.replace(b'"firing"', b'"resolved"', 1), headers[SIGNATURE_HEADER]
                )
                assert not consumer_verifies(SECRET, str(int(ts) - 3600), body, headers[SIGNATURE_HEADER])

                # the payload: Alertmanager v4, plus relay's figures
                [doc] = consumer.accepted
                assert doc["version"] == "4" and doc["status"] == "firing" and doc["receiver"] == "hook"
                assert doc["externalURL"] == "http://relay.example:8888" and doc["truncatedAlerts"] == 0
                [a] = doc["alerts"]
                assert a["labels"]["alertname"] == "CaptureRetriesExhausted" and a["endsAt"] == ZERO_TIME
                assert a["annotations"]["summary"] == "1 requests gave up after all retries"  # counted once
                assert doc["relay"]["seq"] == 1 and doc["relay"]["alerts"][a["fingerprint"]]["values"]["failed"] == 1
                assert re.fullmatch(r"[0-9a-f]{32}:1", headers[IDEMPOTENCY_HEADER])
                assert await metric(relay, "relay_notifications_retried_total", integration="webhook") >= 1

            # a restart sends nothing again
            async with running_relay(data, lf.base_url, ov) as relay:
                await asyncio.sleep(1.5)
                assert len(consumer.received) == 1

                # generated clones of the capture's error records fire the team rule; the consumer processes the
                # notification but its answer is lost → relay retries with the same key and the same bytes
                consumer.drop = 1
                team = CCTraffic(resource={"team.id": TEAM, "enduser.id": "jdoe"})
                await post_logs(relay, team.request(team.event("api_error"), team.event("api_retries_exhausted")))
                await until(lambda: len(consumer.received) == 3, "the retried team notification", 10)
                (h1, b1, s1), (h2, b2, s2) = consumer.received[1:]
                assert (s1, s2) == (None, 200)
                assert h1[IDEMPOTENCY_HEADER] == h2[IDEMPOTENCY_HEADER] and b1 == b2
                assert h1[IDEMPOTENCY_HEADER].endswith(":1")
                [fired] = by_alert(consumer, "ApiRetriesExhausted")
                assert fired["status"] == "firing" and fired["groupLabels"] == {
                    "alertname": "ApiRetriesExhausted",
                    "team.id": TEAM,
                }

                # no more failures: the alert leaves its 2 s window → a signed resolved notification (seq 2)
                await until(lambda: len(consumer.received) == 4, "the resolved notification", 10)
                h3, b3, s3 = consumer.received[3]
                assert s3 == 200 and consumer_verifies(SECRET, h3[TIMESTAMP_HEADER], b3, h3[SIGNATURE_HEADER])
                assert h3[IDEMPOTENCY_HEADER] == h1[IDEMPOTENCY_HEADER][:-2] + ":2"
                resolved = by_alert(consumer, "ApiRetriesExhausted")[-1]
                assert resolved["status"] == "resolved" and resolved["relay"]["seq"] == 2
                assert resolved["alerts"][0]["endsAt"] != ZERO_TIME

                # the consumer's de-duplicated view: each notification exactly once
                await asyncio.sleep(0.5)
                seen = [(p["groupKey"], p["relay"]["seq"], p["status"]) for p in consumer.accepted]
                assert len(seen) == len(set(seen)) == 3 and len(consumer.received) == 4
                assert sorted((p["commonLabels"]["alertname"], p["status"]) for p in consumer.accepted) == [
                    ("ApiRetriesExhausted", "firing"),
                    ("ApiRetriesExhausted", "resolved"),
                    ("CaptureRetriesExhausted", "firing"),
                ]
                assert await metric(relay, "alertmanager_notifications_failed_total", integration="webhook") == 0
    finally:
        await consumer.stop()
