"""OTLP/HTTP receiver over real loopback sockets: fixture replay, the OpenTelemetry SDK's own exporters, error
handling (400/401/404/405/413/415/503), partial success, duplicates and disconnects.

Spec: OTLP spec "OTLP/HTTP" (https://opentelemetry.io/docs/specs/otlp/#otlphttp), incl. "Failures" and
"OTLP/HTTP Throttling".
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import threading
import tracemalloc
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from relay.auth import TenantResolver
from relay.component import deadline_in
from relay.config import HttpReceiverConfig
from relay.config_load import RelayConfig
from relay.model import Signal
from relay.otlp.http import JSON_OFF_LOOP_BYTES, OtlpHttpReceiver
from relay.otlp.ingest import IngestRefused, dedup_key
from relay.telemetry import Telemetry
from tests.support.fixtures import SCENARIOS, CapturedRequest, load_scenario
from tests.support.otlp_helpers import (
    RESPONSE_TYPES,
    TID,
    MemorySink,
    count_items,
    otlp_json,
    sdk_telemetry,
    spans_request,
)

PB = "application/x-protobuf"


@dataclass
class Running:
    url: str
    sink: MemorySink
    telemetry: Telemetry
    receiver: OtlpHttpReceiver


@pytest.fixture
async def start_http() -> AsyncIterator:
    receivers: list[OtlpHttpReceiver] = []

    async def start(config: RelayConfig | None = None, sink=None, **http) -> Running:
        sink, telemetry = sink or MemorySink(), Telemetry()
        cfg = HttpReceiverConfig(endpoint="127.0.0.1:0", **http)
        recv = OtlpHttpReceiver(cfg, TenantResolver(config or RelayConfig()), sink, telemetry)
        await recv.start()
        receivers.append(recv)
        return Running(f"http://127.0.0.1:{recv.port}", sink, telemetry, recv)

    yield start
    for r in receivers:
        await r.shutdown(deadline_in(1.0))


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as s:
        yield s


def replay_headers(r: CapturedRequest) -> dict[str, str]:
    skip = {"host", "content-length", "connection"}
    return {k: v for k, v in r.headers.items() if k.lower() not in skip}


GOOD = spans_request(b"\1" * 8, b"\2" * 8).SerializeToString()


async def post(session, url, body, content_type=PB, **headers) -> tuple[int, dict, bytes]:
    async with session.post(url, data=body, headers={"Content-Type": content_type, **headers}) as resp:
        return resp.status, dict(resp.headers), await resp.read()


# ------------------------------------------------------------------------------------------ fixture replay

HTTP_SCENARIOS = [s for s in SCENARIOS if s != "grpc-tools"]


@pytest.mark.parametrize("scenario", HTTP_SCENARIOS)
async def test_replay_fixtures(start_http, session, scenario):
    srv = await start_http()
    reqs = load_scenario(scenario)
    assert reqs and all(r.transport == "http" for r in reqs)
    for r in reqs:
        before = (srv.sink.calls, len(srv.sink.stored))
        status, headers, body = await post(session, srv.url + r.path, r.body, r.content_type, **replay_headers(r))
        assert status == 200, body
        assert headers["Content-Type"] == r.content_type
        if r.content_type == "application/json":
            resp = json_format.Parse(body, RESPONSE_TYPES[r.signal]())
            assert json.loads(body) == {}
        else:
            resp = RESPONSE_TYPES[r.signal].FromString(body)
        assert not resp.HasField("partial_success")
        raw = gzip.decompress(r.body) if r.content_encoding == "gzip" else r.body
        expected = count_items(r.signal, raw, r.content_type == "application/json")
        assert expected > 0
        assert srv.sink.calls == before[0] + 1
        key = dedup_key("default", Signal(r.signal), raw)
        if len(srv.sink.stored) == before[1]:  # a byte-identical resend (receiver-503 scenario)
            assert key in srv.sink.keys
            continue
        got = srv.sink.stored[-1]
        assert (got.tenant, got.signal.value, got.items, got.dedup_key) == ("default", r.signal, expected, key)
        assert count_items(r.signal, got.payload, False) == expected
        if r.content_type == PB:
            assert got.payload == raw
    unique = {dedup_key("default", Signal(r.signal), r.body) for r in reqs}
    assert len(srv.sink.stored) == len(unique)


async def test_replay_counts_match_fixture_readme(start_http, session):
    srv = await start_http()
    for r in load_scenario("protobuf-tools"):
        assert (await post(session, srv.url + r.path, r.body, r.content_type))[0] == 200
    assert (srv.sink.items("logs"), srv.sink.items("metrics"), srv.sink.items("traces")) == (33, 40, 26)
    t = srv.telemetry
    assert t.sample("otelcol_receiver_accepted_spans_total", {"transport": "http", "tenant": "default"}) == 26
    assert t.sample("otelcol_receiver_accepted_log_records_total") == 33
    assert t.sample("otelcol_receiver_accepted_metric_points_total") == 40
    assert t.sample("otelcol_receiver_requests_total", {"status": "200"}) == 22
    assert t.sample("relay_receiver_request_duration_seconds_count") == 22


async def test_replay_with_auth_and_tenant_header(start_http, session):
    cfg = RelayConfig.model_validate(
        {
            "auth": {"tenant_header": "X-Relay-Tenant", "trust_tenant_header": True},
            "tenants": [{"name": "acme", "tokens": ["capture-token"]}, {"name": "other", "tokens": ["other-token"]}],
        }
    )
    srv = await start_http(cfg)
    reqs = load_scenario("protobuf-tools")
    for r in reqs:
        assert (await post(session, srv.url + r.path, r.body, r.content_type, **replay_headers(r)))[0] == 200
    assert {s.tenant for s in srv.sink.stored} == {"acme"} and len(srv.sink.stored) == len(reqs)
    # without the captured Authorization header: 401, nothing stored
    r = reqs[0]
    status, headers, body = await post(
        session, srv.url + r.path, r.body + b"", r.content_type, **{"X-Relay-Tenant": "acme"}
    )
    assert status == 401 and "Bearer" in headers["WWW-Authenticate"]
    assert "missing credentials" in status_pb2.Status.FromString(body).message
    status, _, _ = await post(session, srv.url + r.path, r.body, r.content_type, Authorization="Bearer wrong")
    assert status == 401
    # a valid token of another tenant contradicting the trusted header: 401
    status, _, _ = await post(
        session,
        srv.url + r.path,
        r.body,
        r.content_type,
        Authorization="Bearer other-token",
        **{"X-Relay-Tenant": "acme"},
    )
    assert status == 401
    assert len(srv.sink.stored) == len(reqs) and srv.sink.calls == len(reqs)
    status, _, _ = await post(session, srv.url + "/v1/traces", GOOD, Authorization="Bearer other-token")
    assert status == 200 and srv.sink.stored[-1].tenant == "other"


async def test_auth_json_401_and_langfuse_path(start_http, session):
    cfg = RelayConfig.model_validate(
        {
            "tenants": [
                {
                    "name": "acme",
                    "tokens": ["t0k"],
                    "langfuse": {"base_url": "https://lf.example", "public_key": "pk-lf-1", "secret_key": "sk-lf-1"},
                }
            ]
        }
    )
    srv = await start_http(cfg)
    status, headers, body = await post(session, srv.url + "/v1/logs", b"{}", "application/json")
    assert status == 401 and headers["Content-Type"] == "application/json"
    assert json.loads(body)["code"] == 16
    basic = "Basic " + base64.b64encode(b"pk-lf-1:sk-lf-1").decode()
    status, _, _ = await post(session, srv.url + "/api/public/otel/v1/traces", GOOD, Authorization=basic)
    assert status == 200 and srv.sink.stored[-1].tenant == "acme" and srv.sink.stored[-1].signal is Signal.TRACES
    srv2 = await start_http(cfg, langfuse_compatible_path=False)
    assert (await post(session, srv2.url + "/api/public/otel/v1/traces", GOOD, Authorization=basic))[0] == 404


# ------------------------------------------------------------------------------------------ OpenTelemetry SDK


def sdk_export(base_url: str, compression: str) -> tuple:
    """Export SDK-made telemetry with the SDK's OTLP/HTTP exporters (blocking; run in a thread)."""
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    spans, logs, metrics = sdk_telemetry()
    kw = {"compression": Compression(compression), "timeout": 5}
    return (
        OTLPSpanExporter(endpoint=base_url + "/v1/traces", **kw).export(spans).name,
        OTLPLogExporter(endpoint=base_url + "/v1/logs", **kw).export(logs).name,
        OTLPMetricExporter(endpoint=base_url + "/v1/metrics", **kw).export(metrics).name,
    )


