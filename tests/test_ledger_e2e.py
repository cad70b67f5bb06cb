"""End to end: Claude Code's captured exports replayed into a running relay; the ledger's rows, sums and change feed
are checked against values decoded independently from the capture files (``tests/support/expected.py`` for events,
a protobuf decoder below for metrics and spans) and prices written out by hand."""

from __future__ import annotations

import asyncio
import gzip
import math
from collections import defaultdict
from contextlib import asynccontextmanager
from dataclasses import replace

import aiohttp
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from relay.model import usd_to_nanos
from tests.support.expected import by_name, events
from tests.support.fixtures import load_scenario
from tests.support.inproc import post_capture, replay, running_relay, settle

OVERRIDES = {"tenants": [{"name": "default", "labels": {"project": "web", "department": "finance"}}]}
#: Claude Code 2.1.329's default model, USD per 1M tokens (relay/usage/prices.yaml): in, out, cache read, 5m write
OPUS_5_5 = (4, 20, 0.2, 5)


class Feed:
    """The rules engine's view: applies every LedgerChange to a dict, as a consumer would."""

    def __init__(self):
        self.state: dict[str, object] = {}
        self.changes = []

    def __call__(self, changes):
        self.changes.extend(changes)
        for c in changes:
            if c.old is not None:
                assert self.state.pop(c.old.key) == c.old  # the old version is exactly what was fed before
            if c.new is not None:
                self.state[c.new.key] = c.new


async def rows(relay):
    return [r async for b in relay.ledger.scan(0, 2**63 - 1, "default") for r in b]


def _body(req) -> bytes:
    return gzip.decompress(req.body) if req.content_encoding == "gzip" else req.body


def capture_metrics(scenario: str) -> dict[str, dict[str | None, float]]:
    """Sum of every DELTA point by metric name and ``type`` attribute, decoded with the bare protobuf classes."""
    out: dict[str, dict[str | None, float]] = defaultdict(lambda: defaultdict(float))
    for req in load_scenario(scenario):
        if req.signal != "metrics":
            continue
        msg = ExportMetricsServiceRequest.FromString(_body(req))
        for rm in msg.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    assert m.sum.aggregation_temporality == 1
                    for p in m.sum.data_points:
                        typ = next((a.value.string_value for a in p.attributes if a.key == "type"), None)
                        out[m.name][typ] += p.as_double
    return out


def llm_spans(scenario: str) -> list[dict]:
    """Attributes of the ``claude_code.llm_request`` spans of a capture."""
    out = []
    for req in load_scenario(scenario):
        if req.signal == "traces":
            msg = ExportTraceServiceRequest.FromString(_body(req))
            for rs in msg.resource_spans:
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        if s.name == "claude_code.llm_request":
                            out.append(
                                {
                                    kv.key: getattr(kv.value, kv.value.WhichOneof("value") or "string_value")
                                    for kv in s.attributes
                                }
                            )
    return out


@asynccontextmanager
async def relay_with_feed(tmp_path):
    """A running relay (tenant labels configured) whose ledger changes go to a ``Feed``."""
    feed = Feed()
    async with running_relay(tmp_path / "data", None, OVERRIDES) as relay:
        relay.pipeline.on_ledger_changes = feed
        yield relay, feed


async def post(relay, scenario: str, signals: set[str]) -> None:
    async with aiohttp.ClientSession() as s:
        for req in load_scenario(scenario):
            if req.signal in signals:
                assert await post_capture(s, f"http://127.0.0.1:{relay.http.port}", req) == 200


