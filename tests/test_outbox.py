"""The durable outbox against a real loopback service: 429 + Retry-After, 5xx outage, connection refusal,
permanent errors, per-group state, kill -9 between enqueue and delivery, integrations missing after a reload."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from relay.alert import Alert, AlertState, Notification
from relay.alerting.dispatch.outbox import Outbox
from relay.component import deadline_in
from relay.notify.base import Notifier, NotifyError
from relay.store.sqlite import SqliteDB

KEY = "team/webhook/0"
REPO = Path(__file__).resolve().parent.parent


class Service:
    """A notification service on loopback: ``POST /notify`` answers the scripted ``(status, headers)`` first
    (429 with Retry-After, 503, 400…), then 200 with the id of the accepted message. Records every request's
    arrival time and every accepted body."""

    def __init__(self):
        self.script: list[tuple[int, dict[str, str]]] = []
        self.arrivals: list[float] = []
        self.accepted: list[dict[str, Any]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.arrivals.append(time.monotonic())
        if self.script:
            status, headers = self.script.pop(0)
            return web.json_response({"ok": False, "error": f"scripted {status}"}, status=status, headers=headers)
        self.accepted.append(body)
        return web.json_response({"ok": True, "id": len(self.accepted)})

    async def serve(self, port: int = 0) -> tuple[web.AppRunner, int]:
        app = web.Application()
        app.router.add_post("/notify", self.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        return runner, runner.addresses[0][1]


class HttpNotifier(Notifier):
    """A tiny real HTTP notifier: 429 → retryable with Retry-After, 5xx and connection errors → retryable,
    other 4xx → permanent. Its state lists the ids of the messages the service accepted for the group."""

    receiver, integration, send_resolved = "team", "webhook/0", True

    def __init__(self, url: str):
        self.url = url
        self.states: list[dict[str, Any]] = []

    async def notify(self, notification: Notification, state: dict[str, Any]) -> dict[str, Any]:
        self.states.append(state)
        body = {"groupKey": notification.group_key, "seq": notification.seq, "status": notification.status}
        try:
            async with aiohttp.ClientSession() as http:
                async with http.post(self.url, json=body) as r:
                    if r.status == 429:
                        raise NotifyError(
                            "rate limited", retryable=True, status=429, retry_after=float(r.headers["Retry-After"])
                        )
                    if r.status >= 500:
                        raise NotifyError(f"HTTP {r.status}", retryable=True, status=r.status)
                    if r.status >= 400:
                        raise NotifyError(f"HTTP {r.status}: {await r.text()}", retryable=False, status=r.status)
                    got = await r.json()
        except aiohttp.ClientConnectionError as e:
            raise NotifyError(f"connection failed: {e}", retryable=True) from e
        return {"messages": state.get("messages", []) + [got["id"]]}


def notification(seq: int, group: str = "g1") -> Notification:
    return Notification(
        receiver="team",
        group_key=group,
        group_labels={"team": "a"},
        status="firing",
        alerts=[Alert(labels={"alertname": "BudgetWarning", "team": "a"}, state=AlertState.FIRING)],
        seq=seq,
    )


async def until(cond, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


async def drained(outbox: Outbox, timeout: float = 5.0) -> None:
    """Wait until nothing is queued (a delivery's delete commits just after the service answered)."""
    deadline = time.monotonic() + timeout
    while await outbox.pending():
        assert time.monotonic() < deadline, "outbox not drained in time"
        await asyncio.sleep(0.005)


def sample(reg: CollectorRegistry, name: str, **labels: str) -> float:
    return reg.get_sample_value(name, {"integration": "webhook", "receiver": "team", **labels}) or 0.0


@pytest.fixture
async def service():
    s = Service()
    runner, port = await s.serve()
    s.url = f"http://127.0.0.1:{port}/notify"
    yield s
    await runner.cleanup()


def make(db, notifiers, reg=None) -> Outbox:
    return Outbox(db, notifiers, registry=reg, initial_backoff=0.02, max_backoff=0.2, jitter=0.0)


async def test_429_with_retry_after_is_honoured_and_delivered_once(db, service):
    service.script = [(429, {"Retry-After": "1"})]
    reg = CollectorRegistry()
    outbox = make(db, {KEY: HttpNotifier(service.url)}, reg)
    await outbox.start()
    try:
        await outbox.enqueue(KEY, notification(1))
        assert reg.get_sample_value("relay_outbox_queue_size") == 1
        await until(lambda: service.accepted)
        assert service.arrivals[1] - service.arrivals[0] >= 0.99  # not before Retry-After (backoff alone: 20 ms)
        await drained(outbox)
        await asyncio.sleep(0.2)
        assert len(service.accepted) == 1 and len(service.arrivals) == 2
        assert await outbox.failed() == []
        assert sample(reg, "relay_notifications_retried_total") == 1
        assert sample(reg, "alertmanager_notifications_total") == 1
        assert sample(reg, "alertmanager_notification_requests_total") == 2
        assert reg.get_sample_value("relay_outbox_queue_size") == 0
    finally:
        await outbox.shutdown(deadline_in(5))


async def test_outage_then_recovery_delivers_each_notification_once_in_order(db, service):
    service.script = [(503, {})] * 3
    notifier = HttpNotifier(service.url)
    outbox = make(db, {KEY: notifier})
    for seq in (1, 2, 3):
        await outbox.enqueue(KEY, notification(seq))
    await outbox.start()
    try:
        await until(lambda: len(service.accepted) == 3)
        await drained(outbox)
        assert [b["seq"] for b in service.accepted] == [1, 2, 3]
        assert len(service.arrivals) == 6
        # each notification got the state the previous one of the group returned
        assert notifier.states[-3:] == [{}, {"messages": [1]}, {"messages": [1, 2]}]
        assert await outbox.state(KEY, "g1") == {"messages": [1, 2, 3]}
    finally:
        await outbox.shutdown(deadline_in(5))


async def test_connection_refused_until_the_service_comes_up(db):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    service = Service()
    outbox = make(db, {KEY: HttpNotifier(f"http://127.0.0.1:{port}/notify")})
    await outbox.start()
    runner = None
    try:
        await outbox.enqueue(KEY, notification(1))
        items: list = []

        async def refresh():
            items[:] = await outbox.pending()

        deadline = time.monotonic() + 5
        while not (items and items[0].attempts >= 2):
            assert time.monotonic() < deadline
            await refresh()
            await asyncio.sleep(0.01)
        assert "connection failed" in items[0].last_error
        runner, _ = await service.serve(port)
        await until(lambda: service.accepted)
        await drained(outbox)
        await asyncio.sleep(0.1)
        assert len(service.accepted) == 1
    finally:
        await outbox.shutdown(deadline_in(5))
        if runner:
            await runner.cleanup()


async def test_permanent_error_is_recorded_and_later_items_still_go(db, service):
    service.script = [(400, {})]
    reg = CollectorRegistry()
    outbox = make(db, {KEY: HttpNotifier(service.url)}, reg)
    await outbox.enqueue(KEY, notification(1))
    await outbox.enqueue(KEY, notification(2))
    await outbox.start()
    try:
        await until(lambda: service.accepted)
        await drained(outbox)
        assert [b["seq"] for b in service.accepted] == [2]
        (failed,) = await outbox.failed()
        assert failed.notification.seq == 1 and "HTTP 400" in failed.last_error and failed.status == "failed"
        assert failed.failed_at is not None
        assert sample(reg, "alertmanager_notifications_failed_total", reason="clientError") == 1
        assert sample(reg, "alertmanager_notifications_total") == 2
    finally:
        await outbox.shutdown(deadline_in(5))


async def test_kill_9_after_enqueue_then_restart_delivers_exactly_once(tmp_path, service):
    path = tmp_path / "relay.db"
    script = textwrap.dedent(f"""
        import asyncio, os, signal
        from pathlib import Path
        from relay.alert import Alert, AlertState, Notification
        from relay.alerting.dispatch.outbox import Outbox
        from relay.store.sqlite import SqliteDB
        db = SqliteDB(Path({str(path)!r})); db.open()
        outbox = Outbox(db, {{}})
        n = Notification(receiver="team", group_key="g1", group_labels={{}}, status="firing",
                         alerts=[Alert(labels={{"alertname": "X"}}, state=AlertState.FIRING)], seq=7)
        asyncio.run(outbox.enqueue({KEY!r}, n))
        print("queued", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout.strip() == "queued" and proc.returncode == -9, proc.stderr
    for _ in range(2):  # the restart delivers it; a second restart does not deliver it again
        db = SqliteDB(path)
        db.open()
        outbox = make(db, {KEY: HttpNotifier(service.url)})
        await outbox.start()
        try:
            await until(lambda: service.accepted)
            await drained(outbox)
            await asyncio.sleep(0.1)
        finally:
            await outbox.shutdown(deadline_in(5))
            db.close()
    assert [b["seq"] for b in service.accepted] == [7]


async def test_items_of_an_unconfigured_integration_wait_for_it(db, service, caplog):
    outbox = make(db, {})
    await outbox.start()
    try:
        await outbox.enqueue(KEY, notification(1))
        await asyncio.sleep(0.05)
        assert [i.notification.seq for i in await outbox.pending()] == [1]
        assert "not configured" in caplog.text
        await outbox.set_notifiers({KEY: HttpNotifier(service.url)})  # a reload brings it back
        await until(lambda: service.accepted)
        await drained(outbox)
        # removing it again: new items wait, the old one is not resent
        await outbox.set_notifiers({})
        await outbox.enqueue(KEY, notification(2))
        await asyncio.sleep(0.05)
        assert len(service.accepted) == 1 and len(await outbox.pending()) == 1
    finally:
        await outbox.shutdown(deadline_in(5))


async def test_stop_lets_an_in_flight_delivery_finish(db):
    release = asyncio.Event()
    calls: list[int] = []

    class Slow(Notifier):
        receiver, integration, send_resolved = "team", "webhook/0", True

        async def notify(self, n, state):
            calls.append(n.seq)
            await release.wait()
            return {"done": True}

    outbox = make(db, {KEY: Slow()})
    await outbox.start()
    await outbox.enqueue(KEY, notification(1))
    await until(lambda: calls)
    stopping = asyncio.create_task(outbox.shutdown(deadline_in(5)))
    await asyncio.sleep(0.05)
    release.set()
    await stopping
    assert await outbox.pending() == [] and await outbox.state(KEY, "g1") == {"done": True}


class Checkpointing(Notifier):
    """Records "about to send" through the outbox's checkpoint, then hangs (the answer never comes) while
    ``hang`` is set; every attempt's incoming state is kept in ``seen``."""

    receiver, integration, send_resolved = "team", "webhook/0", True

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.hang = True

    async def notify(self, notification: Notification, state: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("the outbox calls deliver()")

    async def deliver(self, notification, state, checkpoint=None):
        self.seen.append(state)
        if self.hang:
            await checkpoint({**state, "sending": notification.seq})
            await asyncio.sleep(30)
        if state.get("sending") == notification.seq:
            return {"found": notification.seq}  # the earlier attempt's effect, found again
        return {"sent": notification.seq}


async def test_a_checkpoint_reaches_the_retry_after_the_attempt_timeout(db):
    n = Checkpointing()
    outbox = Outbox(db, {"team/webhook/0": n}, initial_backoff=0.02, max_backoff=0.2, jitter=0.0, attempt_timeout=0.2)
    await outbox.start()
    try:
        await outbox.enqueue("team/webhook/0", notification(1))
        await until(lambda: len(n.seen) == 1)
        n.hang = False
        await drained(outbox)
        assert n.seen == [{}, {"sending": 1}]
        assert await outbox.state("team/webhook/0", "g1") == {"found": 1}
    finally:
        await outbox.shutdown(deadline_in(5))


async def test_a_checkpoint_survives_a_stop_and_reaches_the_next_outbox(db):
    n = Checkpointing()
    outbox = Outbox(db, {"team/webhook/0": n}, initial_backoff=0.02, jitter=0.0)
    await outbox.start()
    await outbox.enqueue("team/webhook/0", notification(1))
    await until(lambda: n.seen)
    await asyncio.sleep(0.05)
    await outbox.shutdown(deadline_in(0.05))  # the delivery is cancelled mid-call
    assert await outbox.state("team/webhook/0", "g1") == {"sending": 1}
    n2 = Checkpointing()
    n2.hang = False
    outbox2 = Outbox(db, {"team/webhook/0": n2}, initial_backoff=0.02, jitter=0.0)
    await outbox2.start()
    try:
        await drained(outbox2)
        assert n2.seen == [{"sending": 1}] and await outbox2.state("team/webhook/0", "g1") == {"found": 1}
    finally:
        await outbox2.shutdown(deadline_in(5))


async def test_a_permanent_failure_keeps_the_state_it_carries(db):
    class Refused(Notifier):
        receiver, integration, send_resolved = "team", "webhook/0", True

        async def notify(self, notification, state):
            raise NotifyError("HTTP 400", retryable=False, status=400, state={"cleared": True})

    outbox = Outbox(db, {"team/webhook/0": Refused()}, jitter=0.0)
    await outbox.start()
    try:
        await outbox.enqueue("team/webhook/0", notification(1))
        await until_async_failed(outbox)
        assert await outbox.state("team/webhook/0", "g1") == {"cleared": True}
    finally:
        await outbox.shutdown(deadline_in(5))


async def until_async_failed(outbox: Outbox, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await outbox.failed():
        assert time.monotonic() < deadline, "no failed item"
        await asyncio.sleep(0.01)
