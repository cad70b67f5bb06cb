"""The Langfuse exporter against a real loopback fake Langfuse (``tests/fakes/langfuse.py``).

Sources: Langfuse's OTLP endpoint (https://langfuse.com/integrations/native/opentelemetry; endpoint, auth, headers,
errors); export once, since Langfuse v4 does not deduplicate re-sent spans (retry 429/502/503/504/connect errors,
bounded 500 retries); OTLP spec "OTLP/HTTP Throttling" (Retry-After as seconds or HTTP-date,
https://opentelemetry.io/docs/specs/otlp/#otlphttp-throttling).
Every test fills a real ``Spool`` with real ``ExportTraceServiceRequest`` payloads; backoff is shortened so the
file runs in a few seconds.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import logging
import math
import time
from contextlib import asynccontextmanager

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client import CollectorRegistry

from relay.component import deadline_in
from relay.config import BatchConfig, LangfuseConfig, LangfuseExporterConfig, RetryConfig, TenantConfig
from relay.exporters.langfuse import LangfuseExporter
from relay.exporters.retry import PermanentError, TransientError, check_status, parse_retry_after
from relay.spool import Spool, TraceCommit
from tests.fakes.langfuse import OBSERVATIONS_PATH, TRACES_PATH, FakeLangfuse, Fault

KEYS = {"a": ("pk-lf-aaa", "sk-lf-aaa-secret"), "b": ("pk-lf-bbb", "sk-lf-bbb-secret")}
PROJECTS = {"pk-lf-aaa": ("sk-lf-aaa-secret", "proj-a"), "pk-lf-bbb": ("sk-lf-bbb-secret", "proj-b")}


# ------------------------------------------------------------------------------------------------ helpers


@pytest.fixture
def spool(tmp_path):
    s = Spool.open(tmp_path)
    yield s
    s.close()


@pytest.fixture
async def lf():
    async with FakeLangfuse(PROJECTS) as fake:
        yield fake


def config(
    *, max_spans: int = 512, timeout: float = 2.0, max_500_retries: int = 2, reconcile_delay: float = 0.05
) -> LangfuseExporterConfig:
    """Fast backoff: 50 ms doubling up to 300 ms, ±10 % jitter; interrupted sends checked 50 ms after the send."""
    return LangfuseExporterConfig(
        timeout=timeout,
        reconcile_delay=reconcile_delay,
        retry_on_failure=RetryConfig(
            initial_interval=0.05,
            max_interval=0.3,
            multiplier=2.0,
            randomization_factor=0.1,
            max_500_retries=max_500_retries,
        ),
        batch=BatchConfig(max_spans=max_spans, flush_interval=0.01),
    )


def tenant(name: str, base_url: str | None, secret: str | None = None) -> TenantConfig:
    if base_url is None:
        return TenantConfig(name=name)
    pk, sk = KEYS[name]
    return TenantConfig(name=name, langfuse=LangfuseConfig(base_url=base_url, public_key=pk, secret_key=secret or sk))


_next_span = 0


def payload(n: int, *, bad: bool = False) -> tuple[bytes, list[str]]:
    """A serialized ExportTraceServiceRequest with ``n`` spans of fresh ids; ``bad`` gives them 4-byte span ids
    (Langfuse rejects the whole request with 400). Returns (bytes, span ids in hex)."""
    global _next_span
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "relay-test"
    ss = rs.scope_spans.add()
    ss.scope.name = "relay-test"
    ids = []
    for _ in range(n):
        _next_span += 1
        sp = ss.spans.add()
        sp.trace_id = (0xABC).to_bytes(16, "big")
        sp.span_id = _next_span.to_bytes(4 if bad else 8, "big")
        sp.name = f"span-{_next_span}"
        sp.start_time_unix_nano = 1_700_000_000_000_000_000 + _next_span
        sp.end_time_unix_nano = sp.start_time_unix_nano + 1000
        ids.append(sp.span_id.hex())
    return req.SerializeToString(), ids


async def commit(spool: Spool, tenant_name: str, batches: int = 1, spans: int = 3, *, bad: bool = False) -> list[str]:
    """Commit ``batches`` outbound batches of ``spans`` spans each; return their span ids in export order."""
    commits, ids = [], []
    for _ in range(batches):
        body, span_ids = payload(spans, bad=bad)
        commits.append(TraceCommit(tenant_name, "0" * 29 + "abc", body, spans, span_ids, {}, []))
        ids += span_ids
    await spool.commit_traces(commits)
    return ids


@asynccontextmanager
async def running(spool: Spool, cfg: LangfuseExporterConfig, *tenants: TenantConfig):
    exporter = LangfuseExporter(spool, cfg, tenants, registry=CollectorRegistry())
    await exporter.start()
    try:
        yield exporter
    finally:
        await exporter.shutdown(deadline_in(2.0))


def posts(lf: FakeLangfuse) -> list:
    """The export requests the fake received (health probes and reconciliation queries left out)."""
    return [r for r in lf.requests if r.path == TRACES_PATH]


async def until(pred, timeout: float = 5.0, what: str = "condition"):
    """Poll ``pred`` (sync or async) every 10 ms until truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def metric(exporter: LangfuseExporter, name: str, tenant_name: str, **labels: str) -> float:
    value = exporter.registry.get_sample_value(name, {"exporter": "langfuse", "tenant": tenant_name, **labels})
    return value or 0.0


