"""Unit tests of relay.otlp.codec / compression / jsonids: decompression with a cap, OTLP protobuf and JSON
decoding, validation with partial success, and response encoding (spec: https://opentelemetry.io/docs/specs/otlp/)."""

from __future__ import annotations

import base64
import gzip
import json
import tracemalloc
import zlib

import pytest
import zstandard
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from relay.model import Signal
from relay.otlp.codec import (
    BadMessage,
    CorruptBody,
    Format,
    TooLarge,
    UnsupportedEncoding,
    count_items,
    decompress,
    export_response,
    parse_content_type,
    parse_export,
    status_message,
)
from relay.otlp.ingest import dedup_key
from tests.support.fixtures import load_scenario

TID = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
SID = bytes.fromhex("b7ad6b7169203331")
PAYLOAD = b"hello otlp " * 1000


# ------------------------------------------------------------------------------------------ decompression


@pytest.mark.parametrize(
    "encoding,body",
    [
        (None, PAYLOAD),
        ("", PAYLOAD),
        ("identity", PAYLOAD),
        ("gzip", gzip.compress(PAYLOAD)),
        ("GZip", gzip.compress(PAYLOAD)),
        ("x-gzip", gzip.compress(PAYLOAD)),
        ("gzip", gzip.compress(PAYLOAD[:5000]) + gzip.compress(PAYLOAD[5000:])),  # two members
        ("deflate", zlib.compress(PAYLOAD)),  # zlib-wrapped (RFC 9110)
        ("zstd", zstandard.ZstdCompressor().compress(PAYLOAD)),
        ("gzip, zstd", zstandard.ZstdCompressor().compress(gzip.compress(PAYLOAD))),
    ],
)
def test_decompress_supported(encoding, body):
    assert decompress(body, encoding, len(PAYLOAD)) == PAYLOAD


def test_raw_deflate_roundtrip():
    c = zlib.compressobj(wbits=-15)
    raw = c.compress(PAYLOAD) + c.flush()
    assert decompress(raw, "deflate", 10**6) == PAYLOAD


@pytest.mark.parametrize("encoding", ["br", "snappy", "gzip, lz4", "compress"])
def test_unknown_encoding(encoding):
    with pytest.raises(UnsupportedEncoding, match="unsupported Content-Encoding"):
        decompress(b"abc", encoding, 100)


@pytest.mark.parametrize(
    "encoding,body,match",
    [
        ("gzip", b"not gzip at all", "invalid gzip"),
        ("gzip", gzip.compress(PAYLOAD)[:-12], "truncated"),
        ("deflate", zlib.compress(PAYLOAD) + b"junk", "trailing"),
        ("zstd", b"\x00\x01garbage", "invalid zstd"),
        ("zstd", zstandard.ZstdCompressor().compress(PAYLOAD)[:-6], "truncated"),
    ],
)
def test_corrupt_bodies(encoding, body, match):
    with pytest.raises(CorruptBody, match=match):
        decompress(body, encoding, 10**6)


def test_cap_is_inclusive():
    body = gzip.compress(b"x" * 1000)
    assert len(decompress(body, "gzip", 1000)) == 1000
    with pytest.raises(TooLarge):
        decompress(body, "gzip", 999)
    with pytest.raises(TooLarge):
        decompress(b"x" * 1001, None, 1000)


