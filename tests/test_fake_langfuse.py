"""Tests of the fake Langfuse server and of the mapping oracle (``tests/fakes/langfuse*.py``).

Wire tests talk real HTTP to the fake; expectations come from Langfuse's OTLP endpoint
(https://langfuse.com/integrations/native/opentelemetry; langfuse/langfuse
``web/src/pages/api/public/otel/v1/traces/index.ts``) and public API (https://api.reference.langfuse.com).
Oracle tests follow Langfuse's attribute mapping, token and cost tracking
(https://langfuse.com/docs/observability/features/token-and-cost-tracking) and langfuse/langfuse
``worker/src/constants/default-model-prices.json``.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import threading
import time

import aiohttp
import pytest
from langfuse.api import AsyncLangfuseAPI
from langfuse.api.core.api_error import ApiError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from tests.fakes.langfuse import TRACES_PATH, FakeLangfuse, langfuse_view, spans_from_json, spans_from_proto

PROJECTS = {"pk-lf-a": ("sk-lf-a", "project-a", "Project A"), "pk-lf-b": ("sk-lf-b", "project-b")}
ORG_KEYS = {"pk-lf-org": "sk-lf-org"}
PB = "application/x-protobuf"
TRACE = "0af7651916cd43dd8448eb211c80319c"
T0 = 1_760_000_000_000_000_000


def basic(pk: str = "pk-lf-a", sk: str = "sk-lf-a") -> str:
    return "Basic " + base64.b64encode(f"{pk}:{sk}".encode()).decode()


def _any(value, out: AnyValue) -> None:
    if isinstance(value, bool):
        out.bool_value = value
    elif isinstance(value, int):
        out.int_value = value
    elif isinstance(value, float):
        out.double_value = value
    elif isinstance(value, list):
        for v in value:
            _any(v, out.array_value.values.add())
    else:
        out.string_value = str(value)


def export(*spans: dict, resource: dict | None = None, scope: str = "test-scope") -> ExportTraceServiceRequest:
    """Build an ExportTraceServiceRequest; each span dict: span_id (hex), name, attrs, parent, trace, status,
    start/end (ns), raw_trace_id / raw_span_id (bytes, to send malformed ids)."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    for k, v in (resource or {}).items():
        _any(v, rs.resource.attributes.add(key=k).value)
    ss = rs.scope_spans.add()
    ss.scope.name = scope
    for i, s in enumerate(spans):
        sp = ss.spans.add(
            name=s.get("name", f"span-{i}"),
            trace_id=s.get("raw_trace_id", bytes.fromhex(s.get("trace", TRACE))),
            span_id=s.get("raw_span_id", bytes.fromhex(s.get("span_id", f"{i + 1:016x}"))),
            start_time_unix_nano=s.get("start", T0 + i),
            end_time_unix_nano=s.get("end", T0 + i + 10),
        )
        if s.get("parent"):
            sp.parent_span_id = bytes.fromhex(s["parent"])
        if "status" in s:
            sp.status.code, sp.status.message = s["status"]
        for k, v in (s.get("attrs") or {}).items():
            _any(v, sp.attributes.add(key=k).value)
        for name, attrs in s.get("events", []):
            ev = sp.events.add(name=name, time_unix_nano=T0 + 5)
            for k, v in attrs.items():
                _any(v, ev.attributes.add(key=k).value)
    return req


def view_of(*spans: dict, resource: dict | None = None):
    return langfuse_view(spans_from_proto(export(*spans, resource=resource)))


@pytest.fixture
async def lf():
    async with FakeLangfuse(projects=PROJECTS, org_keys=ORG_KEYS) as fake:
        yield fake


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


async def post(http, lf, body, *, ctype=PB, auth=None, path=TRACES_PATH, **headers):
    h = {"Content-Type": ctype, "Authorization": auth or basic(), **headers}
    if isinstance(body, ExportTraceServiceRequest):
        body = body.SerializeToString()
    async with http.post(lf.base_url + path, data=body, headers=h) as r:
        text = await r.text()
        return r.status, (json.loads(text) if "json" in r.content_type else text), r.headers