def ids_of(spans) -> list[str]:
    return [s.span_id for s in spans]


# ------------------------------------------------------------------------------------------------ unit: retry policy


def test_retry_after_parses_seconds_and_http_dates():
    now = 1_800_000_000.0
    assert parse_retry_after("3", now) == 3.0
    assert parse_retry_after(" 1.5 ", now) == 1.5
    assert parse_retry_after(email.utils.formatdate(now + 7, usegmt=True), now) == 7.0
    assert parse_retry_after(email.utils.formatdate(now - 60, usegmt=True), now) == 0.0  # in the past: no wait
    assert parse_retry_after("999999999", now) == 3600.0  # capped
    for junk in (None, "", "soon", "Mon, 99 Foo 2026"):
        assert parse_retry_after(junk, now) is None


def test_status_classification():
    check_status(200, None, "", failures_500=0, max_500_retries=3)
    check_status(204, None, "", failures_500=0, max_500_retries=3)
    for status in (429, 502, 503, 504):
        with pytest.raises(TransientError) as e:
            check_status(status, "2", "busy", failures_500=0, max_500_retries=3)
        assert e.value.retry_after == 2.0 and e.value.kind == str(status)
    with pytest.raises(TransientError):
        check_status(500, None, "db", failures_500=3, max_500_retries=3)
    with pytest.raises(PermanentError, match="after 3 retries"):
        check_status(500, None, "db", failures_500=4, max_500_retries=3)
    for status in (301, 400, 401, 403, 404, 405, 413, 501):
        with pytest.raises(PermanentError) as e:
            check_status(status, None, "no", failures_500=0, max_500_retries=3)
        assert e.value.status == status


# ------------------------------------------------------------------------------------------------ exporter


async def test_happy_path_headers_gzip_merge_and_order(spool, lf):
    expected = await commit(spool, "a", batches=5, spans=3)
    async with running(spool, config(max_spans=7), tenant("a", lf.base_url)) as exp:
        await lf.wait_for_spans(15)
        expected += await commit(spool, "a", batches=1, spans=2)  # woken by the spool's event
        await lf.wait_for_spans(17)
        await until(lambda: spool.outbound_spans["a"] == 0, what="acks")
        assert metric(exp, "otelcol_exporter_sent_spans_total", "a") == 17
        assert metric(exp, "otelcol_exporter_queue_size", "a") == 0
        assert exp.health()["a"]["state"] == "ok"
    assert ids_of(lf.spans()) == expected  # once each, in order
    assert all(s.project == "proj-a" for s in lf.spans())
    reqs = lf.accepted_requests()
    assert [r.span_count for r in reqs] == [6, 6, 3, 2]  # 2 batches of 3 fit max_spans=7
    for r in reqs:
        assert r.status == 200
        assert r.content_type == "application/x-protobuf" and r.content_encoding == "gzip"
        assert r.body_size > 0  # the fake gunzipped and decoded it (bad gzip or protobuf would be a 400)
        assert r.ingestion_version == "4"
        assert r.headers["x-langfuse-sdk-name"] == "relay" and r.headers["x-langfuse-sdk-version"]
        assert r.headers["user-agent"].startswith("relay/")
        expected_auth = base64.b64encode(b"pk-lf-aaa:sk-lf-aaa-secret").decode()
        assert r.headers["authorization"] == f"Basic {expected_auth}"
    assert await spool.read_outbound("a", 100, 10**6) == []


