"""A request whose traces were only partly decided when relay stopped: after the restart its decided trace is
skipped (not exported or counted again) and its open trace is finished — the pipeline asks which ``(request,
trace)`` pairs an earlier process decided only for the requests that process left behind."""

from __future__ import annotations

import asyncio
import os
import time

import aiohttp
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.fakes.langfuse import FakeLangfuse
from tests.support.inproc import running_relay, settle

OUTCOMES = ("forwarded", "filtered", "invalid", "dead_lettered", "quarantined")


def _request() -> tuple[bytes, list[str]]:
    """One request with two traces: A complete (a root and a child), B without its root (stays open until
    ``idle_timeout``)."""
    req = ExportTraceServiceRequest()
    spans = req.resource_spans.add().scope_spans.add().spans
    now = time.time_ns()
    a, b = os.urandom(16), os.urandom(16)
    root = os.urandom(8)
    ids = []
    for trace, span_id, parent in ((a, root, b""), (a, os.urandom(8), root), (b, os.urandom(8), os.urandom(8))):
        spans.add(
            trace_id=trace,
            span_id=span_id,
            parent_span_id=parent,
            name="work",
            start_time_unix_nano=now,
            end_time_unix_nano=now + 1_000_000,
        )
        ids.append(span_id.hex())
    return req.SerializeToString(), ids


_PROTOBUF = {"Content-Type": "application/x-protobuf"}


async def _post(relay, *bodies: bytes, gap: float = 0.0) -> None:
    """POST each body to relay's ``/v1/traces`` over HTTP, one after another (``gap`` seconds apart); each 200."""
    async with aiohttp.ClientSession() as s:
        for i, body in enumerate(bodies):
            if i and gap:
                await asyncio.sleep(gap)
            async with s.post(f"http://127.0.0.1:{relay.http.port}/v1/traces", data=body, headers=_PROTOBUF) as r:
                assert r.status == 200


def _decided(relay) -> float:
    return sum(relay.telemetry.sample("relay_items_total", {"outcome": o, "signal": "traces"}) for o in OUTCOMES)


async def test_a_half_decided_request_is_finished_once_after_a_restart(tmp_path):
    body, ids = _request()
    slow = {"pipeline": {"idle_timeout": "60s", "root_grace": "100ms"}}
    fast = {"pipeline": {"idle_timeout": "200ms", "root_grace": "100ms"}}
    async with FakeLangfuse() as lf:
        async with running_relay(tmp_path / "data", lf.base_url, slow) as relay:
            await _post(relay, body)
            await lf.wait_for_spans(2)  # trace A went out; B waits for its root
            assert relay.pipeline.assembler.groups  # B is still open: the request stays in the inbound spool
        async with running_relay(tmp_path / "data", lf.base_url, fast) as relay:
            await settle(relay)
            assert _decided(relay) == 3  # each span one outcome, A's not counted a second time
            assert await relay.spool.pending_inbound() == 0
    assert sorted(sp.span_id for sp in lf.spans()) == sorted(ids)  # every span exported exactly once


async def test_a_request_larger_than_a_feed_step_is_fed_whole_while_another_is_acknowledged(tmp_path):
    """The pipeline decodes a large request in steps of ``FEED_STEP`` records, yielding to the event loop between
    them: every span of it reaches Langfuse exactly once, each counted once, and a request acknowledged meanwhile
    is handled too."""
    from relay.pipeline.worker import FEED_STEP

    req = ExportTraceServiceRequest()
    spans = req.resource_spans.add().scope_spans.add().spans
    now = time.time_ns()
    traces = [os.urandom(16) for _ in range(7)]
    for i in range(3 * FEED_STEP + 5):
        spans.add(
            trace_id=traces[i % len(traces)],
            span_id=os.urandom(8),
            name=f"step-{i}",
            start_time_unix_nano=now,
            end_time_unix_nano=now + 1_000,
        )
    small, small_ids = _request()
    fast = {"pipeline": {"idle_timeout": "200ms", "root_grace": "100ms"}}
    async with FakeLangfuse() as lf, running_relay(tmp_path / "data", lf.base_url, fast) as relay:
        await _post(relay, req.SerializeToString(), small)
        await settle(relay)
        got = await lf.wait_for_spans(len(spans) + len(small_ids))
        assert sorted(s.span_id for s in got) == sorted([sp.span_id.hex() for sp in spans] + small_ids)
        assert not lf.duplicate_span_ids()
        assert _decided(relay) == len(spans) + len(small_ids)


def _open_trace() -> tuple[bytes, str, str]:
    """One request with one span of a trace whose root never comes (it closes at ``idle_timeout``): body, trace
    id, span id."""
    req = ExportTraceServiceRequest()
    trace, span_id, now = os.urandom(16), os.urandom(8), time.time_ns()
    req.resource_spans.add().scope_spans.add().spans.add(
        trace_id=trace,
        span_id=span_id,
        parent_span_id=os.urandom(8),
        name="work",
        start_time_unix_nano=now,
        end_time_unix_nano=now + 1_000,
    )
    return req.SerializeToString(), trace.hex(), span_id.hex()


