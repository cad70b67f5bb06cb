"""Storage faults are states, not stalls: a full disk (a small tmpfs the test mounts itself), failing writes,
poison items, an exact spool limit. Every test checks that each acknowledged item ended in exactly one outcome."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import uuid
from pathlib import Path

import aiohttp
import pytest

from relay.model import Signal
from relay.spool import Spool, SpoolFull
from tests.fakes.langfuse import FakeLangfuse
from tests.support.inproc import running_relay, settle
from tests.support.kill_trials import trace_request

OUTCOMES = ("forwarded", "filtered", "invalid", "dead_lettered", "quarantined")


def outcome_sum(relay, signal: str | None = None) -> float:
    """relay_items_total summed over outcomes (and over signals unless ``signal``)."""
    labels = {"signal": signal} if signal else {}
    return sum(relay.telemetry.sample("relay_items_total", {**labels, "outcome": o}) for o in OUTCOMES)


def accepted(relay) -> float:
    t = relay.telemetry
    return sum(t.sample(f"otelcol_receiver_accepted_{k}_total") for k in ("spans", "log_records", "metric_points"))


@contextlib.contextmanager
def small_filesystem(path: Path, size: str):
    """A tmpfs of ``size`` mounted at ``path`` (needs root or a user namespace; skips the test otherwise)."""
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(path: Path) -> Path:
    """Write a ballast file until the file system is full (ENOSPC); returns it."""
    ballast = path / f"ballast-{uuid.uuid4().hex}"
    chunk = b"\0" * 65536
    with open(ballast, "wb", buffering=0) as f:
        while True:
            try:
                f.write(chunk)
            except OSError:
                break
    with open(path / "ballast-tail", "wb", buffering=0) as f:  # the last partial block
        try:
            while True:
                f.write(b"\0" * 512)
        except OSError:
            pass
    return ballast


async def post_traces(session, url: str, bodies: list[bytes]) -> list[tuple[int, str | None]]:
    out = []
    for body in bodies:
        async with session.post(url + "/v1/traces", data=body, headers={"Content-Type": "application/x-protobuf"}) as r:
            await r.read()
            out.append((r.status, r.headers.get("Retry-After")))
    return out


class _InjectedFull:
    """Stand-in for a full file system where none can be mounted: the database's writes fail with SQLITE_FULL's
    error and the free space reads 0, until ``free()``."""

    def __init__(self, relay, monkeypatch):
        self.full = False
        relay.spool.db.fault = lambda: sqlite3.OperationalError("database or disk is full") if self.full else None
        real = Spool.free_space
        monkeypatch.setattr(Spool, "free_space", lambda spool: 0 if self.full else real(spool))

    def fill(self):
        self.full = True

    def free(self):
        self.full = False


@pytest.mark.parametrize("disk", ["tmpfs", "injected"])
async def test_disk_full_answers_503_and_recovers_without_restart(tmp_path, monkeypatch, disk):
    """The data directory sits on an 8 MiB tmpfs (``tmpfs``; where mounting is impossible the test is skipped and
    the ``injected`` variant, SQLITE_FULL through ``SqliteDB.fault``, still runs). With spans accepted and
    Langfuse down, the disk is filled to the last byte: receivers answer 503 + Retry-After, the pipeline's and the
    exporter's writes fail and are retried in place. Space is freed: with no restart relay drains everything,
    takes the clients' retries, and every acknowledged span reaches Langfuse exactly once with exactly one
    outcome."""
    with contextlib.ExitStack() as stack:
        if disk == "tmpfs":
            fs = stack.enter_context(small_filesystem(tmp_path / "fs", "8m"))
        else:
            fs = tmp_path
        overrides = {"storage": {"min_free_space": "512KiB"}}
        async with FakeLangfuse() as lf:
            async with running_relay(fs / "data", lf.base_url, overrides) as relay:
                injected = _InjectedFull(relay, monkeypatch) if disk == "injected" else None
                url = f"http://127.0.0.1:{relay.http.port}"
                await lf.outage()
                first = [trace_request(5) for _ in range(30)]
                later = [trace_request(5) for _ in range(10)]
                async with aiohttp.ClientSession() as s:
                    assert {st for st, _ in await post_traces(s, url, [b for b, _ in first])} == {200}
                    if injected:
                        injected.fill()
                    else:
                        ballast = fill(fs)
                    await lf.restore()  # exports can go out now, but their deletes need room
                    full = await post_traces(s, url, [b for b, _ in later])
                    assert all(st == 503 and ra and int(ra) >= 1 for st, ra in full), full
                    async with s.get(f"http://127.0.0.1:{relay.admin_port}/readyz") as r:
                        assert r.status == 503 and "disk almost full" in await r.text()
                    await asyncio.sleep(1.5)  # faults while full: writes fail and are retried
                    storage_errors = relay.telemetry.sample("relay_pipeline_storage_errors_total")
                    if injected:
                        injected.free()
                    else:
                        ballast.unlink()
                        (fs / "ballast-tail").unlink()
                    # no restart: the clients' retries are taken and the backlog drains
                    retried = await post_traces(s, url, [b for b, _ in later])
                    assert {st for st, _ in retried} == {200}
                await settle(relay, timeout=30)
                acked = [sid for _, ids in first + later for sid in ids]
                assert accepted(relay) == len(acked)
                assert outcome_sum(relay) == len(acked)
                assert relay.telemetry.sample("relay_items_total", {"outcome": "forwarded"}) == len(acked)
            assert sorted(s.span_id for s in lf.spans()) == sorted(acked)
            assert lf.duplicate_span_ids() == {}
    assert storage_errors > 0  # the full disk did fail the pipeline's writes (retried in place)


async def test_failed_writes_are_retried_in_place_and_poison_items_quarantined(tmp_path, monkeypatch):
    """A storage error (SQLITE_FULL, injected into the pipeline's commit) is retried until it passes: nothing is
    quarantined, nothing skipped. A deterministic failure (a mapping bug on one trace) is retried max_attempts
    times, then only that trace's request is quarantined with its reason, and counted."""
    import sqlite3

    import relay.pipeline.worker as worker

    real_write = Spool.commit_traces
    failures = {"n": 0}

    async def flaky_write(self, *a, **k):
        if failures["n"] < 5:
            failures["n"] += 1
            raise sqlite3.OperationalError("database or disk is full")
        return await real_write(self, *a, **k)

    real_map = worker.map_group
    poison: set[str] = set()

    def map_or_fail(logs, spans, ctx, known=None):
        if spans and spans[0].trace_id in poison:
            raise ValueError("cannot map this trace")
        return real_map(logs, spans, ctx, known)

    monkeypatch.setattr(Spool, "commit_traces", flaky_write)
    monkeypatch.setattr(worker, "map_group", map_or_fail)
    async with FakeLangfuse() as lf:
        async with running_relay(tmp_path / "data", lf.base_url) as relay:
            url = f"http://127.0.0.1:{relay.http.port}"
            good = [trace_request(3) for _ in range(4)]
            bad_body, bad_ids = trace_request(3)
            from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

            poison.add(
                ExportTraceServiceRequest.FromString(bad_body).resource_spans[0].scope_spans[0].spans[0].trace_id.hex()
            )
            async with aiohttp.ClientSession() as s:
                statuses = await post_traces(s, url, [b for b, _ in good] + [bad_body])
            assert {st for st, _ in statuses} == {200}
            await settle(relay, timeout=20)
            assert failures["n"] == 5  # the storage errors happened and were waited out
            quarantined = await relay.spool.db.run(lambda c: c.execute("SELECT reason FROM quarantine").fetchall())
            assert len(quarantined) == 1 and quarantined[0][0].startswith("mapping: ValueError: cannot map")
            good_ids = [sid for _, ids in good for sid in ids]
            t = relay.telemetry
            assert t.sample("relay_items_total", {"outcome": "quarantined", "reason": "mapping"}) == len(bad_ids)
            assert t.sample("relay_items_total", {"outcome": "forwarded"}) == len(good_ids)
            assert outcome_sum(relay) == accepted(relay) == len(good_ids) + len(bad_ids)
        assert sorted(s.span_id for s in lf.spans()) == sorted(good_ids)


async def test_quarantine_write_failure_is_not_logged_as_quarantined(tmp_path, monkeypatch, caplog):
    """When the quarantine write itself fails, relay says so, keeps the request in the inbound spool and retries;
    "quarantined" is logged once, after the write that really quarantined it."""
    import sqlite3

    import relay.pipeline.worker as worker

    monkeypatch.setattr(worker, "map_group", lambda *a, **k: (_ for _ in ()).throw(ValueError("bug")))
    real_quarantine = Spool.quarantine
    calls = {"n": 0}

    async def failing_quarantine(self, *a, **k):
        calls["n"] += 1
        if calls["n"] <= 2:
            raise sqlite3.OperationalError("disk I/O error")
        return await real_quarantine(self, *a, **k)

    monkeypatch.setattr(Spool, "quarantine", failing_quarantine)
    async with running_relay(tmp_path / "data", None) as relay:
        async with aiohttp.ClientSession() as s:
            body, ids = trace_request(2)
            assert (await post_traces(s, f"http://127.0.0.1:{relay.http.port}", [body]))[0][0] == 200
        await settle(relay, timeout=20)
        rows = await relay.spool.db.run(lambda c: c.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0])
        assert rows == 1 and calls["n"] == 3
        assert outcome_sum(relay) == accepted(relay) == len(ids)
    messages = [r.getMessage() for r in caplog.records if r.name == "relay.pipeline.worker"]
    assert sum("could not be quarantined" in m for m in messages) == 2
    assert (
        sum(
            m.endswith("quarantined (relay replay --quarantined): mapping: ValueError: bug")
            or "; quarantined (relay replay" in m
            for m in messages
        )
        == 1
    )