# ------------------------------------------------------------------------------------------------- ingestion wire
async def test_protobuf_export_is_recorded_with_request_metadata(lf, http):
    req = export(
        {
            "span_id": "00000000000000a1",
            "name": "root",
            "attrs": {"k": "v", "n": 3, "f": 1.5, "b": True, "arr": ["x", "y"]},
            "status": (Status.STATUS_CODE_ERROR, "boom"),
            "events": [("exception", {"exception.type": "E"})],
        },
        {"span_id": "00000000000000a2", "parent": "00000000000000a1", "name": "child"},
        resource={"service.name": "relay"},
    )
    status, body, _ = await post(http, lf, req, **{"x-langfuse-ingestion-version": "4"})
    assert status == 200 and isinstance(body, dict) and "partialSuccess" not in body
    root, child = lf.spans("project-a")
    assert (root.trace_id, root.span_id, root.parent_span_id) == (TRACE, "00000000000000a1", None)
    assert root.attributes == {"k": "v", "n": 3, "f": 1.5, "b": True, "arr": ["x", "y"]}
    assert root.resource_attributes == {"service.name": "relay"} and root.scope_name == "test-scope"
    assert (root.status_code, root.status_message, root.start_ns, root.end_ns) == (2, "boom", T0, T0 + 10)
    assert root.events[0].name == "exception" and root.events[0].attributes == {"exception.type": "E"}
    assert child.parent_span_id == "00000000000000a1" and lf.spans("project-b") == []
    [rec] = lf.accepted_requests()
    assert (rec.project, rec.public_key, rec.ingestion_version, rec.span_count) == ("project-a", "pk-lf-a", "4", 2)
    assert rec.raw_size == len(req.SerializeToString()) and rec.status == 200


async def test_otlp_json_export_decodes_hex_ids_and_list_attributes(lf, http):
    doc = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "s"}}]},
                "scopeSpans": [
                    {
                        "scope": {"name": "sc"},
                        "spans": [
                            {
                                "traceId": TRACE.upper(),
                                "spanId": "00000000000000b1",
                                "name": "j",
                                "startTimeUnixNano": str(T0),
                                "endTimeUnixNano": T0 + 5,
                                "attributes": [
                                    {"key": "i", "value": {"intValue": "42"}},
                                    {"key": "raw", "value": {"bytesValue": "AAE="}},
                                    {
                                        "key": "a",
                                        "value": {
                                            "arrayValue": {"values": [{"stringValue": "t1"}, {"boolValue": False}]}
                                        },
                                    },
                                ],
                                "status": {"code": 2},
                            }
                        ],
                    }
                ],
            }
        ]
    }
    status, _, _ = await post(http, lf, json.dumps(doc), ctype="application/json; charset=utf-8")
    assert status == 200
    [span] = lf.spans()
    assert (span.trace_id, span.span_id, span.start_ns, span.end_ns) == (TRACE.upper(), "00000000000000b1", T0, T0 + 5)
    assert span.attributes == {"i": 42, "raw": b"\x00\x01", "a": ["t1", False]} and span.status_code == 2
    assert span.resource_attributes == {"service.name": "s"}


async def test_gzip_is_gunzipped_and_bad_gzip_is_400(lf, http):
    raw = export({"name": "z"}).SerializeToString()
    status, _, _ = await post(http, lf, gzip.compress(raw), **{"Content-Encoding": "gzip"})
    assert status == 200 and [s.name for s in lf.spans()] == ["z"]
    rec = lf.accepted_requests()[0]
    assert rec.content_encoding == "gzip" and rec.body_size == len(raw) and rec.raw_size != len(raw)
    status, body, _ = await post(http, lf, b"not gzip at all", **{"Content-Encoding": "gzip"})
    assert (status, body) == (400, {"error": "Failed to decompress request body"})