async def test_a_backlog_closes_traces_by_when_they_were_received(tmp_path):
    """Requests left in the inbound spool (here by a relay that stopped) are a backlog: a trace whose idle timeout
    passed, counted from when relay received it, closes as soon as the pipeline has read a request received after
    that — not a whole idle timeout after the pipeline read it. Trace 1 was received more than ``idle_timeout``
    before trace 2: both are read in the first step, trace 1 reaches Langfuse while trace 2 is still open; then
    trace 2 closes on the clock. Each span once."""
    (body1, trace1, span1), (body2, trace2, span2) = _open_trace(), _open_trace()
    hold = {"pipeline": {"idle_timeout": "60s", "root_grace": "60s"}}
    idle = {"pipeline": {"idle_timeout": "1s", "root_grace": "1s"}}
    async with FakeLangfuse() as lf:
        async with running_relay(tmp_path / "data", lf.base_url, hold) as relay:
            await _post(relay, body1, body2, gap=1.2)  # trace 2 received more than trace 1's idle timeout later
        async with running_relay(tmp_path / "data", lf.base_url, idle) as relay:
            got = await lf.wait_for_spans(1)
            assert [(sp.trace_id, sp.span_id) for sp in got] == [(trace1, span1)]
            assert [k for _, k in relay.pipeline.assembler.groups] == ["trace:" + trace2]  # still in its grace
            await settle(relay)
            assert _decided(relay) == 2
    assert sorted((sp.trace_id, sp.span_id) for sp in lf.spans()) == sorted([(trace1, span1), (trace2, span2)])


async def test_the_pipeline_lets_requests_being_acknowledged_go_first(tmp_path, monkeypatch):
    """While a request is being stored (its client waits for the acknowledgement), the pipeline's yield points wait
    for it — at most ``ACK_FIRST_MAX_WAIT``, so a constant stream of requests cannot stop the pipeline. Here the
    spool's append is held: the request is in flight over HTTP, a pipeline yield waits; once the append completes,
    the client gets its 200 and the yield returns."""
    import relay.app

    monkeypatch.setattr(relay.app, "ACK_FIRST_MAX_WAIT", 30.0)  # wait as long as the request is in flight
    body, _, _ = _open_trace()
    release = asyncio.Event()
    async with FakeLangfuse() as lf, running_relay(tmp_path / "data", lf.base_url) as relay:
        append = relay.spool.append

        async def held_append(*args, **kwargs):
            await release.wait()
            return await append(*args, **kwargs)

        monkeypatch.setattr(relay.spool, "append", held_append)
        async with aiohttp.ClientSession() as s:
            url = f"http://127.0.0.1:{relay.http.port}/v1/traces"
            post = asyncio.create_task(s.post(url, data=body, headers=_PROTOBUF))
            while relay.in_flight.count == 0:
                await asyncio.sleep(0.01)
            yielded = asyncio.create_task(relay.pipeline._yield())
            await asyncio.sleep(0.2)
            assert not yielded.done() and not post.done()  # the pipeline waits for the acknowledgement
            release.set()
            async with await post as r:
                assert r.status == 200
            await asyncio.wait_for(yielded, 5)
            assert relay.in_flight.count == 0
        await asyncio.wait_for(relay.pipeline._yield(), 1)  # nothing in flight: no wait


async def test_requests_arriving_close_together_are_read_together(tmp_path, monkeypatch):
    """An idle pipeline waits ``READ_LINGER`` after an append before it reads, so requests sent one after another
    (closer together than the linger) are read in fewer reads than requests (each read, feed and commit has a fixed cost); every span still reaches
    Langfuse once."""
    bodies = [_open_trace() for _ in range(6)]
    async with (
        FakeLangfuse() as lf,
        running_relay(tmp_path / "data", lf.base_url, {"pipeline": {"idle_timeout": "200ms"}}) as relay,
    ):
        await settle(relay)
        read, reads = relay.spool.read_inbound, []

        async def counted(*args, **kwargs):
            items = await read(*args, **kwargs)
            if items:
                reads.append(len(items))
            return items

        monkeypatch.setattr(relay.spool, "read_inbound", counted)
        # 10 ms apart: without the linger each append wakes the pipeline, which reads it alone
        await _post(relay, *(body for body, _, _ in bodies), gap=0.01)
        await settle(relay)
        got = await lf.wait_for_spans(len(bodies))
    assert sum(reads) == len(bodies) and len(reads) < len(bodies), reads
    assert sorted(sp.span_id for sp in got) == sorted(span for _, _, span in bodies)