@pytest.mark.parametrize("compression", ["none", "gzip", "deflate"])
async def test_sdk_http_exporters(start_http, compression):
    srv = await start_http()
    results = await asyncio.to_thread(sdk_export, srv.url, compression)
    assert results == ("SUCCESS", "SUCCESS", "SUCCESS")
    assert (srv.sink.items("traces"), srv.sink.items("logs"), srv.sink.items("metrics")) == (2, 1, 2)


# ------------------------------------------------------------------------------------------ JSON


async def test_json_variants_over_the_wire(start_http, session):
    srv = await start_http()
    body = {
        "resourceLogs": [
            {
                "resource": {"attributes": [], "newField": 1},
                "scopeLogs": [
                    {
                        "logRecords": [
                            {
                                "timeUnixNano": "1795238704611000000",
                                "observedTimeUnixNano": 1795238704611000001,
                                "severityNumber": 9,
                                "traceId": TID.hex().upper(),
                                "spanId": "ABCDEF0123456789",
                                "body": {"stringValue": "x"},
                                "attributes": [
                                    {"key": "n", "value": {"intValue": 7}},
                                    {"key": "s", "value": {"intValue": "8"}},
                                ],
                                "flags": 1,
                                "eventName": "e",
                                "mysteryField": {"a": [1]},
                            }
                        ]
                    }
                ],
            }
        ]
    }
    status, headers, resp = await post(
        session, srv.url + "/v1/logs", json.dumps(body).encode(), "application/json; charset=utf-8"
    )
    assert status == 200 and headers["Content-Type"] == "application/json" and json.loads(resp) == {}
    rec = ExportLogsServiceRequest.FromString(srv.sink.stored[0].payload).resource_logs[0].scope_logs[0].log_records[0]
    assert rec.trace_id == TID and rec.span_id == bytes.fromhex("abcdef0123456789")
    assert rec.time_unix_nano == 1795238704611000000 and rec.observed_time_unix_nano == 1795238704611000001
    assert [a.value.int_value for a in rec.attributes] == [7, 8]
    # gzip-compressed JSON: same decompressed bytes, so a duplicate of the first request
    status, _, _ = await post(
        session,
        srv.url + "/v1/logs",
        gzip.compress(json.dumps(body).encode()),
        "application/json",
        **{"Content-Encoding": "gzip"},
    )
    assert status == 200 and srv.sink.calls == 2 and len(srv.sink.stored) == 1