def _bomb(kind: str, size: int) -> bytes:
    zeros = b"\0" * 2**20
    if kind == "zstd":
        c = zstandard.ZstdCompressor().compressobj()
        return b"".join([c.compress(zeros) for _ in range(size // 2**20)] + [c.flush()])
    c = zlib.compressobj(9, zlib.DEFLATED, 31 if kind == "gzip" else 15)
    return b"".join([c.compress(zeros) for _ in range(size // 2**20)] + [c.flush()])


@pytest.mark.parametrize("kind", ["gzip", "deflate", "zstd"])
def test_bomb_is_stopped_without_materialising(kind):
    bomb = _bomb(kind, 64 * 2**20)  # ~64 KB (gzip) expanding to 64 MiB
    cap = 2**20
    tracemalloc.start()
    try:
        with pytest.raises(TooLarge, match="exceeds the limit"):
            decompress(bomb, kind, cap)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * cap, f"decompression used {peak} bytes for a {cap} cap"


# ------------------------------------------------------------------------------------------ content types


@pytest.mark.parametrize(
    "value,fmt",
    [
        ("application/x-protobuf", Format.PROTOBUF),
        ("application/protobuf", Format.PROTOBUF),
        ("Application/JSON; charset=utf-8", Format.JSON),
        ("application/json", Format.JSON),
        ("text/plain", None),
        ("application/grpc", None),
        (None, None),
        ("", None),
    ],
)
def test_parse_content_type(value, fmt):
    assert parse_content_type(value) is fmt


# ------------------------------------------------------------------------------------------ decoding


def _span(name: str, trace_id: bytes = TID, span_id: bytes = SID, parent: bytes = b"") -> dict:
    return {"name": name, "trace_id": trace_id, "span_id": span_id, "parent_span_id": parent}


def _traces(*spans: dict) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    for s in spans:
        ss.spans.add(**s)
    return req


def test_fixture_json_decodes_with_hex_ids_and_counts():
    reqs = load_scenario("json-tools")
    totals = {"traces": 0, "logs": 0, "metrics": 0}
    for r in reqs:
        tree = json.loads(r.body)
        v = parse_export(Signal(r.signal), r.body, Format.JSON)
        assert v.rejected == 0 and v.error_message is None
        totals[r.signal] += v.items
        if r.signal == "traces":
            first = tree["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
            span = v.message.resource_spans[0].scope_spans[0].spans[0]
            assert span.trace_id.hex() == first["traceId"].lower()
            assert span.span_id.hex() == first["spanId"].lower()
            assert span.parent_span_id.hex() == first.get("parentSpanId", "").lower()
            assert int(span.start_time_unix_nano) == int(first["startTimeUnixNano"])
            assert span.kind == first["kind"]
        # the payload is the protobuf form of the same request
        cls = {
            "traces": ExportTraceServiceRequest,
            "logs": ExportLogsServiceRequest,
            "metrics": ExportMetricsServiceRequest,
        }[r.signal]
        assert cls.FromString(v.payload) == v.message
    assert totals == {"logs": 32, "metrics": 23, "traces": 26}  # fixtures README


def test_json_variants_are_accepted():
    body = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "n", "value": {"intValue": "9007199254740993"}}],
                    "futureField": {"x": 1},
                },
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": TID.hex().upper(),
                                "spanId": SID.hex().upper(),
                                "parentSpanId": "00F067AA0BA902B7",
                                "name": "s",
                                "kind": 2,
                                "startTimeUnixNano": 1700000000000000000,
                                "endTimeUnixNano": "1700000000000000001",
                                "attributes": [
                                    {"key": "i", "value": {"intValue": 42}},
                                    {"key": "b", "value": {"bytesValue": base64.b64encode(b"raw").decode()}},
                                ],
                                "links": [{"traceId": "AB" * 16, "spanId": "CD" * 8}],
                                "status": {"code": 2},
                                "somethingNew": [1, 2, 3],
                            },
                        ]
                    }
                ],
            }
        ],
        "unknownTopLevel": True,
    }
    v = parse_export(Signal.TRACES, json.dumps(body).encode(), Format.JSON)
    span = v.message.resource_spans[0].scope_spans[0].spans[0]
    assert (span.trace_id, span.span_id) == (TID, SID)
    assert span.parent_span_id == bytes.fromhex("00f067aa0ba902b7")
    assert span.kind == 2 and span.status.code == 2
    assert span.start_time_unix_nano == 1700000000000000000 and span.end_time_unix_nano == 1700000000000000001
    assert span.attributes[0].value.int_value == 42
    assert span.attributes[1].value.bytes_value == b"raw"  # base64 attribute not treated as an id
    assert span.links[0].trace_id == b"\xab" * 16 and span.links[0].span_id == b"\xcd" * 8
    assert v.message.resource_spans[0].resource.attributes[0].value.int_value == 9007199254740993
    assert v.items == 1 and v.rejected == 0