async def test_503_then_recovery_honours_retry_after(spool, lf):
    lf.fail(503, times=1, headers={"Retry-After": "1"})
    lf.fail(503, times=2)
    expected = await commit(spool, "a", batches=2, spans=2)
    async with running(spool, config(), tenant("a", lf.base_url)) as exp:
        await until(lambda: len(posts(lf)) >= 1, what="first attempt")
        await until(lambda: exp.health()["a"]["state"] == "retrying", what="retrying state")
        assert exp.health()["a"]["last_status"] == 503
        expected += await commit(spool, "a", batches=1, spans=2)  # must not overtake the head batch
        await lf.wait_for_spans(6, timeout=5)
        await until(lambda: exp.health()["a"]["state"] == "ok", what="recovery")
        assert metric(exp, "relay_exporter_retries_total", "a", kind="503") == 3
        assert metric(exp, "relay_exporter_ambiguous_retries_total", "a") == 0
    times = [r.received_at for r in posts(lf)]
    assert times[1] - times[0] >= 0.95, "retried before Retry-After: 1"
    assert times[2] - times[1] < 0.9  # later retries use the (short) backoff
    assert ids_of(lf.spans()) == expected and not lf.duplicate_span_ids()


async def test_429_with_http_date_retry_after(spool, lf):
    deadline = math.ceil(time.time()) + 2  # HTTP-dates have 1 s resolution: wait ≥ 1 s from now
    lf.fail(429, times=1, headers={"Retry-After": email.utils.formatdate(deadline, usegmt=True)})
    expected = await commit(spool, "a", batches=1, spans=2)
    async with running(spool, config(), tenant("a", lf.base_url)) as exp:
        await lf.wait_for_spans(2, timeout=5)
        assert metric(exp, "relay_exporter_retries_total", "a", kind="429") == 1
    first, second = posts(lf)[0].received_at, posts(lf)[1].received_at
    assert second >= deadline - 0.05 and second - first >= 0.95
    assert ids_of(lf.spans()) == expected


async def test_outage_then_restart_on_same_port_delivers_once(spool, lf):
    await lf.outage()
    expected = await commit(spool, "a", batches=3, spans=2)
    async with running(spool, config(max_spans=2), tenant("a", lf.base_url)) as exp:
        await until(lambda: metric(exp, "relay_exporter_retries_total", "a", kind="connect") >= 3, what="retries")
        assert exp.health()["a"]["state"] == "retrying"
        assert "cannot reach 127.0.0.1" in exp.health()["a"]["last_error"]
        expected += await commit(spool, "a", batches=1, spans=2)
        await lf.restore()
        await lf.wait_for_spans(8, timeout=5)
        await until(lambda: spool.outbound_spans["a"] == 0, what="acks")
        assert metric(exp, "relay_exporter_ambiguous_retries_total", "a") == 0
        assert exp.health()["a"]["state"] == "ok"
    assert ids_of(lf.spans()) == expected and not lf.duplicate_span_ids()


async def test_400_dead_letters_later_batches_flow_and_replay_delivers(spool, lf):
    lf.fail(400, times=1, body={"message": "Invalid request data", "error": "bad thing"})
    first = await commit(spool, "a", batches=1, spans=2)
    async with running(spool, config(), tenant("a", lf.base_url)) as exp:
        dead = await until(lambda: spool.dead_letters("a"), what="dead letter")
        assert dead[0].status == 400 and dead[0].spans == 2
        assert dead[0].reason == "HTTP 400: Invalid request data — bad thing"
        later = await commit(spool, "a", batches=2, spans=2)
        await lf.wait_for_spans(4)
        assert metric(exp, "otelcol_exporter_send_failed_spans_total", "a") == 2
        assert metric(exp, "relay_dead_letter_spans", "a") == 2
        assert exp.health()["a"]["state"] == "ok"  # a bad batch is not a broken destination
        assert await spool.requeue_dead_letters(tenant="a") == 1  # "fixed": the fault is gone
        await lf.wait_for_spans(6)
        assert await spool.dead_letters() == []
    assert ids_of(lf.spans()) == later + first and not lf.duplicate_span_ids()