@pytest.mark.parametrize(
    "scenario",
    [
        "protobuf-tools",
        "json-tools",
        "grpc-tools",
        "protobuf-subagent",
        "protobuf-text-nobeta",
        "protobuf-err529",
        "protobuf-receiver-503",
    ],
)
async def test_each_call_is_counted_once_with_events_spans_metrics_and_replays(tmp_path, scenario):
    evs = events(scenario)
    requests = {e.attrs["request_id"]: e.attrs for e in by_name(evs, "api_request")}
    results = {e.attrs["tool_use_id"]: e.attrs for e in by_name(evs, "tool_result")}
    decisions = {e.attrs["tool_use_id"]: e.attrs for e in by_name(evs, "tool_decision")}
    async with relay_with_feed(tmp_path) as (relay, feed):
        await replay(relay, scenario)
        await settle(relay)
        first = await rows(relay)
        # the whole capture again, past the receiver's request-hash dedup (a re-send after its 1 h window)
        await relay.spool.db.run(lambda c: c.execute("DELETE FROM request_keys"))
        fed = len(feed.changes)
        await replay(relay, scenario)
        await settle(relay)
        assert await rows(relay) == first
        assert len(feed.changes) == fed  # the second pass changed nothing
        new_records = relay.telemetry.sample("relay_ledger_records_total", {"tenant": "default", "kind": "llm"})

    ok = [r for r in first if r.kind == "llm" and r.success]
    failed = [r for r in first if r.kind == "llm" and not r.success]
    tools = [r for r in first if r.kind == "tool"]
    assert sorted(r.key for r in ok) == sorted(f"llm:{rid}" for rid in requests)
    for r in ok:
        a = requests[r.key.removeprefix("llm:")]
        assert (r.cost_nanos, r.cost_source, r.source) == (usd_to_nanos(a["cost_usd"]), "reported", "claude_code.event")
        assert (
            r.input_tokens,
            r.output_tokens,
            r.cache_read_tokens,
            r.cache_creation_5m_tokens,
            r.cache_creation_1h_tokens,
            r.model,
        ) == (
            a["input_tokens"],
            a["output_tokens"],
            a["cache_read_tokens"],
            a["cache_creation_5m_tokens"],
            a["cache_creation_1h_tokens"],
            a["model"],
        )
        assert (r.duration_ms, r.ttft_ms, r.session_id) == (a["duration_ms"], a["ttft_ms"], a["session.id"])
    assert abs(sum(r.cost_nanos for r in first) - math.fsum(a["cost_usd"] for a in requests.values()) * 1e9) <= 1
    assert len(failed) == len(by_name(evs, "api_error")) and all(r.cost_nanos == 0 for r in failed)
    assert sorted(r.key for r in tools) == sorted(f"tool:{t}" for t in results)
    for r in tools:
        res, dec = results[r.key.removeprefix("tool:")], decisions[r.key.removeprefix("tool:")]
        assert (r.tool_name, r.success) == (res["tool_name"], res["success"] == "true")
        assert (r.decision, r.decision_source) == (dec["decision"], dec["source"])
    # tenant labels on every record; the tenant's department wins over the sender's OTEL_RESOURCE_ATTRIBUTES
    assert all(r.labels["project"] == "web" and r.labels["department"] == "finance" for r in first)
    if scenario == "protobuf-tools":
        assert {r.labels.get("team.id") for r in first} == {"platform"}
    # the change feed, applied in order, is the ledger; metric estimates made before the events closed were retracted
    assert sorted(feed.state.values(), key=lambda r: r.key) == sorted(first, key=lambda r: r.key)
    retracted = [c for c in feed.changes if c.new is None]
    assert all(c.old.source == "claude_code.metric" for c in retracted)
    assert new_records == len(ok) + len(failed) + len(retracted)


async def test_metrics_only_sender_is_counted_from_metrics_until_its_events_arrive(tmp_path):
    scenario = "protobuf-tools"
    evs = events(scenario)
    requests = [e.attrs for e in by_name(evs, "api_request")]
    points = capture_metrics(scenario)
    async with relay_with_feed(tmp_path) as (relay, feed):
        await post(relay, scenario, {"metrics"})
        await settle(relay)
        estimated = await rows(relay)
        lines = await relay.ledger.sum_metric("claude_code.lines_of_code.count", 0, 2**63 - 1, by=("type", "team.id"))
        commits = await relay.ledger.sum_metric("claude_code.commit.count", 0, 2**63 - 1, by=("user",))
        await post(relay, scenario, {"logs", "traces"})
        await settle(relay)
        final = await rows(relay)

    # metrics only: one record per export, tokens and cost equal to the metric points' sums
    assert estimated and {(r.source, r.cost_source, r.kind) for r in estimated} == {
        ("claude_code.metric", "reported", "llm")
    }
    tok = points["claude_code.token.usage"]
    assert sum(r.input_tokens for r in estimated) == tok["input"] == sum(a["input_tokens"] for a in requests)
    assert sum(r.output_tokens for r in estimated) == tok["output"]
    assert sum(r.cache_read_tokens for r in estimated) == tok["cacheRead"]
    assert sum(r.cache_creation_tokens for r in estimated) == tok["cacheCreation"]
    reported = math.fsum(float(a["cost_usd"]) for a in requests) * 1e9
    assert sum(r.cost_nanos for r in estimated) == pytest.approx(
        points["claude_code.cost.usage"][None] * 1e9, abs=len(estimated)
    )
    assert sum(r.cost_nanos for r in estimated) == pytest.approx(reported, abs=len(estimated))  # metrics ≙ events
    assert {r.session_id for r in estimated} == {requests[0]["session.id"]}
    assert {s.group["type"]: s.value for s in lines} == {
        t: v for t, v in points["claude_code.lines_of_code.count"].items()
    }
    assert {s.group["team.id"] for s in lines} == {"platform"}
    assert [s.value for s in commits] == [points["claude_code.commit.count"][None]] == [1.0]

    # the events arrive: the estimates are retracted, each call is counted once from its api_request
    assert {r.source for r in final} == {"claude_code.event"}
    assert sum(r.cost_nanos for r in final) == reported
    retracted = [c.old for c in feed.changes if c.new is None]
    assert sorted(r.key for r in retracted) == sorted(r.key for r in estimated)
    assert sorted(feed.state.values(), key=lambda r: r.key) == sorted(final, key=lambda r: r.key)


