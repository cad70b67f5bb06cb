"""relay.exporters.langfuse_encode: Observation model → OTLP for Langfuse (Langfuse's attribute mapping,
https://langfuse.com/integrations/native/opentelemetry)."""

from __future__ import annotations

import json

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span, Status

from relay.exporters import langfuse_encode
from relay.exporters.langfuse_encode import (
    DEFAULT_SERVICE_NAME,
    SCOPE_NAME,
    iso_time,
    normalize_environment,
    valid_session_id,
)
from relay.model import Level, Observation, ObservationType, TraceInfo
from relay.otlp.values import attrs_to_dict

TRACE = "0af7651916cd43dd8448eb211c80319c"
ROOT, GEN, TOOL = "b7ad6b7169203331", "00f067aa0ba902b7", "53995c3f42cd8ad8"
T0 = 1_752_384_000_000_000_000  # 2025-07-13T05:20:00Z in ns


def _trace(**kw) -> TraceInfo:
    base = dict(
        trace_id=TRACE,
        name="fix the build",
        user_id="alice@example.com",
        session_id="sess-1",
        tags=["team:core", "cli", "team:core"],
        metadata={"team.id": "core", "department": "eng"},
        environment="production",
        release="2026.8.1",
        version="1.2.3",
        resource={"service.name": "my-agent", "host.name": "box"},
    )
    base.update(kw)
    return TraceInfo(**base)


def _observations() -> list[Observation]:
    return [
        Observation(
            id=ROOT,
            trace_id=TRACE,
            name="invoke_agent coder",
            type=ObservationType.AGENT,
            start_ns=T0,
            end_ns=T0 + 5_000_000_000,
            input="fix the build",
            output={"answer": "done"},
            attributes={"user.id": "install-hash", "session.id": "sess-1", "custom": 7},
        ),
        Observation(
            id=GEN,
            trace_id=TRACE,
            parent_id=ROOT,
            name="chat claude-sonnet-4-5",
            type=ObservationType.GENERATION,
            start_ns=T0 + 1_000_000_000,
            end_ns=T0 + 3_000_000_000,
            model="claude-sonnet-4-5-20250929",
            model_parameters={"temperature": 0.2, "max_tokens": 1024},
            usage_details={"input": 12, "output": 340, "cache_read_input_tokens": 9000, "input_cache_creation_5m": 512},
            cost_details={"total": 0.0123},
            completion_start_ns=T0 + 1_250_000_000,
            metadata={"request_id": "req_1", "attempt": 2},
            attributes={
                "gen_ai.usage.input_tokens": 9524,
                "gen_ai.usage.output_tokens": 340,
                "gen_ai.usage.cost": 0.5,
                "gen_ai.request.model": "claude-sonnet-4-5",
                "langfuse.observation.type": "span",
                "langfuse.user.id": "spoofed",
            },
            events=[("gen_ai.choice", T0 + 2_000_000_000, {"index": 0})],
        ),
        Observation(
            id=TOOL,
            trace_id=TRACE,
            parent_id=ROOT,
            name="execute_tool Bash",
            type=ObservationType.TOOL,
            start_ns=T0 + 3_000_000_000,
            end_ns=T0 + 4_000_000_000,
            level=Level.ERROR,
            status_message="exit code 1",
            attributes={"gen_ai.tool.name": "Bash"},
        ),
    ]


def encode_spans(trace: TraceInfo, observations: list[Observation]) -> ResourceSpans:
    return ResourceSpans.FromString(langfuse_encode.encode_spans(trace, observations))


def encode_request(items: list[tuple[TraceInfo, list[Observation]]]) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest.FromString(langfuse_encode.encode_request(items))


def _spans(rs) -> list[tuple[Span, dict]]:
    return [(s, attrs_to_dict(s.attributes)) for ss in rs.scope_spans for s in ss.spans]