async def test_400_on_merged_request_isolates_the_bad_batch(spool, lf):
    good1 = await commit(spool, "a", batches=1, spans=2)
    await commit(spool, "a", batches=1, spans=2, bad=True)
    good2 = await commit(spool, "a", batches=2, spans=2)
    async with running(spool, config(), tenant("a", lf.base_url)):
        await lf.wait_for_spans(6)
        dead = await until(lambda: spool.dead_letters("a"), what="dead letter")
    assert len(dead) == 1 and dead[0].spans == 2 and "Invalid OTLP trace export" in dead[0].reason
    assert len(dead[0].reason) <= 500
    assert ids_of(lf.spans()) == good1 + good2
    assert [r.status for r in posts(lf)] == [400, 200, 400, 200, 200]  # merged, then one by one


async def test_401_marks_failing_permanently_and_recovers(spool, lf):
    lf.fail(401, times=None)
    first = await commit(spool, "a", batches=1, spans=2)
    async with running(spool, config(), tenant("a", lf.base_url)) as exp:
        await until(lambda: spool.dead_letters("a"), what="dead letter")
        health = exp.health()["a"]
        assert health["state"] == "failing_permanently" and health["last_status"] == 401
        assert "Invalid credentials" in health["last_error"]
        second = await commit(spool, "a", batches=1, spans=2)
        await until(lambda: len(posts(lf)) == 2, what="second batch attempt")
        t_first, t_second = posts(lf)[0].received_at, posts(lf)[1].received_at
        assert t_second - t_first >= 0.25  # paused max_interval (0.3 s) after a 401
        await until(lambda: spool.outbound_spans["a"] == 0, what="second dead letter")
        lf.clear_faults()  # keys fixed on the Langfuse side
        third = await commit(spool, "a", batches=1, spans=2)
        await lf.wait_for_spans(2, timeout=3)
        await until(lambda: exp.health()["a"]["state"] == "ok", what="recovery")
        assert await spool.requeue_dead_letters("a") == 2
        await lf.wait_for_spans(6)
    assert ids_of(lf.spans()) == third + first + second


async def test_wrong_key_never_leaks_the_secret(spool, lf, caplog):
    caplog.set_level(logging.DEBUG)
    await commit(spool, "a", batches=1, spans=1)
    async with running(spool, config(), tenant("a", lf.base_url, secret="sk-lf-WRONG-secret")) as exp:
        dead = await until(lambda: spool.dead_letters("a"), what="dead letter")
        assert exp.health()["a"]["state"] == "failing_permanently"
    assert dead[0].status == 401 and "Invalid credentials" in dead[0].reason
    assert lf.spans() == []
    text = caplog.text + dead[0].reason + repr(exp.health())
    assert "sk-lf-WRONG-secret" not in text and base64.b64encode(b"pk-lf-aaa:sk-lf-WRONG").decode()[:12] not in text


async def test_500_is_retried_up_to_the_limit_then_dead_lettered(spool, lf):
    lf.fail(500, times=1)
    transient = await commit(spool, "a", batches=1, spans=1)
    async with running(spool, config(max_500_retries=2), tenant("a", lf.base_url)) as exp:
        await lf.wait_for_spans(1)
        lf.fail(500, times=None)
        await commit(spool, "a", batches=1, spans=1)
        dead = await until(lambda: spool.dead_letters("a"), what="dead letter")
        assert dead[0].status == 500 and "after 2 retries" in dead[0].reason
        assert [r.status for r in posts(lf)] == [500, 200, 500, 500, 500]
        assert metric(exp, "relay_exporter_retries_total", "a", kind="500") == 3
        lf.clear_faults()
        last = await commit(spool, "a", batches=1, spans=1)
        await lf.wait_for_spans(2)
    assert ids_of(lf.spans()) == transient + last