@pytest.mark.parametrize("ctype", ["text/plain", "application/protobuf", "application/x-www-form-urlencoded"])
async def test_content_type_must_contain_protobuf_or_json(lf, http, ctype):
    status, body, _ = await post(http, lf, export({}).SerializeToString(), ctype=ctype)
    assert (status, body) == (400, {"error": "Invalid content type"}) and lf.spans() == []


async def test_undecodable_bodies_are_400(lf, http):
    assert (await post(http, lf, b"\xff\xff\xff"))[:2] == (400, {"error": "Failed to parse OTel Protobuf Trace"})
    assert (await post(http, lf, b"{", ctype="application/json"))[:2] == (
        400,
        {"error": "Failed to parse OTel JSON Trace"},
    )


@pytest.mark.parametrize(
    "bad",
    [{"raw_trace_id": b"\x01" * 8}, {"raw_span_id": b""}, {"raw_trace_id": b"\x00" * 16}],
    ids=["short-trace-id", "missing-span-id", "zero-trace-id"],
)
async def test_one_bad_span_rejects_the_whole_request(lf, http, bad):
    status, body, _ = await post(http, lf, export({"name": "good"}, {"name": "bad", **bad}))
    assert status == 400 and "1 of 2 span(s) cannot be processed" in body["error"]
    assert "entire export was rejected" in body["error"] and lf.spans() == [] and lf.accepted_requests() == []


async def test_logs_sent_to_traces_endpoint_and_object_attributes_are_rejected(lf, http):
    logs = ExportLogsServiceRequest()
    logs.resource_logs.add().scope_logs.add().log_records.add(time_unix_nano=T0, severity_text="INFO")
    status, body, _ = await post(http, lf, logs.SerializeToString())
    assert status == 400 and "traceId:absent" in body["error"] and "logs" in body["error"]
    doc = {
        "resourceSpans": [
            {"scopeSpans": [{"spans": [{"traceId": TRACE, "spanId": "00000000000000c1", "attributes": {"k": "v"}}]}]}
        ]
    }
    status, body, _ = await post(http, lf, json.dumps(doc), ctype="application/json")
    assert status == 400 and "attributes:not_an_array" in body["error"] and lf.spans() == []


@pytest.mark.parametrize(("version", "ok"), [("4", True), ("3", True), ("5", False), ("abc", False), ("4.5", True)])
async def test_ingestion_version_header(lf, http, version, ok):
    status, body, _ = await post(http, lf, export({}), **{"x-langfuse-ingestion-version": version})
    assert (status == 200) is ok
    if not ok:
        assert body == {"error": f'Unsupported x-langfuse-ingestion-version: "{version}". Maximum supported: "4".'}


@pytest.mark.parametrize(
    ("body", "ctype"), [(b"", PB), (b"{}", "application/json"), (b'{"resourceSpans": []}', "application/json")]
)
async def test_empty_request_is_200_empty_object(lf, http, body, ctype):
    assert (await post(http, lf, body, ctype=ctype))[:2] == (200, {})


async def test_auth_missing_bad_and_org_key(lf, http):
    async with http.post(lf.traces_url, data=b"", headers={"Content-Type": PB}) as r:
        assert r.status == 401 and "message" in await r.json()
    status, body, _ = await post(http, lf, export({}), auth=basic("pk-lf-a", "wrong"))
    assert status == 401 and "message" in body
    status, body, _ = await post(http, lf, export({}), auth=basic("pk-lf-org", "sk-lf-org"))
    assert status == 403 and "Are you using an organization key?" in body["message"]
    status, _, _ = await post(http, lf, export({"name": "b"}), auth=basic("pk-lf-b", "sk-lf-b"))
    assert status == 200 and [s.project for s in lf.spans()] == ["project-b"] and lf.spans("pk-lf-b")


async def test_methods_and_other_otel_routes(lf, http):
    async with http.get(lf.traces_url, headers={"Authorization": basic()}) as r:
        assert r.status == 405
    assert (await post(http, lf, export({}), path="/api/public/otel/v1/logs"))[0] == 404
    status, _, _ = await post(http, lf, b"\x0a\x00", path="/api/public/otel/v1/metrics")
    assert status == 200 and lf.spans() == []
    assert (await post(http, lf, b"", path="/api/public/otel/v1/metrics", auth=basic("x", "y")))[0] == 401