async def test_metric_point_beyond_2_63_ns_is_rejected_not_jammed(tmp_path):
    """A data point with time_unix_nano ≥ 2^63 is refused at the receiver (partial success, counted invalid);
    the rest of the request is stored and processed."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
        ExportMetricsServiceResponse,
    )

    req = ExportMetricsServiceRequest()
    m = req.resource_metrics.add().scope_metrics.add().metrics.add(name="claude_code.token.usage")
    m.sum.aggregation_temporality = 1
    m.sum.data_points.add(time_unix_nano=2**63, start_time_unix_nano=1, as_double=3.0)
    m.sum.data_points.add(time_unix_nano=2**64 - 1, as_double=3.0)
    m.sum.data_points.add(time_unix_nano=1_700_000_000_000_000_000, as_double=5.0)
    async with running_relay(tmp_path / "data", None) as relay:
        async with aiohttp.ClientSession() as s:
            async with s.post(
                f"http://127.0.0.1:{relay.http.port}/v1/metrics",
                data=req.SerializeToString(),
                headers={"Content-Type": "application/x-protobuf"},
            ) as r:
                assert r.status == 200
                resp = ExportMetricsServiceResponse.FromString(await r.read())
        assert resp.partial_success.rejected_data_points == 2
        assert "2^63" in resp.partial_success.error_message
        await settle(relay)
        t = relay.telemetry
        assert t.sample("relay_items_total", {"outcome": "invalid", "reason": "timestamp"}) == 2
        assert t.sample("relay_items_total", {"outcome": "filtered", "reason": "ledger_only"}) == 1
        assert await relay.spool.pending_inbound() == 0
        assert t.sample("relay_items_total", {"outcome": "quarantined"}) == 0


async def test_spool_limit_is_exact_under_concurrent_appends(tmp_path):
    """Concurrent appends reserve their bytes before the write: the spool never goes over max_size."""
    s = Spool.open(tmp_path, max_size=10_000)
    try:

        async def one(i: int):
            try:
                return await s.append("t", Signal.LOGS, bytes([i % 256]) * 700, 1, os.urandom(8))
            except SpoolFull:
                return False

        results = await asyncio.gather(*[one(i) for i in range(100)])
        assert sum(results) == 10_000 // 700
        assert s.size <= s.max_size
        size = await s.db.run(lambda c: c.execute("SELECT SUM(LENGTH(payload)) FROM inbound").fetchone()[0])
        assert size <= 10_000
    finally:
        s.close()


async def test_admission_refuses_below_min_free_space_and_reopens(tmp_path, monkeypatch):
    s = Spool.open(tmp_path, max_size=10**9, min_free_space=10**6)
    try:
        monkeypatch.setattr(Spool, "free_space", lambda self: 10**6 + 100)
        with pytest.raises(SpoolFull) as e:
            await s.append("t", Signal.LOGS, b"x" * 200, 1, None)
        assert "storage.min_free_space" in e.value.reason and e.value.retry_after > 0
        monkeypatch.setattr(Spool, "free_space", lambda self: 10**7)
        assert await s.append("t", Signal.LOGS, b"x" * 200, 1, None)
    finally:
        s.close()


async def test_outcome_totals_survive_a_restart_including_all_invalid_requests(tmp_path):
    """relay_items_total is durable: after a restart it still holds every earlier outcome, also the invalid items
    of a request of which nothing was stored."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    bad = ExportTraceServiceRequest()
    ss = bad.resource_spans.add().scope_spans.add()
    ss.spans.add(trace_id=b"\0" * 16, span_id=b"12345678", name="zero trace id")
    ss.spans.add(trace_id=b"t" * 16, span_id=b"1234", name="short span id")
    good, ids = trace_request(3)
    async with running_relay(tmp_path / "data", None) as relay:
        async with aiohttp.ClientSession() as s:
            statuses = await post_traces(s, f"http://127.0.0.1:{relay.http.port}", [bad.SerializeToString(), good])
        assert [st for st, _ in statuses] == [200, 200]
        await settle(relay)
        before = relay.telemetry.outcomes.snapshot()
    async with running_relay(tmp_path / "data", None) as relay:
        after = relay.telemetry.outcomes.snapshot()
        assert after == before
        assert relay.telemetry.sample("relay_items_total", {"outcome": "invalid", "reason": "trace_id"}) == 1
        assert relay.telemetry.sample("relay_items_total", {"outcome": "invalid", "reason": "span_id"}) == 1
        assert relay.telemetry.sample("relay_items_total", {"outcome": "filtered", "reason": "export_disabled"}) == 3
