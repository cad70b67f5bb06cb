"""Claude Code's usage to the last nano-dollar: every capture (2.1.329 and 2.1.332), as sent and as Claude Code sends it
with ``OTEL_METRICS_INCLUDE_SESSION_ID=false`` (``session.id`` removed from every metric point, event and span,
https://code.claude.com/docs/en/monitoring-usage, and observed: spans keep ``gen_ai.conversation.id``), replayed into
a running relay.

Truth is decoded from the capture files without relay's code (``tests/support/expected.py``): per call, the
``api_request`` event's ``cost_usd`` (the double Claude Code sent) and its four token counts. The ledger, ``relay
report daily --format json`` and the Langfuse view must all equal it — cost per call and per session to 1e-9 USD,
tokens by type exactly — with metric-derived estimates superseded (never counted on top)."""

from __future__ import annotations

import gzip
import json
import math
from dataclasses import replace
from datetime import UTC, datetime

import aiohttp
import grpc
import pytest
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.fakes.langfuse import FakeLangfuse
from tests.support.expected import by_name, events
from tests.support.fixtures import SCENARIOS, SCENARIOS_2_1_332, CapturedRequest, load_scenario
from tests.support.inproc import grpc_capture, post_capture, running_relay, settle
from tests.support.report import report_json

ALL = [*SCENARIOS, *SCENARIOS_2_1_332]
MESSAGES = {
    "logs": ExportLogsServiceRequest,
    "metrics": ExportMetricsServiceRequest,
    "traces": ExportTraceServiceRequest,
}
TENANT_HEADERS = {"X-Relay-Tenant": "default"}


def _strip(attrs) -> None:
    keep = [kv for kv in attrs if kv.key != "session.id"]
    del attrs[:]
    attrs.extend(keep)


def without_session_ids(req: CapturedRequest) -> CapturedRequest:
    """The request as Claude Code sends it with ``OTEL_METRICS_INCLUDE_SESSION_ID=false``: no ``session.id`` on the
    resource, metric points, log records or spans. Re-encoded as OTLP/HTTP protobuf (or JSON for JSON captures)."""
    body = gzip.decompress(req.body) if req.content_encoding == "gzip" else req.body
    if req.content_type == "application/json":

        def walk(x):
            if isinstance(x, dict):
                return {
                    k: (
                        [a for a in walk(v) if not (isinstance(a, dict) and a.get("key") == "session.id")]
                        if k == "attributes"
                        else walk(v)
                    )
                    for k, v in x.items()
                }
            if isinstance(x, list):
                return [walk(v) for v in x]
            return x

        return replace(req, body=json.dumps(walk(json.loads(body))).encode(), content_encoding=None)
    msg: Message = MESSAGES[req.signal].FromString(body)
    for rs in getattr(msg, f"resource_{'spans' if req.signal == 'traces' else req.signal}"):
        _strip(rs.resource.attributes)
        if req.signal == "logs":
            for sl in rs.scope_logs:
                for r in sl.log_records:
                    _strip(r.attributes)
        elif req.signal == "traces":
            for ss in rs.scope_spans:
                for s in ss.spans:
                    _strip(s.attributes)
        else:
            for sm in rs.scope_metrics:
                for m in sm.metrics:
                    kind = m.WhichOneof("data")
                    for p in getattr(m, kind).data_points:
                        _strip(p.attributes)
    return replace(req, body=msg.SerializeToString(), content_encoding=None)


async def send(relay, scenario: str, strip: bool) -> None:
    async with aiohttp.ClientSession() as http, grpc.aio.insecure_channel(f"127.0.0.1:{relay.grpc.port}") as ch:
        for req in load_scenario(scenario):
            if strip:
                req = without_session_ids(req)
            if req.transport == "grpc":
                await grpc_capture(ch, req, tuple((k.lower(), v) for k, v in TENANT_HEADERS.items()))
            else:
                assert await post_capture(http, f"http://127.0.0.1:{relay.http.port}", req, TENANT_HEADERS) == 200