# ------------------------------------------------------------------------------------------------- other APIs
async def test_sdk_rest_client_health_and_projects(lf):
    api = AsyncLangfuseAPI(base_url=lf.base_url, username="pk-lf-a", password="sk-lf-a")
    health = await api.health.health()
    assert (health.status, health.version) == ("OK", "4.16.0")
    projects = await api.projects.get()
    assert [(p.id, p.name, p.organization.id) for p in projects.data] == [("project-a", "Project A", "org-fake")]
    bad = AsyncLangfuseAPI(base_url=lf.base_url, username="pk-lf-a", password="nope")
    with pytest.raises(ApiError) as err:
        await bad.projects.get()
    assert err.value.status_code == 401
    org = AsyncLangfuseAPI(base_url=lf.base_url, username="pk-lf-org", password="sk-lf-org")
    with pytest.raises(ApiError) as err:
        await org.projects.get()
    assert err.value.status_code == 403


async def test_scores_single_object_and_validation(lf, http):
    ok = {"name": "quality", "value": 1, "dataType": "BOOLEAN", "traceId": TRACE}
    status, body, _ = await post(http, lf, json.dumps(ok), ctype="application/json", path="/api/public/scores")
    assert status == 200 and body["id"] and lf.scores("project-a")[0]["name"] == "quality"
    for bad in (
        {**ok, "name": ""},
        {**ok, "value": 2},
        [ok],
        {**ok, "dataType": "TEXT", "value": ""},
        {**ok, "dataType": "CATEGORICAL"},
        {"name": "n", "value": 1},
    ):
        status, body, _ = await post(http, lf, json.dumps(bad), ctype="application/json", path="/api/public/scores")
        assert status == 400 and "message" in body, bad
    assert len(lf.scores()) == 1


async def test_legacy_ingestion_rejects_non_score_items_with_207(lf, http):
    batch = {"batch": [{"id": "1", "type": "trace-create", "body": {}}, {"id": "2", "type": "score-create"}]}
    status, body, _ = await post(http, lf, json.dumps(batch), ctype="application/json", path="/api/public/ingestion")
    assert (
        status == 207 and [e["id"] for e in body["errors"]] == ["1"] and [s["id"] for s in body["successes"]] == ["2"]
    )


# ------------------------------------------------------------------------------------------------- faults
async def test_rate_limit_fault_sends_retry_after_and_ratelimit_headers(lf, http):
    fault = lf.rate_limit(retry_after=7, times=2, limit=1000)
    for _ in range(2):
        status, body, headers = await post(http, lf, export({}))
        assert status == 429 and headers["Retry-After"] == "7" and body["message"]
        assert headers["X-RateLimit-Limit"] == "1000" and headers["X-RateLimit-Remaining"] == "0"
        assert "GMT" in headers["X-RateLimit-Reset"]  # a JS Date string, not epoch seconds
    assert (await post(http, lf, export({"name": "after"})))[0] == 200
    assert fault.hits == 2 and [s.name for s in lf.spans()] == ["after"]
    assert [r.status for r in lf.requests] == [429, 429, 200]


async def test_status_faults_are_scoped_and_have_realistic_bodies(lf, http):
    lf.fail(503, times=None, project="project-b")
    lf.fail(502, times=1)
    status, body, _ = await post(http, lf, export({}), auth=basic("pk-lf-b", "sk-lf-b"))
    assert status == 503  # first matching fault wins, project-b only
    status, body, _ = await post(http, lf, export({}))
    assert status == 502 and "Bad Gateway" in body  # HTML, like a proxy
    assert (await post(http, lf, export({})))[0] == 200
    assert (await post(http, lf, export({}), auth=basic("pk-lf-b", "sk-lf-b")))[0] == 503
    lf.clear_faults()
    assert (await post(http, lf, export({}), auth=basic("pk-lf-b", "sk-lf-b")))[0] == 200