def test_json_log_and_exemplar_ids_are_hex():
    logs = {
        "resourceLogs": [
            {
                "scopeLogs": [
                    {
                        "logRecords": [
                            {
                                "traceId": TID.hex(),
                                "spanId": SID.hex(),
                                "body": {"stringValue": "x"},
                                "severityNumber": 9,
                            }
                        ]
                    }
                ]
            }
        ]
    }
    v = parse_export(Signal.LOGS, json.dumps(logs).encode(), Format.JSON)
    rec = v.message.resource_logs[0].scope_logs[0].log_records[0]
    assert (rec.trace_id, rec.span_id, rec.severity_number) == (TID, SID, 9)
    metrics = {
        "resourceMetrics": [
            {
                "scopeMetrics": [
                    {
                        "metrics": [
                            {
                                "name": "m",
                                "sum": {
                                    "aggregationTemporality": 1,
                                    "isMonotonic": True,
                                    "dataPoints": [
                                        {
                                            "asInt": "5",
                                            "exemplars": [{"traceId": TID.hex(), "spanId": SID.hex(), "asDouble": 1}],
                                        }
                                    ],
                                },
                            }
                        ]
                    }
                ]
            }
        ]
    }
    v = parse_export(Signal.METRICS, json.dumps(metrics).encode(), Format.JSON)
    ex = v.message.resource_metrics[0].scope_metrics[0].metrics[0].sum.data_points[0].exemplars[0]
    assert (ex.trace_id, ex.span_id) == (TID, SID) and v.items == 1


@pytest.mark.parametrize(
    "body,match",
    [
        (b"{not json", "line 1 column 2"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "xyz"}]}]}]}', "spans\\[0\\].traceId"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "abc"}]}]}]}', "hex string"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": 5}]}]}]}', "name"),
        (b'{"resourceSpans": "oops"}', "resourceSpans"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"startTimeUnixNano": "soon"}]}]}]}', "startTimeUnixNano"),
        (b"\xff\xfe\xfa", "JSON"),
    ],
)
def test_bad_json_has_readable_message(body, match):
    with pytest.raises(BadMessage, match=match):
        parse_export(Signal.TRACES, body, Format.JSON)


def test_bad_json_id_names_the_field():
    body = b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{}, {"spanId": "zz"}]}]}]}'
    with pytest.raises(BadMessage) as e:
        parse_export(Signal.LOGS, body, Format.JSON)
    assert e.value.field == "resourceLogs[0].scopeLogs[0].logRecords[1].spanId"


def test_bad_protobuf():
    with pytest.raises(BadMessage, match="ExportTraceServiceRequest"):
        parse_export(Signal.TRACES, b"\xff\xff\xff\xff garbage", Format.PROTOBUF)


def test_protobuf_payload_is_the_original_bytes_when_valid():
    for r in load_scenario("protobuf-text"):
        v = parse_export(Signal(r.signal), r.body, Format.PROTOBUF)
        assert v.payload == r.body and v.rejected == 0 and v.items > 0


# ------------------------------------------------------------------------------------------ validation


def test_invalid_spans_are_rejected_and_removed():
    req = _traces(
        _span("ok"),
        _span("short-span", span_id=b"\1" * 4),
        _span("zero-trace", trace_id=bytes(16)),
        _span("ok2", parent=SID),
        _span("bad-parent", parent=b"\1\2\3"),
        _span("zero-span", span_id=bytes(8)),
    )
    v = parse_export(Signal.TRACES, req.SerializeToString(), Format.PROTOBUF)
    assert (v.items, v.rejected) == (2, 4)
    assert [s.name for s in v.message.resource_spans[0].scope_spans[0].spans] == ["ok", "ok2"]
    assert [s.name for s in ExportTraceServiceRequest.FromString(v.payload).resource_spans[0].scope_spans[0].spans] == [
        "ok",
        "ok2",
    ]
    assert v.error_message.startswith("rejected 4 of 6 spans")
    assert "spanId must be 8 bytes" in v.error_message and "traceId must be 16 bytes" in v.error_message
    assert "parentSpanId" in v.error_message and "resourceSpans[0].scopeSpans[0].spans[1]" in v.error_message


def test_invalid_log_records_are_rejected():
    req = ExportLogsServiceRequest()
    sl = req.resource_logs.add().scope_logs.add()
    sl.log_records.add(body={"string_value": "no ids"})
    sl.log_records.add(trace_id=TID, span_id=SID)
    sl.log_records.add(trace_id=TID[:8])
    sl.log_records.add(span_id=SID + b"\0")
    v = parse_export(Signal.LOGS, req.SerializeToString(), Format.PROTOBUF)
    assert (v.items, v.rejected) == (2, 2)
    assert "rejected 2 of 4 log records" in v.error_message