def _json_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("relay-otlp-json")]


async def test_big_json_requests_are_decoded_off_the_event_loop(start_http, session):
    """A JSON body over ``JSON_OFF_LOOP_BYTES`` is decoded in the receiver's JSON thread (the event loop keeps
    answering meanwhile), to the same stored payload as its protobuf twin; a small one stays on the loop; errors
    come back from the thread as the same 400; the thread ends with the receiver."""
    srv = await start_http()
    small = spans_request(b"\1" * 8)
    assert (await post(session, srv.url + "/v1/traces", otlp_json(small), "application/json"))[0] == 200
    assert not _json_threads()

    big = spans_request(*(i.to_bytes(8, "big") for i in range(1, 801)))
    for span in big.resource_spans[0].scope_spans[0].spans:
        span.attributes.add(key="gen_ai.prompt", value=AnyValue(string_value="x" * 40))
    body = otlp_json(big)
    assert len(body) > JSON_OFF_LOOP_BYTES
    status, _, _ = await post(session, srv.url + "/v1/traces", body, "application/json")
    assert status == 200 and len(_json_threads()) == 1
    assert srv.sink.stored[-1].payload == big.SerializeToString()

    bad = body.replace(b'"spanId":"00000000000000', b'"spanId":"zz000000000000', 1)
    status, _, resp = await post(session, srv.url + "/v1/traces", bad, "application/json")
    assert status == 400 and "spanId" in json.loads(resp)["message"]

    await srv.receiver.shutdown(deadline_in(1.0))
    for t in _json_threads():
        t.join(timeout=5)
    assert not _json_threads()