async def test_suspended_ingestion_and_timed_faults(lf, http):
    lf.suspend_ingestion(duration=0.3)
    status, body, _ = await post(http, lf, export({}))
    assert status == 403 and body["message"].startswith("Ingestion suspended: Usage threshold exceeded")
    await asyncio.sleep(0.35)
    assert (await post(http, lf, export({})))[0] == 200


async def test_reset_after_read_records_spans_but_client_sees_connection_error(lf, http):
    lf.reset_connection()
    req = export({"span_id": "00000000000000d1"})
    with pytest.raises(aiohttp.ClientConnectionError):
        await post(http, lf, req)
    assert [s.span_id for s in lf.spans()] == ["00000000000000d1"] and lf.requests[0].status is None
    assert (await post(http, lf, req))[0] == 200  # the client's retry duplicates the span
    assert lf.duplicate_span_ids("project-a") == {"00000000000000d1": 2}
    assert lf.view().duplicate_observation_ids == {"00000000000000d1": 2}


async def test_reset_before_read_stores_nothing(lf, http):
    lf.reset_connection(after_read=False)
    with pytest.raises(aiohttp.ClientConnectionError):
        await post(http, lf, export({}))
    assert lf.spans() == [] and lf.requests[0].accepted is False


async def test_slow_answer_after_storing(lf, http):
    lf.slow(1.0)
    started = time.monotonic()
    with pytest.raises(asyncio.TimeoutError):
        async with http.post(
            lf.traces_url,
            data=export({"name": "slow"}).SerializeToString(),
            headers={"Content-Type": PB, "Authorization": basic()},
            timeout=aiohttp.ClientTimeout(total=0.2),
        ) as r:
            await r.read()
    assert time.monotonic() - started < 0.9 and [s.name for s in lf.spans()] == ["slow"]


async def test_outage_refuses_connections_and_restarts_on_same_port(lf, http):
    url = lf.base_url
    await lf.outage()
    assert not lf.is_up
    with pytest.raises(aiohttp.ClientConnectorError):
        await post(http, lf, export({}))
    await lf.restore()
    assert lf.base_url == url and (await post(http, lf, export({})))[0] == 200
    await lf.outage(duration=0.2)
    with pytest.raises(aiohttp.ClientConnectionError):
        await post(http, lf, export({}))
    await lf.restored()
    assert lf.is_up and lf.base_url == url and (await post(http, lf, export({})))[0] == 200


def test_threaded_fake_with_otel_sdk_exporter():
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    with FakeLangfuse.run_in_thread(projects=PROJECTS) as lf:
        exporter = OTLPSpanExporter(
            endpoint=lf.base_url + TRACES_PATH,
            timeout=5,
            headers={"Authorization": basic(), "x-langfuse-ingestion-version": "4"},
        )
        provider = TracerProvider(resource=Resource.create({"service.name": "t"}))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        with provider.get_tracer("t").start_as_current_span("outer", attributes={"langfuse.trace.name": "T"}):
            pass
        [span] = lf.wait_for_spans(1, timeout=5)
        assert span.name == "outer" and lf.view().traces[span.trace_id].name == "T"
        lf.outage()
        assert not lf.is_up
        lf.restore()
        lf.fail(400)
        with provider.get_tracer("t").start_as_current_span("rejected"):
            pass
        timer = threading.Timer(0.2, lambda: provider.get_tracer("t").start_span("late").end())
        started = time.monotonic()
        timer.start()
        assert [s.name for s in lf.wait_for_spans(2, timeout=5)] == ["outer", "late"]
        assert time.monotonic() - started < 2  # woken by the recording thread, not by the timeout
        provider.shutdown()
        assert [r.status for r in lf.requests] == [200, 400, 200]


# ------------------------------------------------------------------------------------------------- oracle
def test_usage_details_json_wins_over_gen_ai_usage():
    [obs] = view_of(
        {
            "attrs": {
                "langfuse.observation.usage_details": json.dumps(
                    {"input": 10, "output": 5, "cache_read_input_tokens": 100}
                ),
                "gen_ai.usage.input_tokens": 999,
                "gen_ai.request.model": "m",
            }
        }
    ).observations
    assert obs.usage_details == {"input": 10, "output": 5, "cache_read_input_tokens": 100, "total": 115}
    assert obs.type == "GENERATION"