async def test_tenants_are_independent_and_isolated(spool, lf):
    lf.fail(503, times=None, project="pk-lf-aaa")  # tenant a's project is down
    a_ids = await commit(spool, "a", batches=3, spans=2)
    b_ids = await commit(spool, "b", batches=3, spans=2)
    tenants = (tenant("a", lf.base_url), tenant("b", lf.base_url), tenant("c", None))
    async with running(spool, config(max_spans=2), *tenants) as exp:
        assert sorted(exp.tenants) == ["a", "b"]  # c has no keys: no exporter loop
        await lf.wait_for_spans(6, timeout=2, project="proj-b")
        assert exp.health()["a"]["state"] == "retrying" and exp.health()["b"]["state"] == "ok"
        assert lf.spans("proj-a") == []
        lf.clear_faults()
        await lf.wait_for_spans(6, timeout=3, project="proj-a")
    assert ids_of(lf.spans("proj-a")) == a_ids and ids_of(lf.spans("proj-b")) == b_ids
    assert not lf.duplicate_span_ids()


async def test_stop_while_retrying_is_prompt_and_keeps_the_batch(spool, lf):
    lf.fail(503, times=None, headers={"Retry-After": "30"})
    expected = await commit(spool, "a", batches=2, spans=2)
    exporter = LangfuseExporter(spool, config(), [tenant("a", lf.base_url)])
    await exporter.start()
    await until(lambda: len(posts(lf)) >= 1, what="first attempt")
    started = time.monotonic()
    await exporter.shutdown(deadline_in(5))
    assert time.monotonic() - started < 0.5
    assert spool.outbound_spans["a"] == 4 and len(await spool.read_outbound("a", 100, 10**6)) == 2
    lf.clear_faults()
    async with running(spool, config(), tenant("a", lf.base_url)):
        await lf.wait_for_spans(4)
        await until(lambda: spool.outbound_spans["a"] == 0, what="acks")
    assert ids_of(lf.spans()) == expected and not lf.duplicate_span_ids()


async def test_stop_lets_the_in_flight_request_finish(spool, lf):
    lf.slow(0.4)  # spans recorded, answer 0.4 s later
    expected = await commit(spool, "a", batches=1, spans=2)
    exporter = LangfuseExporter(spool, config(), [tenant("a", lf.base_url)])
    await exporter.start()
    await until(lambda: len(posts(lf)) >= 1, what="request in flight")
    await exporter.shutdown(deadline_in(3))
    assert spool.outbound_spans["a"] == 0  # acknowledged before stopping: a restart will not re-send
    async with running(spool, config(), tenant("a", lf.base_url)):
        await asyncio.sleep(0.1)
    assert ids_of(lf.spans()) == expected


async def test_lost_responses_are_reconciled_not_resent(spool, lf, caplog):
    """Langfuse stored the request but its answer was lost (connection dropped; then an answer after the client's
    timeout): relay asks the Observations API which spans Langfuse has before sending again, and sends nothing
    twice. A batch Langfuse does not have is sent again."""
    lf.reset_connection(times=1, after_read=True)  # stored, then the connection drops
    expected = await commit(spool, "a", batches=1, spans=1)
    async with running(spool, config(timeout=0.5, reconcile_delay=0.05), tenant("a", lf.base_url)) as exp:
        await until(lambda: spool.outbound_spans["a"] == 0, what="reconciled")
        lf.slow(1.0, times=1)  # stored, answer after the client's 0.5 s timeout
        second = await commit(spool, "a", batches=1, spans=2)
        await until(lambda: spool.outbound_spans["a"] == 0, what="reconciled")
        lf.reset_connection(times=1, after_read=False)  # dropped before reading: not stored
        third = await commit(spool, "a", batches=1, spans=1)
        await until(lambda: spool.outbound_spans["a"] == 0, what="re-sent")
        disconnects = metric(exp, "relay_exporter_retries_total", "a", kind="disconnect")
        assert metric(exp, "relay_exporter_retries_total", "a", kind="timeout") == 1
        assert disconnects >= 1  # the third drop may come before or after the body was written
        assert metric(exp, "relay_exporter_ambiguous_retries_total", "a") == disconnects + 1
        assert metric(exp, "relay_exporter_reconciled_spans_total", "a") == 3  # found in Langfuse: 1 + 2
        assert metric(exp, "otelcol_exporter_sent_spans_total", "a") == 4
    assert "checking which spans it has" in caplog.text
    assert lf.duplicate_span_ids() == {}
    assert sorted(ids_of(lf.spans())) == sorted(expected + second + third)


