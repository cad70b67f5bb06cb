"""Faults on the real wire: relay killed with SIGKILL right after acknowledging, Langfuse down or answering 503,
SIGTERM drains, bad input while serving, a full spool. Nothing acknowledged is lost, nothing is exported twice."""

from __future__ import annotations

import asyncio
import gzip
import time

import aiohttp
import pytest

from relay.component import deadline_in
from tests.fakes.langfuse import FakeLangfuse
from tests.support.expected import by_name, events
from tests.support.fixtures import load_scenario
from tests.support.inproc import post_capture, replay, running_relay, settle
from tests.support.relay_proc import RelayProcess

LF_ENV = {"LANGFUSE_PUBLIC_KEY": "pk-lf-test", "LANGFUSE_SECRET_KEY": "sk-lf-test"}
OUTCOMES = ("forwarded", "filtered", "invalid", "dead_lettered", "quarantined")


def expected_items(scenario: str) -> list[int]:
    """Items (spans, log records, metric points) per captured request of ``scenario``, counted independently."""
    from tests.support.otlp_helpers import count_items

    out = []
    for r in load_scenario(scenario):
        body = gzip.decompress(r.body) if r.content_encoding == "gzip" else r.body
        out.append(count_items(r.signal, body, "json" in r.content_type))
    return out


def assert_outcomes_sum_to_accepted(relay) -> None:
    """Every item the receivers stored has exactly one outcome in relay_items_total (in-process relay)."""
    t = relay.telemetry
    accepted = sum(t.sample(f"otelcol_receiver_accepted_{k}_total") for k in ("spans", "log_records", "metric_points"))
    invalid = t.sample("relay_items_total", {"outcome": "invalid"})
    total = sum(t.sample("relay_items_total", {"outcome": o}) for o in OUTCOMES)
    assert accepted > 0 and total - invalid == accepted, (accepted, total, invalid)


def expected_observations(scenario: str) -> int:
    """Root per interaction + one per api_request, tool_result, api_error and api_retries_exhausted."""
    evs = events(scenario)
    return len({e.attrs["prompt.id"] for e in by_name(evs, "user_prompt")}) + sum(
        len(by_name(evs, n)) for n in ("api_request", "tool_result", "api_error", "api_retries_exhausted")
    )


def replay_sync(base_url: str, scenario: str) -> list[int]:
    async def go():
        async with aiohttp.ClientSession() as s:
            return [await post_capture(s, base_url, r) for r in load_scenario(scenario)]

    return asyncio.run(go())