def test_non_string_usage_details_yields_empty_usage():
    [obs] = view_of({"attrs": {"langfuse.observation.usage_details": 5, "gen_ai.usage.input_tokens": 7}}).observations
    assert obs.usage_details == {}


def test_generic_usage_subtracts_cache_from_input():
    semconv = {
        "gen_ai.usage.input_tokens": 48183,
        "gen_ai.usage.output_tokens": 714,
        "gen_ai.usage.cache_read.input_tokens": 47105,
        "gen_ai.usage.cache_creation.input_tokens": 1076,
    }
    [obs] = view_of({"attrs": semconv}).observations
    assert obs.usage_details["input"] == 2 and obs.usage_details["input_cached_tokens"] == 47105
    # Anthropic numbers (input excludes cache) sent as gen_ai.usage.* collapse to 0 (Langfuse pitfall)
    anthropic = {"gen_ai.usage.input_tokens": 12, "gen_ai.usage.cache_read_input_tokens": 5000}
    assert view_of({"attrs": anthropic}).observations[0].usage_details["input"] == 0


@pytest.mark.parametrize(
    ("attrs", "expected"),
    [
        ({"langfuse.observation.type": "tool", "gen_ai.operation.name": "chat"}, "TOOL"),
        ({"langfuse.observation.type": "bogus", "gen_ai.operation.name": "chat"}, "GENERATION"),
        ({"gen_ai.operation.name": "invoke_agent", "gen_ai.request.model": "m"}, "AGENT"),
        ({"gen_ai.operation.name": "execute_tool"}, "TOOL"),
        ({"gen_ai.operation.name": "embeddings"}, "EMBEDDING"),
        ({"gen_ai.tool.name": "Bash"}, "TOOL"),
        ({"gen_ai.response.model": "claude-opus-5"}, "GENERATION"),
        ({"input_tokens": 5}, "SPAN"),
    ],
)
def test_observation_type_inference(attrs, expected):
    assert view_of({"attrs": attrs}).observations[0].type == expected


def test_trace_fields_come_from_span_attributes_not_resource():
    resource = {
        "user.id": "res-user",
        "session.id": "res-session",
        "langfuse.trace.name": "res-name",
        "deployment.environment.name": "Langfuse-Staging",
        "langfuse.release": "r-res",
        "service.version": "1.2.3",
    }
    v = view_of({"name": "claude_code.interaction", "attrs": {"gen_ai.tool.name": "x"}}, resource=resource)
    trace = v.traces[TRACE]
    assert (trace.name, trace.user_id, trace.session_id) == (None, None, None)  # no span name fallback on v4
    assert (trace.environment, trace.release, trace.version) == ("staging", "r-res", "1.2.3")
    assert v.sessions == {}
    v = view_of(
        {
            "attrs": {
                "langfuse.user.id": "lu",
                "user.id": "u",
                "session.id": "s",
                "gen_ai.conversation.id": "c",
                "langfuse.trace.name": "T",
                "langfuse.environment": "bad env!",
                "langfuse.release": "r",
            }
        },
        resource=resource,
    )
    trace = v.traces[TRACE]
    assert (trace.name, trace.user_id, trace.session_id, trace.environment, trace.release) == (
        "T",
        "lu",
        "s",
        "default",
        "r",
    )
    assert v.sessions == {"s": {TRACE}}


@pytest.mark.parametrize("tags", [["a", "b"], '["a", "b"]', "a, b"])
def test_tag_formats(tags):
    assert view_of({"attrs": {"langfuse.trace.tags": tags}}).traces[TRACE].tags == ["a", "b"]