def test_metric_points_counted_across_kinds():
    req = ExportMetricsServiceRequest()
    sm = req.resource_metrics.add().scope_metrics.add()
    sm.metrics.add(name="g").gauge.data_points.add(as_int=1)
    s = sm.metrics.add(name="s").sum
    s.data_points.add(as_double=1.0)
    s.data_points.add(as_double=2.0)
    sm.metrics.add(name="h").histogram.data_points.add(count=1)
    sm.metrics.add(name="e").exponential_histogram.data_points.add(count=1)
    sm.metrics.add(name="q").summary.data_points.add(count=1)
    sm.metrics.add(name="empty")
    assert count_items(Signal.METRICS, req) == 6
    assert parse_export(Signal.METRICS, req.SerializeToString(), Format.PROTOBUF).items == 6


def test_empty_request_has_no_items():
    v = parse_export(Signal.TRACES, b"", Format.PROTOBUF)
    assert (v.items, v.rejected) == (0, 0)
    assert parse_export(Signal.LOGS, b"{}", Format.JSON).items == 0


# ------------------------------------------------------------------------------------------ responses


def test_export_responses():
    assert export_response(Signal.TRACES, Format.PROTOBUF) == b""
    assert export_response(Signal.LOGS, Format.JSON) == b"{}"
    pb = ExportTraceServiceResponse.FromString(export_response(Signal.TRACES, Format.PROTOBUF, 3, "bad ids"))
    assert pb.HasField("partial_success")
    assert (pb.partial_success.rejected_spans, pb.partial_success.error_message) == (3, "bad ids")
    js = json.loads(export_response(Signal.METRICS, Format.JSON, 2, "why"))
    assert js == {"partialSuccess": {"rejectedDataPoints": "2", "errorMessage": "why"}}
    js = json.loads(export_response(Signal.LOGS, Format.JSON, 1, "x"))
    assert js["partialSuccess"]["rejectedLogRecords"] == "1"


def test_status_messages():
    st = status_pb2.Status.FromString(status_message(Format.PROTOBUF, 3, "bad thing", field="a.b"))
    assert (st.code, st.message) == (3, "bad thing")
    bad = error_details_pb2.BadRequest()
    assert st.details[0].Unpack(bad) and bad.field_violations[0].field == "a.b"
    js = json.loads(status_message(Format.JSON, 14, "later"))
    assert js == {"code": 14, "message": "later"}
    st2 = status_pb2.Status()
    json_format.Parse(status_message(Format.JSON, 3, "m", field="f"), st2)
    assert st2.details[0].type_url.endswith("google.rpc.BadRequest")


def test_dedup_key_is_stable_and_distinct():
    k = dedup_key("acme", Signal.TRACES, b"body")
    assert k == dedup_key("acme", Signal.TRACES, b"body") and len(k) == 32
    assert k != dedup_key("acme", Signal.LOGS, b"body")
    assert k != dedup_key("acm", Signal.TRACES, b"ebody")
    assert k != dedup_key("acme", Signal.TRACES, b"body2")


def test_status_message_with_a_lone_surrogate_from_the_request_is_valid_utf8():
    """A parser's error may quote a lone surrogate of the request; the 400 body must still encode (found by the
    receivers' fuzzer: it used to be a 500)."""
    import json as _json

    from google.rpc import status_pb2

    from relay.otlp.codec import Format, status_message

    message = "repeated field resourceLogs must be in [] which is \ud800"
    body = status_message(Format.JSON, 3, message, field="resourceLogs\ud800")
    assert "\\ud800" in _json.loads(body)["message"]
    st = status_pb2.Status.FromString(status_message(Format.PROTOBUF, 3, message))
    assert st.code == 3 and st.message.endswith("\\ud800")


@pytest.mark.parametrize("body", [b'{"resourceLogs": ["\\ud800"]}', b'{"resourceLogs": [{"scopeLogs": ["a\\udc00"]}]}'])
def test_a_lone_surrogate_where_a_message_belongs_is_a_400(body):
    """``{"resourceLogs": ["\\ud800"]}`` made upb raise ``SystemError`` inside ``json_format.ParseDict``: a 500 the
    receivers' fuzzer found. It is a bad request with the reason."""
    with pytest.raises(BadMessage, match="invalid OTLP/JSON ExportLogsServiceRequest"):
        parse_export(Signal.LOGS, body, Format.JSON)