# ------------------------------------------------------------------------------------------ bad requests


def _bomb() -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = b"\0" * 2**20
    return b"".join([c.compress(zeros) for _ in range(64)] + [c.flush()])  # ~64 KB → 64 MiB


async def _chunks(total: int) -> AsyncIterator[bytes]:
    for _ in range(total // 65536):
        yield b"\x0a" * 65536


BAD_REQUESTS = [
    # (id, method, path, headers, body, status, message substring)
    (
        "bad-protobuf",
        "POST",
        "/v1/traces",
        {"Content-Type": PB},
        b"\xff\xff\xff\xffgarbage",
        400,
        "ExportTraceServiceRequest",
    ),
    ("bad-json", "POST", "/v1/logs", {"Content-Type": "application/json"}, b'{"resourceLogs": [', 400, "invalid JSON"),
    (
        "json-bad-hex",
        "POST",
        "/v1/traces",
        {"Content-Type": "application/json"},
        b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}',
        400,
        "traceId",
    ),
    (  # float() of it overflowed inside ParseDict: a 500 before
        "json-int-too-big-for-double",
        "POST",
        "/v1/metrics",
        {"Content-Type": "application/json"},
        b'{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"m","gauge":{"dataPoints":[{"asDouble":'
        + b"9" * 400
        + b"}]}}]}]}]}",
        400,
        "too large to convert to float",
    ),
    (
        "bad-gzip",
        "POST",
        "/v1/traces",
        {"Content-Type": PB, "Content-Encoding": "gzip"},
        b"definitely not gzip",
        400,
        "gzip",
    ),
    (
        "unknown-encoding",
        "POST",
        "/v1/traces",
        {"Content-Type": PB, "Content-Encoding": "br"},
        GOOD,
        400,
        "Content-Encoding",
    ),
    ("unsupported-type", "POST", "/v1/traces", {"Content-Type": "text/plain"}, GOOD, 415, "unsupported media type"),
    ("no-type", "POST", "/v1/traces", {}, GOOD, 415, None),
    ("get", "GET", "/v1/traces", {}, None, 405, None),
    ("put", "PUT", "/v1/logs", {"Content-Type": PB}, GOOD, 405, None),
    ("unknown-path", "POST", "/v1/profiles", {"Content-Type": PB}, GOOD, 404, None),
    ("oversize", "POST", "/v1/traces", {"Content-Type": PB}, b"\x0a" * (2**20 + 1), 413, "limit"),
    ("oversize-chunked", "POST", "/v1/traces", {"Content-Type": PB}, "chunked", 413, "limit"),
    ("gzip-bomb", "POST", "/v1/traces", {"Content-Type": PB, "Content-Encoding": "gzip"}, _bomb(), 413, "limit"),
]


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
async def test_bad_request_then_good_request(start_http, session, case):
    _, method, path, headers, body, want_status, want_message = case
    srv = await start_http(max_request_body_size=2**20)
    assert (await post(session, srv.url + "/v1/traces", GOOD))[0] == 200
    first = srv.sink.stored[0]
    data = _chunks(3 * 2**20) if body == "chunked" else body
    tracemalloc.start()
    try:
        async with session.request(method, srv.url + path, data=data, headers=headers) as resp:
            status, resp_headers, resp_body = resp.status, resp.headers, await resp.read()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert status == want_status, resp_body
    if want_message:
        if resp_headers.get("Content-Type") == PB:
            message = status_pb2.Status.FromString(resp_body).message
        elif resp_headers.get("Content-Type") == "application/json":
            message = json.loads(resp_body)["message"]
        else:
            message = resp_body.decode()
        assert want_message in message
    if case[0] == "gzip-bomb":
        assert peak < 16 * 2**20, f"the bomb made the process allocate {peak} bytes"
    assert srv.sink.calls == 1
    assert (await post(session, srv.url + "/v1/traces", spans_request(b"\3" * 8).SerializeToString()))[0] == 200
    assert len(srv.sink.stored) == 2 and srv.sink.stored[0] is first and first.payload == GOOD