def test_trace_io_metadata_and_per_span_copies():
    v = view_of(
        {
            "span_id": "00000000000000e1",
            "attrs": {
                "langfuse.observation.input": '{"q":1}',
                "langfuse.observation.output": "done",
                "langfuse.trace.metadata": '{"team": "x"}',
                "langfuse.trace.metadata.repo": "r",
                "langfuse.session.id": "s1",
            },
        },
        {
            "span_id": "00000000000000e2",
            "parent": "00000000000000e1",
            "attrs": {"langfuse.observation.input": "child-in"},
        },
    )
    trace = v.traces[TRACE]
    assert (trace.input, trace.output, trace.metadata) == ('{"q":1}', "done", {"team": "x", "repo": "r"})
    assert [o.session_id for o in v.observations] == ["s1", None]  # the child lacks it: v4 violation is visible


def test_level_status_name_and_completion_start():
    [obs] = view_of(
        {
            "name": "claude_code.tool",
            "status": (Status.STATUS_CODE_ERROR, "exit 1"),
            "attrs": {
                "gen_ai.tool.name": "Bash",
                "langfuse.observation.completion_start_time": "2026-01-01T00:00:00.5Z",
            },
        }
    ).observations
    assert (obs.name, obs.level, obs.status_message) == ("Bash", "ERROR", "exit 1")
    assert obs.completion_start_time == "2026-01-01T00:00:00.5Z"
    [obs] = view_of(
        {
            "status": (Status.STATUS_CODE_ERROR, "x"),
            "attrs": {"langfuse.observation.level": "WARNING", "langfuse.observation.status_message": "explicit"},
        }
    ).observations
    assert (obs.level, obs.status_message) == ("WARNING", "explicit")


def test_cost_given_inferred_and_unmatched_models():
    usage = json.dumps(
        {
            "input": 1000,
            "output": 100,
            "cache_read_input_tokens": 10_000,
            "input_cache_creation_5m": 200,
            "input_cache_creation_1h": 50,
        }
    )
    given = view_of(
        {
            "attrs": {
                "gen_ai.request.model": "claude-opus-5",
                "langfuse.observation.usage_details": usage,
                "langfuse.observation.cost_details": '{"input": 0.01, "output": 0.02}',
            }
        }
    )
    assert given.observations[0].cost_details == {"input": 0.01, "output": 0.02, "total": pytest.approx(0.03)}
    assert not given.observations[0].cost_inferred
    inferred = view_of(
        {"attrs": {"gen_ai.request.model": "claude-opus-5", "langfuse.observation.usage_details": usage}}
    )
    expected = 1000 * 5e-6 + 100 * 2.5e-5 + 10_000 * 5e-7 + 200 * 6.25e-6 + 50 * 1e-5
    assert inferred.total_cost() == pytest.approx(expected) and inferred.observations[0].cost_inferred
    unmatched = view_of(
        {"attrs": {"gen_ai.request.model": "claude-opus-5-5", "langfuse.observation.usage_details": usage}}
    )
    assert unmatched.total_cost() == 0.0 and unmatched.generations()[0].usage_details["input"] == 1000
    # Claude 4.x entries price aliases of one bucket: sending both double-counts
    aliased = view_of(
        {
            "attrs": {
                "gen_ai.request.model": "claude-sonnet-4-5",
                "langfuse.observation.usage_details": '{"input": 100, "input_tokens": 100}',
            }
        }
    )
    assert aliased.total_cost() == pytest.approx(2 * 100 * 3e-6)


def test_duplicates_are_separate_observations_and_double_cost():
    span = {"span_id": "00000000000000f1", "attrs": {"langfuse.observation.cost_details": '{"total": 0.5}'}}
    spans = spans_from_proto(export(span)) * 2
    v = langfuse_view(spans)
    assert len(v.observations) == 2 and v.duplicate_observation_ids == {"00000000000000f1": 2}
    assert v.total_cost() == pytest.approx(1.0) and len(v.traces) == 1


def test_spans_from_json_rejects_like_the_server():
    with pytest.raises(ValueError, match="spanId:wrong_length"):
        spans_from_json({"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": TRACE, "spanId": "abcd"}]}]}]})