def test_resource_scope_and_ids():
    rs = encode_spans(_trace(), _observations())
    res = attrs_to_dict(rs.resource.attributes)
    assert res == {"service.name": "my-agent", "host.name": "box"}
    assert [ss.scope.name for ss in rs.scope_spans] == [SCOPE_NAME]
    assert rs.scope_spans[0].scope.version
    spans = _spans(rs)
    assert [s.span_id.hex() for s, _ in spans] == [ROOT, GEN, TOOL]
    assert {s.trace_id.hex() for s, _ in spans} == {TRACE}
    assert [s.parent_span_id.hex() for s, _ in spans] == ["", ROOT, ROOT]
    assert all(s.kind == Span.SpanKind.SPAN_KIND_INTERNAL for s, _ in spans)
    assert spans[1][0].start_time_unix_nano == T0 + 1_000_000_000
    assert spans[1][0].end_time_unix_nano == T0 + 3_000_000_000
    assert spans[1][0].events[0].name == "gen_ai.choice"
    assert attrs_to_dict(spans[1][0].events[0].attributes) == {"index": 0}


def test_service_name_added_when_missing():
    rs = encode_spans(_trace(resource={"host.name": "box"}), _observations()[:1])
    assert attrs_to_dict(rs.resource.attributes) == {"host.name": "box", "service.name": DEFAULT_SERVICE_NAME}


def test_trace_level_fields_on_every_span():
    for _, a in _spans(encode_spans(_trace(), _observations())):
        assert a["langfuse.trace.name"] == "fix the build"
        assert a["langfuse.user.id"] == "alice@example.com"
        assert a["langfuse.session.id"] == "sess-1"
        assert a["langfuse.trace.tags"] == ["team:core", "cli"]
        assert a["langfuse.trace.metadata.team.id"] == "core"
        assert a["langfuse.trace.metadata.department"] == "eng"
        assert a["langfuse.environment"] == "production"
        assert a["langfuse.release"] == "2026.8.1"
        assert a["langfuse.version"] == "1.2.3"


def test_unset_trace_fields_are_omitted():
    trace = TraceInfo(trace_id=TRACE)
    ((_, a),) = _spans(encode_spans(trace, _observations()[2:]))
    assert not any(
        k.startswith(
            (
                "langfuse.trace.",
                "langfuse.user",
                "langfuse.session",
                "langfuse.environment",
                "langfuse.release",
                "langfuse.version",
            )
        )
        for k in a
    )
    assert a["langfuse.observation.type"] == "tool"


def test_generation_attributes():
    _, a = _spans(encode_spans(_trace(), _observations()))[1]
    assert a["langfuse.observation.type"] == "generation"  # wins over the extra attribute "span"
    assert a["langfuse.user.id"] == "alice@example.com"  # wins over a spoofed extra attribute
    assert a["langfuse.observation.level"] == "DEFAULT"
    assert a["langfuse.observation.model.name"] == "claude-sonnet-4-5-20250929"
    assert a["gen_ai.request.model"] == "claude-sonnet-4-5"  # the agent's own value is kept
    assert a["gen_ai.response.model"] == "claude-sonnet-4-5-20250929"
    assert json.loads(a["langfuse.observation.model.parameters"]) == {"temperature": 0.2, "max_tokens": 1024}
    usage = a["langfuse.observation.usage_details"]
    assert isinstance(usage, str)
    assert json.loads(usage) == {
        "input": 12,
        "output": 340,
        "cache_read_input_tokens": 9000,
        "input_cache_creation_5m": 512,
    }
    assert all(isinstance(v, int) for v in json.loads(usage).values())
    cost = a["langfuse.observation.cost_details"]
    assert isinstance(cost, str) and json.loads(cost) == {"total": 0.0123}
    assert a["langfuse.observation.completion_start_time"] == "2025-07-13T05:20:01.250000Z"
    assert a["langfuse.observation.metadata.request_id"] == "req_1"
    assert a["langfuse.observation.metadata.attempt"] == "2"
    # explicit usage/cost → no generic gen_ai.usage.* for Langfuse to re-interpret or add up
    assert not [k for k in a if k.startswith("gen_ai.usage.")]


def test_usage_attributes_kept_without_usage_details():
    obs = Observation(
        id=GEN,
        trace_id=TRACE,
        name="chat",
        type=ObservationType.GENERATION,
        start_ns=T0,
        end_ns=T0,
        attributes={"gen_ai.usage.input_tokens": 5, "gen_ai.usage.cost": 0.1},
    )
    ((_, a),) = _spans(encode_spans(_trace(), [obs]))
    assert a["gen_ai.usage.input_tokens"] == 5 and a["gen_ai.usage.cost"] == 0.1
    assert "langfuse.observation.usage_details" not in a and "langfuse.observation.cost_details" not in a