async def test_status_details_carry_bad_request_field(start_http, session):
    srv = await start_http()
    body = b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"spanId":"nothex"}]}]}]}'
    status, _, resp = await post(session, srv.url + "/v1/traces", body, "application/json")
    assert status == 400
    st = json_format.Parse(resp, status_pb2.Status())
    bad = error_details_pb2.BadRequest()
    assert st.code == 3 and st.details[0].Unpack(bad)
    assert bad.field_violations[0].field == "resourceSpans[0].scopeSpans[0].spans[0].spanId"


# ------------------------------------------------------------------------------------------ partial success


async def test_partial_success(start_http, session):
    srv = await start_http()
    req = spans_request(b"\1" * 8, b"\2" * 4, b"\3" * 8)
    status, _, body = await post(session, srv.url + "/v1/traces", req.SerializeToString())
    assert status == 200
    ps = ExportTraceServiceResponse.FromString(body).partial_success
    assert ps.rejected_spans == 1 and "spanId must be 8 bytes" in ps.error_message
    stored = ExportTraceServiceRequest.FromString(srv.sink.stored[0].payload)
    assert [s.name for s in stored.resource_spans[0].scope_spans[0].spans] == ["s0", "s2"]
    assert srv.sink.stored[0].items == 2
    assert srv.telemetry.sample("relay_receiver_rejected_spans_total") == 1
    # JSON: same in JSON
    status, _, body = await post(session, srv.url + "/v1/traces", otlp_json(req), "application/json")
    assert status == 200 and json.loads(body)["partialSuccess"]["rejectedSpans"] == "1"


async def test_all_rejected_or_empty_does_not_call_the_sink(start_http, session):
    srv = await start_http()
    status, _, body = await post(session, srv.url + "/v1/traces", spans_request(bytes(8)).SerializeToString())
    assert status == 200 and ExportTraceServiceResponse.FromString(body).partial_success.rejected_spans == 1
    for path, ct, body in [
        ("/v1/traces", PB, b""),
        ("/v1/logs", "application/json", b"{}"),
        ("/v1/metrics", "application/json", b'{"resourceMetrics": []}'),
    ]:
        status, _, resp = await post(session, srv.url + path, body, ct)
        assert status == 200 and resp in (b"", b"{}")
    assert srv.sink.calls == 0


# ------------------------------------------------------------------------------------------ refusal, duplicates


async def test_refused_is_503_with_retry_after_then_retry_succeeds(start_http, session):
    srv = await start_http()
    srv.sink.refuse = IngestRefused("spool full", retry_after=2.5)
    status, headers, body = await post(session, srv.url + "/v1/traces", GOOD)
    assert status == 503 and headers["Retry-After"] == "3"
    st = status_pb2.Status.FromString(body)
    info = error_details_pb2.RetryInfo()
    assert st.code == 14 and "spool full" in st.message and st.details[0].Unpack(info)
    assert info.retry_delay.seconds == 3
    assert srv.telemetry.sample("otelcol_receiver_refused_spans_total") == 2
    assert srv.telemetry.sample("otelcol_receiver_requests_total", {"status": "503"}) == 1
    srv.sink.refuse = None
    assert (await post(session, srv.url + "/v1/traces", GOOD))[0] == 200  # the client's identical retry
    assert len(srv.sink.stored) == 1


async def test_sink_crash_is_503(start_http, session):
    async def broken(req):
        raise OSError("disk on fire")

    srv = await start_http(sink=broken)
    status, headers, body = await post(session, srv.url + "/v1/traces", GOOD)
    assert status == 503 and headers["Retry-After"] == "1"
    assert "disk on fire" not in status_pb2.Status.FromString(body).message
    assert srv.telemetry.sample("otelcol_receiver_failed_spans_total") == 2


async def test_duplicate_is_success_and_stored_once(start_http, session):
    srv = await start_http()
    for _ in range(2):
        status, _, body = await post(session, srv.url + "/v1/traces", GOOD)
        assert status == 200 and body == b""
    gz = gzip.compress(GOOD)  # same decompressed body → same key
    assert (await post(session, srv.url + "/v1/traces", gz, **{"Content-Encoding": "gzip"}))[0] == 200
    assert srv.sink.calls == 3 and len(srv.sink.stored) == 1
    assert srv.telemetry.sample("relay_receiver_duplicate_requests_total") == 2
    assert srv.telemetry.sample("otelcol_receiver_accepted_spans_total") == 2