async def test_spans_first_are_priced_then_upgraded_by_their_events(tmp_path):
    scenario = "protobuf-tools"
    requests = {e.attrs["request_id"]: e.attrs for e in by_name(events(scenario), "api_request")}
    spans = {a["request_id"]: a for a in llm_spans(scenario)}
    assert set(spans) == set(requests)
    async with relay_with_feed(tmp_path) as (relay, feed):
        await post(relay, scenario, {"traces"})
        await settle(relay)
        priced = {r.key: r for r in await rows(relay) if r.kind == "llm"}
        await post(relay, scenario, {"logs"})
        await settle(relay)
        final = {r.key: r for r in await rows(relay) if r.kind == "llm"}

    p_in, p_out, p_read, p_write = OPUS_5_5
    assert set(priced) == {f"llm:{rid}" for rid in spans}
    for rid, a in spans.items():
        r = priced[f"llm:{rid}"]
        by_hand = round(
            (
                a["input_tokens"] * p_in
                + a["output_tokens"] * p_out
                + a["cache_read_tokens"] * p_read
                + a["cache_creation_tokens"] * p_write
            )
            * 1000
        )
        assert (r.source, r.cost_source, r.cost_nanos) == ("claude_code.span", "computed", by_hand)
        assert abs(by_hand - requests[rid]["cost_usd"] * 1e9) <= 1  # relay's table agrees with Claude Code's
    assert set(final) == set(priced)  # the same calls, now with the reported cost
    for key, r in final.items():
        assert (r.cost_source, r.cost_nanos) == (
            "reported",
            usd_to_nanos(requests[key.removeprefix("llm:")]["cost_usd"]),
        )
    upgrades = [c for c in feed.changes if c.old is not None and c.new is not None and c.new.kind == "llm"]
    assert sorted(c.new.key for c in upgrades) == sorted(final)
    assert all(c.old == priced[c.old.key] for c in upgrades)
    # tool records from spans only gain the identity their events add (the prompt id), nothing else changes
    for c in feed.changes:
        if c.old is not None and c.new is not None and c.new.kind == "tool":
            assert (c.old.prompt_id, c.new.prompt_id is not None) == (None, True)
            assert replace(c.new, prompt_id=None) == c.old


async def test_other_agents_genai_spans_get_identity_and_tenant_labels_and_a_computed_cost(tmp_path):
    """An OTel-SDK agent (GenAI semconv, no cost attribute) through relay: one llm and one tool record, priced with
    the table, labelled with its resource's team and the tenant's labels."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    def run(port: int) -> None:
        tp = TracerProvider(
            resource=Resource.create({"service.name": "my-agent", "team.id": "search", "department": "research"})
        )
        tp.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces")))
        tracer = tp.get_tracer("my-agent")
        with tracer.start_as_current_span(
            "invoke_agent",
            attributes={"gen_ai.operation.name": "invoke_agent", "user.id": "alice", "session.id": "sess-7"},
        ):
            with tracer.start_as_current_span(
                "chat",
                attributes={
                    "gen_ai.operation.name": "chat",
                    "gen_ai.request.model": "gpt-4o-2024-08-06",
                    "gen_ai.usage.input_tokens": 1200,
                    "gen_ai.usage.output_tokens": 300,
                    "gen_ai.usage.cache_read.input_tokens": 1000,
                },
            ):
                pass
            with tracer.start_as_current_span(
                "execute_tool", attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "grep"}
            ):
                pass
        tp.shutdown()

    async with relay_with_feed(tmp_path) as (relay, feed):
        await asyncio.to_thread(run, relay.http.port)
        await settle(relay)
        records = await rows(relay)
    [llm] = [r for r in records if r.kind == "llm"]
    [tool] = [r for r in records if r.kind == "tool"]
    # gpt-4o by hand: (1200 − 1000 cached) × $2.50 + 1000 × $1.25 + 300 × $10 per 1M tokens
    assert (llm.input_tokens, llm.cache_read_tokens, llm.output_tokens) == (200, 1000, 300)
    assert (llm.cost_source, llm.cost_nanos, llm.source) == ("computed", (500 + 1250 + 3000) * 1000, "otel.genai")
    assert (tool.tool_name, tool.cost_source) == ("grep", "none")
    for r in (llm, tool):
        assert (r.user, r.session_id) == ("alice", "sess-7")
        assert {k: r.labels.get(k) for k in ("team.id", "department", "project")} == {
            "team.id": "search",
            "department": "finance",
            "project": "web",
        }  # the tenant's department wins
        assert not [k for k in r.labels if k.startswith("relay.")]  # Langfuse metadata copies are not ledger labels
    assert len(feed.changes) == 2