def wait_spans(lf, n: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(lf.spans()) < n:
        time.sleep(0.05)
    time.sleep(1.0)  # anything more would be a duplicate


@pytest.mark.slow
def test_kill_9_right_after_acknowledgement_loses_nothing(tmp_path):
    with FakeLangfuse.run_in_thread() as lf:
        lf.outage()  # nothing can be exported before the kill
        env = {**LF_ENV, "LANGFUSE_BASE_URL": lf.base_url}
        relay = RelayProcess(tmp_path / "data", env=env).start()
        statuses = replay_sync(relay.http_url, "protobuf-tools")
        assert set(statuses) == {200}
        relay.kill9()
        lf.restore()
        relay2 = RelayProcess(
            tmp_path / "data",
            env=env,
            http_port=relay.http_port,
            grpc_port=relay.grpc_port,
            admin_port=relay.admin_port,
        ).start()
        try:
            want = expected_observations("protobuf-tools")
            wait_spans(lf, want)
            assert len(lf.spans()) == want, relay2.logs()[-3000:]
            assert lf.duplicate_span_ids() == {}
            assert len(lf.view().generations()) == len(by_name(events("protobuf-tools"), "api_request"))
            # durable outcome totals: every item acknowledged by the killed relay has exactly one outcome
            assert sum(relay2.metric("relay_items_total", outcome=o) for o in OUTCOMES) == sum(
                expected_items("protobuf-tools")
            )
        finally:
            assert relay2.terminate() == 0


@pytest.mark.slow
def test_kill_9_while_exporting_does_not_duplicate(tmp_path):
    with FakeLangfuse.run_in_thread() as lf:
        env = {**LF_ENV, "LANGFUSE_BASE_URL": lf.base_url}
        relay = RelayProcess(tmp_path / "data", env=env).start()
        for scenario in ("protobuf-text", "protobuf-tools", "protobuf-subagent"):
            assert set(replay_sync(relay.http_url, scenario)) == {200}
        time.sleep(0.3)
        relay.kill9()
        relay2 = RelayProcess(
            tmp_path / "data",
            env=env,
            http_port=relay.http_port,
            grpc_port=relay.grpc_port,
            admin_port=relay.admin_port,
        ).start()
        try:
            want = sum(expected_observations(s) for s in ("protobuf-text", "protobuf-tools", "protobuf-subagent"))
            wait_spans(lf, want)
            assert len({s.span_id for s in lf.spans()}) == want
            # the batch in flight at the kill is reconciled with Langfuse after the restart: never sent twice
            assert lf.duplicate_span_ids() == {}
            outcomes = sum(relay2.metric("relay_items_total", outcome=o) for o in OUTCOMES)
            accepted = sum(sum(expected_items(s)) for s in ("protobuf-text", "protobuf-tools", "protobuf-subagent"))
            assert outcomes == accepted
        finally:
            relay2.terminate()


@pytest.mark.slow
def test_sigterm_drains_and_open_traces_resume_after_restart(tmp_path):
    with FakeLangfuse.run_in_thread() as lf:
        env = {**LF_ENV, "LANGFUSE_BASE_URL": lf.base_url}
        # a long idle timeout: the nobeta interaction is still open when SIGTERM arrives
        relay = RelayProcess(tmp_path / "data", env=env, overrides={"pipeline": {"idle_timeout": "30s"}}).start()
        assert set(replay_sync(relay.http_url, "protobuf-text-nobeta")) == {200}
        assert relay.terminate() == 0
        assert '"relay stopped"' in relay.logs()
        assert lf.spans() == []
        relay2 = RelayProcess(tmp_path / "data", env=env).start()
        try:
            want = expected_observations("protobuf-text-nobeta")
            wait_spans(lf, want)
            assert len(lf.spans()) == want and lf.duplicate_span_ids() == {}
            assert sum(relay2.metric("relay_items_total", outcome=o) for o in OUTCOMES) == sum(
                expected_items("protobuf-text-nobeta")
            )
        finally:
            relay2.terminate()


async def test_langfuse_503_then_recovery_loses_and_duplicates_nothing(tmp_path):
    async with FakeLangfuse() as lf:
        lf.fail(503, times=None, duration=1.5)
        async with running_relay(tmp_path / "data", lf.base_url) as relay:
            for scenario in ("protobuf-tools", "protobuf-err529"):
                assert set(await replay(relay, scenario)) == {200}
            await settle(relay, timeout=20)
            assert_outcomes_sum_to_accepted(relay)
        assert any(r.status == 503 for r in lf.requests)
        want = expected_observations("protobuf-tools") + expected_observations("protobuf-err529")
        assert len(lf.spans()) == want
        assert lf.duplicate_span_ids() == {}


async def test_bad_input_gets_4xx_and_harms_nothing_already_accepted(tmp_path):
    async with FakeLangfuse() as lf:
        overrides = {"receivers": {"otlp": {"protocols": {"http": {"max_request_body_size": "1MiB"}}}}}
        async with running_relay(tmp_path / "data", lf.base_url, overrides) as relay:
            url = f"http://127.0.0.1:{relay.http.port}"
            assert set(await replay(relay, "protobuf-text")) == {200}
            bomb = gzip.compress(b"\0" * (8 * 2**20))
            async with aiohttp.ClientSession() as s:
                bad = [
                    (b"\xff\xff\xff garbage", {"Content-Type": "application/x-protobuf"}, 400),
                    (b'{"resourceSpans": [', {"Content-Type": "application/json"}, 400),
                    (b"not gzip", {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}, 400),
                    (bomb, {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}, 413),
                    (b"x" * (2 * 2**20), {"Content-Type": "application/x-protobuf"}, 413),
                    (b"{}", {"Content-Type": "text/plain"}, 415),
                ]
                for body, headers, status in bad:
                    async with s.post(url + "/v1/traces", data=body, headers=headers) as r:
                        assert r.status == status, (headers, await r.text())
            assert set(await replay(relay, "protobuf-text-nobeta")) == {200}  # still serving
            await settle(relay)
            assert_outcomes_sum_to_accepted(relay)
        want = expected_observations("protobuf-text") + expected_observations("protobuf-text-nobeta")
        assert len(lf.spans()) == want and lf.duplicate_span_ids() == {}


async def test_full_spool_answers_503_with_retry_after_instead_of_dropping(tmp_path):
    overrides = {"storage": {"max_spool_size": 6000}}
    async with running_relay(tmp_path / "data", None, overrides) as relay:
        await relay.pipeline.shutdown(deadline_in(5))  # nothing drains: the spool only fills
        reqs = [r for r in load_scenario("protobuf-tools") if r.signal == "logs"]
        async with aiohttp.ClientSession() as s:
            url = f"http://127.0.0.1:{relay.http.port}"
            statuses = []
            for r in reqs:
                headers = {"Content-Type": r.content_type}
                async with s.post(url + r.path, data=r.body, headers=headers) as resp:
                    statuses.append((resp.status, resp.headers.get("Retry-After")))
        assert statuses[0][0] == 200
        refused = [ra for st, ra in statuses if st == 503]
        assert refused and all(ra and int(ra) >= 1 for ra in refused)
        stored = await relay.spool.pending_inbound()
        assert stored == sum(1 for st, _ in statuses if st == 200)
        assert relay.spool.size <= 6000  # the limit is exact


async def test_langfuse_outage_resumes_within_a_second_of_recovery(tmp_path):
    """During an outage relay backs off (here 20 s ± 50 %, far longer than the outage) but probes Langfuse's health
    endpoint; the export resumes right after the recovery instead of at the end of the backoff."""
    overrides = {
        "exporters": {
            "langfuse": {
                "retry_on_failure": {"initial_interval": "20s", "max_interval": "30s"},
                "health_probe_interval": "100ms",
            }
        }
    }
    async with FakeLangfuse() as lf:
        async with running_relay(tmp_path / "data", lf.base_url, overrides) as relay:
            await lf.outage()
            assert set(await replay(relay, "protobuf-tools")) == {200}
            deadline = time.monotonic() + 10
            while relay.telemetry.sample("relay_exporter_retries_total") == 0:  # the first attempt failed
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.5)
            await lf.restore()
            restored = time.monotonic()
            await lf.wait_for_spans(expected_observations("protobuf-tools"), timeout=8)
            resumed = time.monotonic() - restored
            await settle(relay)
            assert_outcomes_sum_to_accepted(relay)
        health = [r for r in lf.requests if r.path == "/api/public/health"]
        assert health, "relay never probed the health endpoint"
        assert resumed < 8  # the backoff alone would have waited at least 10 s
        assert lf.duplicate_span_ids() == {}
