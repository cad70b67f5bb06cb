"""Operational promises: deterministic ids across replays, readiness on permanent export failure, dead letters and
replay after a fix, logs without secrets or prompt text."""

from __future__ import annotations

import json

import aiohttp
import pytest

from tests.fakes.langfuse import FakeLangfuse
from tests.support.inproc import replay, running_relay, settle
from tests.support.relay_proc import RelayProcess
from tests.test_faults import expected_observations, replay_sync, wait_spans


async def test_replaying_a_capture_produces_the_same_langfuse_objects(tmp_path):
    ids = []
    for run in ("a", "b"):
        async with FakeLangfuse() as lf:
            async with running_relay(tmp_path / run, lf.base_url) as relay:
                await replay(relay, "protobuf-text-nobeta")
                await settle(relay)
            ids.append(sorted((s.trace_id, s.span_id, s.parent_span_id or "") for s in lf.spans()))
    assert ids[0] == ids[1] and ids[0]


async def test_revoked_keys_are_reported_by_readyz_relay_stays_ready_and_replay_recovers_after_the_fix(tmp_path):
    async with FakeLangfuse() as lf:
        revoked = lf.fail(401, times=None)  # the project's keys were revoked
        async with running_relay(tmp_path / "data", lf.base_url) as relay:
            await replay(relay, "protobuf-text")
            await settle(relay)
            async with aiohttp.ClientSession() as s:
                async with s.get(f"http://127.0.0.1:{relay.admin_port}/readyz") as r:
                    body = await r.json()
                    # still ready: data is accepted and spooled; the failing upstream is reported, not unready
                    assert r.status == 200 and body["status"] == "ready" and body["problems"] == []
                    assert any("tenant default failing" in p for p in body["upstreams_failing"])
                    assert "sk-lf" not in json.dumps(body)
            [dl] = await relay.spool.dead_letters()
            assert dl.status == 401 and dl.spans == expected_observations("protobuf-text")
            assert lf.spans() == []
            assert revoked.hits >= 1
            # the operator fixes the keys (here: the server accepts them again) and replays the dead letters
            lf.clear_faults()
            assert await relay.spool.requeue_dead_letters() == 1
            await settle(relay)
        assert len(lf.spans()) == expected_observations("protobuf-text")


def test_logs_contain_neither_secrets_nor_prompt_text(tmp_path):
    with FakeLangfuse.run_in_thread() as lf:
        env = {
            "LANGFUSE_BASE_URL": lf.base_url,
            "LANGFUSE_PUBLIC_KEY": "pk-lf-test",
            "LANGFUSE_SECRET_KEY": "sk-lf-test",
        }
        lf.fail(401, times=1)  # an error path that logs the server's answer
        relay = RelayProcess(tmp_path / "data", env=env, overrides={"service": {"log": {"level": "debug"}}}).start()
        try:
            assert set(replay_sync(relay.http_url, "protobuf-tools")) == {200}
            wait_spans(lf, 1, timeout=10)
        finally:
            relay.terminate()
        logs = relay.logs()
        assert "dead-lettered" in logs  # the 401 was logged …
        for secret in ("sk-lf-test", "pk-lf-test", "capture-token", "SCENARIO:tools", "echo hi"):
            assert secret not in logs  # … without keys, tokens or prompt/tool content
        for line in logs.splitlines():
            json.loads(line)  # structured: one JSON object per line when not on a terminal


async def test_a_mapping_bug_quarantines_the_requests_and_replay_recovers_them(tmp_path, monkeypatch):
    import relay.pipeline.worker as worker

    real = worker.map_group

    def broken(*args, **kwargs):
        raise RuntimeError("bug")

    async with FakeLangfuse() as lf:
        async with running_relay(tmp_path / "data", lf.base_url) as relay:
            monkeypatch.setattr(worker, "map_group", broken)
            await replay(relay, "protobuf-text")
            await settle(relay)
            assert lf.spans() == [] and relay.telemetry.sample("relay_pipeline_errors_total") >= 1
            monkeypatch.setattr(worker, "map_group", real)  # the fix is deployed
            assert await relay.spool.requeue_quarantined() >= 1
            await settle(relay)
        assert len(lf.spans()) == expected_observations("protobuf-text") and lf.duplicate_span_ids() == {}


@pytest.mark.parametrize("choice,loop", [("auto", "uvloop"), ("asyncio", "asyncio")])
def test_the_daemon_runs_on_the_configured_event_loop(tmp_path, choice, loop):
    """``service.event_loop``: ``auto`` is uvloop (a dependency), ``asyncio`` asyncio's own loop; either way a
    Claude Code capture is accepted and reaches Langfuse."""
    with FakeLangfuse.run_in_thread() as lf:
        env = {"LANGFUSE_BASE_URL": lf.base_url, "LANGFUSE_PUBLIC_KEY": "pk-lf-t", "LANGFUSE_SECRET_KEY": "sk-lf-t"}
        relay = RelayProcess(tmp_path / "data", env=env, overrides={"service": {"event_loop": choice}}).start()
        try:
            assert set(replay_sync(relay.http_url, "protobuf-tools")) == {200}
            wait_spans(lf, 1, timeout=10)
        finally:
            assert relay.terminate() == 0
        msgs = [json.loads(x)["msg"] for x in relay.logs().splitlines() if x.startswith("{")]
        started = [m for m in msgs if m.startswith("relay ") and " started: " in m]
        assert len(started) == 1 and started[0].endswith(f"event loop {loop}"), started