def test_input_output_encoding():
    root, a = _spans(encode_spans(_trace(), _observations()))[0]
    assert a["langfuse.observation.input"] == "fix the build"  # strings as-is
    assert json.loads(a["langfuse.observation.output"]) == {"answer": "done"}
    assert a["custom"] == 7 and a["user.id"] == "install-hash"  # extra attributes pass through


def test_error_status():
    spans = _spans(encode_spans(_trace(), _observations()))
    tool, a = spans[2]
    assert tool.status.code == Status.StatusCode.STATUS_CODE_ERROR
    assert tool.status.message == "exit code 1"
    assert a["langfuse.observation.level"] == "ERROR"
    assert a["langfuse.observation.status_message"] == "exit code 1"
    assert spans[0][0].status.code == Status.StatusCode.STATUS_CODE_UNSET
    flagged = Observation(
        id=TOOL, trace_id=TRACE, name="t", type=ObservationType.TOOL, start_ns=T0, end_ns=T0, status_error=True
    )
    ((s, _),) = _spans(encode_spans(_trace(), [flagged]))
    assert s.status.code == Status.StatusCode.STATUS_CODE_ERROR


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("production", "production"),
        ("Production", "production"),
        ("Prod EU", "prod-eu"),
        ("langfuse-staging", "staging"),
        ("LANGFUSE_dev", "dev"),
        ("langfuse", None),
        ("langfuseprod", None),
        ("dev_1-a", "dev_1-a"),
        ("!!!", None),
        ("", None),
        (None, None),
        ("x" * 50, "x" * 40),
    ],
)
def test_normalize_environment(raw, expected):
    assert normalize_environment(raw) == expected


def test_environment_and_session_rules_applied():
    trace = _trace(environment="Langfuse-Prod", session_id="s" * 200)
    ((_, a),) = _spans(encode_spans(trace, _observations()[2:]))
    assert a["langfuse.environment"] == "prod"
    assert "langfuse.session.id" not in a
    trace = _trace(environment="langfuse", session_id="sé")
    ((_, a),) = _spans(encode_spans(trace, _observations()[2:]))
    assert "langfuse.environment" not in a and "langfuse.session.id" not in a
    assert valid_session_id("s" * 199) == "s" * 199


def test_iso_time():
    assert iso_time(T0) == "2025-07-13T05:20:00.000000Z"
    assert iso_time(T0 + 123_456_789) == "2025-07-13T05:20:00.123456Z"


def test_invalid_ids_rejected():
    bad = Observation(id="xyz", trace_id=TRACE, name="n", type=ObservationType.SPAN, start_ns=T0, end_ns=T0)
    with pytest.raises(ValueError):
        encode_spans(_trace(), [bad])
    other = Observation(id=ROOT, trace_id="1" * 32, name="n", type=ObservationType.SPAN, start_ns=T0, end_ns=T0)
    with pytest.raises(ValueError):
        encode_spans(_trace(), [other])


def test_request_json_round_trip_and_determinism():
    other = _trace(trace_id="1" * 32, name="second")
    obs2 = Observation(id="2" * 16, trace_id="1" * 32, name="s", type=ObservationType.SPAN, start_ns=T0, end_ns=T0)
    req = encode_request([(_trace(), _observations()), (other, [obs2]), (_trace(name="empty"), [])])
    assert len(req.resource_spans) == 2
    # deterministic: same input → identical bytes
    again = encode_request([(_trace(), _observations()), (other, [obs2])])
    assert req.SerializeToString(deterministic=True) == again.SerializeToString(deterministic=True)
    # OTLP/JSON round trip (Langfuse accepts protobuf and JSON)
    text = json_format.MessageToJson(req)
    back = json_format.Parse(text, ExportTraceServiceRequest())
    assert back == req
    # protobuf binary round trip
    assert ExportTraceServiceRequest.FromString(req.SerializeToString()) == req
    gen = back.resource_spans[0].scope_spans[0].spans[1]
    assert gen.span_id.hex() == GEN and gen.trace_id.hex() == TRACE
    a = attrs_to_dict(gen.attributes)
    assert json.loads(a["langfuse.observation.usage_details"])["cache_read_input_tokens"] == 9000
    # metadata keys sorted
    keys = [kv.key for kv in gen.attributes]
    meta = [k for k in keys if k.startswith("langfuse.trace.metadata.")]
    assert meta == sorted(meta)