@pytest.mark.parametrize("strip", [False, True], ids=["with-session-ids", "without-session-ids"])
@pytest.mark.parametrize("scenario", ALL)
async def test_ledger_report_and_langfuse_equal_the_capture_to_the_nano_dollar(tmp_path, scenario, strip):
    evs = events(scenario)
    requests = {e.attrs["request_id"]: e.attrs for e in by_name(evs, "api_request")}
    errors = by_name(evs, "api_error")
    truth_usd = math.fsum(float(a["cost_usd"]) for a in requests.values())
    tokens = {
        k: sum(int(a[k]) for a in requests.values())
        for k in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens")
    }
    data = tmp_path / "data"
    async with FakeLangfuse() as lf:
        async with running_relay(data, lf.base_url) as relay:
            await send(relay, scenario, strip)
            await settle(relay)
            records = [r async for b in relay.ledger.scan(0, 2**63 - 1) for r in b]
        view = lf.view()

    llm = [r for r in records if r.kind == "llm"]
    ok = [r for r in llm if r.success]
    # one record per call, none derived from metrics on top (with or without session ids)
    assert {r.source for r in llm} <= {"claude_code.event", "claude_code.span"}, {r.source for r in llm}
    assert sorted(r.key for r in ok) == sorted(f"llm:{rid}" for rid in requests)
    for r in ok:  # per call, to 1e-9 USD
        assert abs(r.cost_nanos - float(requests[r.key.removeprefix("llm:")]["cost_usd"]) * 1e9) <= 1.0
        assert r.cost_source == "reported"
    assert len([r for r in llm if not r.success]) == len(
        {(a.attrs.get("request_id"), a.attrs.get("event.sequence")) for a in errors}
    )
    # per session (a capture is one session; without ids the records carry the conversation id or none)
    per_session: dict = {}
    for r in ok:
        per_session[r.session_id] = per_session.get(r.session_id, 0) + r.cost_nanos
    assert len(per_session) == (1 if ok else 0)
    assert abs(sum(per_session.values()) - truth_usd * 1e9) <= 1.0
    assert {k: sum(getattr(r, k) for r in ok) for k in tokens} == tokens

    # the Langfuse view: one GENERATION per call with the same cost and tokens
    gens = [g for g in view.generations() if g.level != "ERROR"]
    assert len(gens) == len(requests) and view.duplicate_observation_ids == {}
    assert abs(math.fsum(g.total_cost for g in gens) - truth_usd) <= 1e-9
    for g in gens:
        a = requests[g.metadata["request_id"]]
        assert abs(g.total_cost - float(a["cost_usd"])) <= 1e-9 and not g.cost_inferred
        u = g.usage_details
        assert (
            u["input"],
            u["output"],
            u["cache_read_input_tokens"],
            u["input_cache_creation_5m"] + u["input_cache_creation_1h"],
        ) == (
            int(a["input_tokens"]),
            int(a["output_tokens"]),
            int(a["cache_read_tokens"]),
            int(a["cache_creation_tokens"]),
        )

    # relay report daily --format json over the same ledger
    days = {datetime.fromtimestamp(r.time_ns / 1e9, UTC).date().isoformat() for r in llm}
    assert len(days) == 1
    rep = report_json(data, days.pop())["current"]
    assert rep["api_calls"] == len(llm) and rep["api_errors"] == len(llm) - len(ok)
    assert rep["metric_estimates"] == 0
    assert abs(rep["cost_nanos"] - truth_usd * 1e9) <= 1.0 and abs(rep["cost_usd"] - truth_usd) <= 1e-9
    assert {k: rep[k] for k in tokens} == tokens
    # the cost source stays visible: all of it reported by Claude Code
    assert rep["cost_reported_nanos"] == rep["cost_nanos"] and rep["calls_cost_computed"] == 0
