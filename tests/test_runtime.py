"""``relay.runtime``: the event-loop lag and GC pause measurements, the full-collection schedule, and the memory
limiter's decision."""

from __future__ import annotations

import asyncio
import gc
import sys
import time

from prometheus_client import CollectorRegistry

from relay.component import deadline_in
from relay.otlp.values import attrs_to_dict
from relay.pipeline.records import iter_spans
from relay.runtime import (
    FULL_GC_INTERVAL,
    FULL_GC_MAX_INTERVAL,
    GEN0_THRESHOLD,
    GEN1_THRESHOLD,
    GEN2_THRESHOLD_OFF,
    RuntimeMonitor,
    rss_bytes,
)


async def test_a_blocked_loop_and_a_collection_are_measured():
    reg = CollectorRegistry()
    mon = RuntimeMonitor(reg, tune_process=False)
    await mon.start()
    try:
        await asyncio.sleep(0.03)
        time.sleep(0.06)  # the loop is blocked for 60 ms: the next timer runs that late
        await asyncio.sleep(0.03)
        gc.collect()
    finally:
        await mon.shutdown(deadline_in(1))
    assert mon.lag_max >= 0.04
    assert reg.get_sample_value("relay_event_loop_lag_max_seconds") == mon.lag_max
    assert reg.get_sample_value("relay_event_loop_lag_seconds_count") >= 2
    assert mon.gc_pause_max > 0
    assert reg.get_sample_value("relay_gc_pause_seconds_count", {"generation": "2"}) >= 1
    assert gc.callbacks.count(mon._on_gc) == 0  # removed at shutdown


def test_memory_limiter_refuses_only_over_the_soft_limit_while_relay_holds_data():
    rss = rss_bytes()
    assert rss > 0
    busy = [True]
    low = RuntimeMonitor(CollectorRegistry(), memory_limit=rss // 2, tune_process=False, busy=lambda: busy[0])
    assert low.check() is True and low.over_limit
    busy[0] = False  # nothing held any more: the retained heap is reused, accept again
    assert low.check() is False
    high = RuntimeMonitor(CollectorRegistry(), memory_limit=rss * 4, tune_process=False)
    assert high.check() is False
    off = RuntimeMonitor(CollectorRegistry(), memory_limit=0, tune_process=False)
    assert off.check() is False


def test_span_attributes_are_decoded_lazily_and_once():
    from google.protobuf.message import Message
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    req = ExportTraceServiceRequest()
    span = req.resource_spans.add().scope_spans.add().spans.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8)
    span.attributes.extend(
        [KeyValue(key="a", value=AnyValue(int_value=1)), KeyValue(key="b", value=AnyValue(string_value="x"))]
    )
    (view,) = iter_spans(req)
    assert "attrs" not in view.__dict__  # an open trace holds the protobuf, not a dict
    # …as the span's own bytes: no reference into the request's message, whose arena holds every span of it
    assert view.raw == span.SerializeToString()
    assert not any(isinstance(v, Message) for v in vars(view).values())
    assert view.attrs == attrs_to_dict(span.attributes) == {"a": 1, "b": "x"}
    view.attrs["c"] = 2  # mappers may edit the dict: it is the same one on every read
    assert view.attrs == {"a": 1, "b": "x", "c": 2}


async def test_full_collections_run_when_relay_is_idle_or_overdue_not_on_allocation_counts():
    saved, switch = gc.get_threshold(), sys.getswitchinterval()
    gc.set_threshold(700, 10, 10)  # CPython's defaults, whatever ran before
    busy = [True]
    mon = RuntimeMonitor(CollectorRegistry(), tune_process=True, busy=lambda: busy[0])
    await mon.start()
    try:
        # young collections small and frequent enough to stay short; allocations never trigger a full collection
        assert gc.get_threshold() == (GEN0_THRESHOLD, GEN1_THRESHOLD, GEN2_THRESHOLD_OFF)
        t0 = mon._full_gc_at
        assert not mon.full_collection_due(t0 + FULL_GC_INTERVAL)  # busy: it waits…
        assert mon.full_collection_due(t0 + FULL_GC_MAX_INTERVAL)  # …but not for ever
        busy[0] = False
        assert not mon.full_collection_due(t0 + FULL_GC_INTERVAL - 1)
        assert mon.full_collection_due(t0 + FULL_GC_INTERVAL)

        class Node:
            pass

        a, b = Node(), Node()
        a.other, b.other = b, a  # a cycle: only a full (or young) collection frees it
        del a, b
        before = gc.get_stats()[2]["collections"]
        assert mon.full_collection() >= 2
        assert gc.get_stats()[2]["collections"] == before + 1
        assert not mon.full_collection_due(time.monotonic())
    finally:
        await mon.shutdown(deadline_in(1))
        assert gc.get_threshold() == (700, 10, 10)  # as before relay started: automatic full collections again
        gc.unfreeze()
        gc.set_threshold(*saved)
        sys.setswitchinterval(switch)


async def test_the_loop_lag_is_sampled_finely_only_while_relay_holds_data():
    """Idle, the lag watcher wakes every ``LAG_IDLE_INTERVAL`` (an idle daemon is not woken 100 times a second);
    holding data, every ``LAG_INTERVAL``, so a short pause is measured."""
    from relay.runtime import LAG_IDLE_INTERVAL, LAG_INTERVAL

    busy = [False]
    reg = CollectorRegistry()
    mon = RuntimeMonitor(reg, tune_process=False, busy=lambda: busy[0])
    await mon.start()
    try:
        await asyncio.sleep(4 * LAG_IDLE_INTERVAL + 0.05)
        idle = reg.get_sample_value("relay_event_loop_lag_seconds_count")
        assert 3 <= idle <= 5
        busy[0] = True
        await asyncio.sleep(LAG_IDLE_INTERVAL)  # the idle wait ends, then fine sampling
        before = reg.get_sample_value("relay_event_loop_lag_seconds_count")
        await asyncio.sleep(20 * LAG_INTERVAL)
        assert reg.get_sample_value("relay_event_loop_lag_seconds_count") - before >= 10
        time.sleep(0.03)  # a 30 ms pause while busy
        await asyncio.sleep(2 * LAG_INTERVAL)
    finally:
        await mon.shutdown(deadline_in(1))
    assert mon.lag_max >= 0.02