async def test_failing_delete_after_a_2xx_is_retried_never_resent(spool, lf, monkeypatch, caplog):
    """Disk full after Langfuse's 2xx: the delete of the exported batch fails (SQLITE_FULL) several times; relay
    retries the delete with backoff and never sends the batch again. Its items count as forwarded once."""
    import sqlite3

    real_ack = Spool.ack_outbound
    fails = {"n": 0}

    async def full_then_ok(self, batches):
        if fails["n"] < 4:
            fails["n"] += 1
            raise sqlite3.OperationalError("database or disk is full")
        return await real_ack(self, batches)

    monkeypatch.setattr(Spool, "ack_outbound", full_then_ok)
    body, span_ids = payload(3)
    await spool.commit_traces([TraceCommit("a", "0" * 29 + "abc", body, 3, span_ids, {}, [], items={"logs": 5})])
    async with running(spool, config(), tenant("a", lf.base_url)):
        await until(lambda: spool.outbound_spans["a"] == 0, what="ack")
        await asyncio.sleep(0.3)  # a re-send would come now
    assert fails["n"] == 4 and len(posts(lf)) == 1 and not lf.duplicate_span_ids()
    assert spool.outcomes.total(outcome="forwarded") == 5
    assert "not sent again" in caplog.text


async def test_interrupted_send_on_a_v3_server_is_resent_without_a_check(spool):
    """Langfuse v3 upserts observations by id, so a batch left "sent, answer lost" is simply sent again: relay
    reads the server's version from /api/public/health and asks no Observations API."""
    async with FakeLangfuse(PROJECTS, version="3.120.0") as lf:
        ids = await commit(spool, "a", batches=1, spans=2)
        await spool.mark_sending(await spool.read_outbound("a", 10, 10**6))  # a previous process died mid-send
        async with running(spool, config(reconcile_delay=30), tenant("a", lf.base_url)) as exp:
            await lf.wait_for_spans(2)
            await until(lambda: spool.outbound_spans["a"] == 0, what="ack")
            assert metric(exp, "relay_exporter_reconciled_spans_total", "a") == 0
        assert not [r for r in lf.requests if r.path == OBSERVATIONS_PATH]
        assert ids_of(lf.spans()) == ids


async def test_interrupted_send_without_observations_api_is_resent_and_counted(spool, lf, caplog):
    """When the check is impossible (the Observations API answers 404, e.g. an older self-hosted server), the
    batch is sent again whole and counted as an unverified re-send (possible duplicates)."""
    lf.add_fault(Fault(kind="status", status=404, path=OBSERVATIONS_PATH, times=None))
    ids = await commit(spool, "a", batches=1, spans=2)
    await spool.mark_sending(await spool.read_outbound("a", 10, 10**6))
    async with running(spool, config(), tenant("a", lf.base_url)) as exp:
        await lf.wait_for_spans(2)
        await until(lambda: spool.outbound_spans["a"] == 0, what="ack")
        assert metric(exp, "relay_exporter_unverified_resent_spans_total", "a") == 2
    assert "possible duplicates" in caplog.text
    assert ids_of(lf.spans()) == ids


async def test_interrupted_send_found_partly_in_langfuse_sends_only_the_rest(spool, lf):
    """The batch of a crashed send is split: the spans Langfuse already has are dropped, the others sent."""
    body, span_ids = payload(4)
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    first_half = ExportTraceServiceRequest.FromString(body)
    spans = first_half.resource_spans[0].scope_spans[0].spans
    del spans[2:]
    import base64

    import aiohttp

    auth = "Basic " + base64.b64encode(b"pk-lf-aaa:sk-lf-aaa-secret").decode()
    async with aiohttp.ClientSession() as s:  # Langfuse got the first two spans by another way
        async with s.post(
            lf.traces_url,
            data=first_half.SerializeToString(),
            headers={"Content-Type": "application/x-protobuf", "Authorization": auth},
        ) as r:
            assert r.status == 200
    await spool.commit_traces([TraceCommit("a", "0" * 29 + "abc", body, 4, span_ids, {}, [], items={"traces": 4})])
    await spool.mark_sending(await spool.read_outbound("a", 10, 10**6))
    async with running(spool, config(), tenant("a", lf.base_url)) as exp:
        await until(lambda: spool.outbound_spans["a"] == 0, what="ack")
        assert metric(exp, "relay_exporter_reconciled_spans_total", "a") == 2
    assert sorted(ids_of(lf.spans())) == sorted(span_ids) and not lf.duplicate_span_ids()
    assert spool.outcomes.total(outcome="forwarded") == 4