async def test_client_gone_after_body_still_ingested(start_http):
    srv = await start_http()
    srv.sink.delay = 0.3
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.1)) as s:
        with pytest.raises(asyncio.TimeoutError):
            await post(s, srv.url + "/v1/traces", GOOD)
    for _ in range(100):
        if srv.sink.stored:
            break
        await asyncio.sleep(0.02)
    assert len(srv.sink.stored) == 1 and srv.sink.stored[0].payload == GOOD


async def test_ingest_survives_cancelled_handler():
    """The gate shields the sink call: cancelling the handler (aiohttp handler_cancellation, shutdown) does not
    cancel the ingest."""
    from relay.otlp.codec import Format, parse_export
    from relay.otlp.receiver import IngestGate

    sink = MemorySink()
    sink.delay = 0.1
    gate = IngestGate(sink, Telemetry(), "http")
    task = asyncio.create_task(gate.submit("default", GOOD, parse_export(Signal.TRACES, GOOD, Format.PROTOBUF)))
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gate.in_flight == 1
    await gate.drain(2.0)
    assert len(sink.stored) == 1 and gate.in_flight == 0


async def test_concurrent_requests(start_http, session):
    srv = await start_http()
    bodies = [spans_request(bytes([i + 1]) * 8).SerializeToString() for i in range(50)]
    results = await asyncio.gather(*(post(session, srv.url + "/v1/traces", b) for b in bodies))
    assert all(r[0] == 200 for r in results)
    assert sorted(r.payload for r in srv.sink.stored) == sorted(bodies)


async def test_stop_answers_in_flight_requests(start_http, session):
    srv = await start_http()
    srv.sink.delay = 0.2
    request = asyncio.create_task(post(session, srv.url + "/v1/traces", GOOD))
    while srv.sink.calls == 0:
        await asyncio.sleep(0.005)
    await srv.receiver.shutdown(deadline_in(2.0))
    status, _, _ = await request
    assert status == 200 and len(srv.sink.stored) == 1
    with pytest.raises(aiohttp.ClientConnectionError):
        await post(session, srv.url + "/v1/traces", GOOD)


async def test_truncated_body_is_not_stored(start_http, session):
    srv = await start_http()
    port = int(srv.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
        b"Content-Length: 1000\r\n\r\n" + GOOD
    )
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.close()
    await writer.wait_closed()
    await asyncio.sleep(0.05)
    assert srv.sink.calls == 0
    assert (await post(session, srv.url + "/v1/traces", GOOD))[0] == 200 and len(srv.sink.stored) == 1


async def test_in_flight_counts_each_request_until_stored_or_failed():
    """``InFlight`` counts a request from its submission until the sink finished with it — also when its handler
    was cancelled meanwhile, and when the sink failed — and ``wait_idle`` returns when none is left, or after its
    timeout."""
    from relay.otlp.codec import Format, parse_export
    from relay.otlp.receiver import InFlight, IngestGate

    in_flight = InFlight()
    await asyncio.wait_for(in_flight.wait_idle(30), 1)  # idle: at once
    sink = MemorySink()
    sink.delay = 0.2
    gate = IngestGate(sink, Telemetry(), "http", in_flight=in_flight)
    req = parse_export(Signal.TRACES, GOOD, Format.PROTOBUF)
    handler = asyncio.create_task(gate.submit("default", GOOD, req))
    await asyncio.sleep(0.02)
    assert in_flight.count == 1
    waiting = asyncio.create_task(in_flight.wait_idle(30))
    handler.cancel()  # the client went away: the request is still being stored
    await asyncio.sleep(0.05)
    assert in_flight.count == 1 and not waiting.done()
    await asyncio.wait_for(waiting, 5)
    assert in_flight.count == 0 and len(sink.stored) == 1

    async def crash(_req):
        raise RuntimeError("boom")

    failing = IngestGate(crash, Telemetry(), "http", in_flight=in_flight)
    assert (await failing.submit("default", GOOD, req)).status == "failed"
    assert in_flight.count == 0
    in_flight.enter()  # a request that does not end: the wait is bounded
    await in_flight.wait_idle(0.05)
    assert in_flight.count == 1
