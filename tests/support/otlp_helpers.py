"""Helpers for the OTLP receiver tests: an in-memory ingest sink, an independent item counter, request
builders, and telemetry produced by the OpenTelemetry Python SDK itself."""

from __future__ import annotations

import asyncio
import base64
import json

from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest, ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from relay.otlp.ingest import IngestRefused, IngestRequest

REQUEST_TYPES = {
    "traces": ExportTraceServiceRequest,
    "logs": ExportLogsServiceRequest,
    "metrics": ExportMetricsServiceRequest,
}
RESPONSE_TYPES = {
    "traces": ExportTraceServiceResponse,
    "logs": ExportLogsServiceResponse,
    "metrics": ExportMetricsServiceResponse,
}
TID = bytes.fromhex("5b8efff798038103d269b633813fc60c")


class MemorySink:
    """In-memory stand-in for the spool (an ``relay.otlp.ingest.Ingest``): records stored requests,
    deduplicates by ``dedup_key``, raises ``refuse`` when set, sleeps ``delay`` seconds per call."""

    def __init__(self) -> None:
        self.stored: list[IngestRequest] = []
        self.keys: set[bytes] = set()
        self.calls = 0
        self.refuse: IngestRefused | None = None
        self.delay = 0.0

    async def __call__(self, req: IngestRequest) -> bool:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.refuse is not None:
            raise self.refuse
        if req.dedup_key in self.keys:
            return False
        self.keys.add(req.dedup_key)
        self.stored.append(req)
        return True

    def items(self, signal: str) -> int:
        """Stored items of ``signal`` (``traces``/``logs``/``metrics``)."""
        return sum(r.items for r in self.stored if r.signal.value == signal)


def count_items(signal: str, body: bytes, json_body: bool) -> int:
    """Item count of a decompressed export request body, computed without relay's codec."""
    if json_body:
        tree = json.loads(body)
        if signal == "traces":
            return sum(
                len(ss.get("spans", [])) for rs in tree.get("resourceSpans", []) for ss in rs.get("scopeSpans", [])
            )
        if signal == "logs":
            return sum(
                len(sl.get("logRecords", [])) for rl in tree.get("resourceLogs", []) for sl in rl.get("scopeLogs", [])
            )
        kinds = ("gauge", "sum", "histogram", "exponentialHistogram", "summary")
        return sum(
            len(m[k].get("dataPoints", []))
            for rm in tree.get("resourceMetrics", [])
            for sm in rm.get("scopeMetrics", [])
            for m in sm.get("metrics", [])
            for k in kinds
            if k in m
        )
    msg = REQUEST_TYPES[signal].FromString(body)
    if signal == "traces":
        return sum(len(ss.spans) for rs in msg.resource_spans for ss in rs.scope_spans)
    if signal == "logs":
        return sum(len(sl.log_records) for rl in msg.resource_logs for sl in rl.scope_logs)
    return sum(
        len(getattr(m, m.WhichOneof("data")).data_points)
        for rm in msg.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.WhichOneof("data")
    )


def otlp_json(req: ExportTraceServiceRequest) -> bytes:
    """``req`` as OTLP/JSON the way the OpenTelemetry SDKs' JSON exporters write it: the protobuf runtime's proto3
    JSON mapping (camelCase keys, int64 as strings), then the OTLP deviation of hex ids instead of base64
    (https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding) — independent of relay's own codec."""
    tree = json_format.MessageToDict(req)
    for rs in tree.get("resourceSpans", ()):
        for ss in rs.get("scopeSpans", ()):
            for span in ss.get("spans", ()):
                for obj in (span, *span.get("links", ())):
                    for key in ("traceId", "spanId", "parentSpanId"):
                        if key in obj:
                            obj[key] = base64.b64decode(obj[key]).hex()
    return json.dumps(tree, separators=(",", ":")).encode()


def spans_request(*span_ids: bytes, trace_id: bytes = TID) -> ExportTraceServiceRequest:
    """One resource/scope with a span per id, named ``s0``, ``s1``, …"""
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    for i, sid in enumerate(span_ids):
        ss.spans.add(name=f"s{i}", trace_id=trace_id, span_id=sid, start_time_unix_nano=1, end_time_unix_nano=2)
    return req


def sdk_telemetry():
    """(spans, log records, metrics data) produced by the OpenTelemetry SDK: 2 spans, 1 log record,
    2 metric points — ready for the SDK's OTLP exporters' ``export``."""
    from opentelemetry._logs import SeverityNumber
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    spans_mem = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(spans_mem))
    with tp.get_tracer("test").start_as_current_span("parent"):
        with tp.get_tracer("test").start_as_current_span("child"):
            pass
    logs_mem = InMemoryLogRecordExporter()
    lp = LoggerProvider()
    lp.add_log_record_processor(SimpleLogRecordProcessor(logs_mem))
    lp.get_logger("test").emit(body="hello", severity_number=SeverityNumber.INFO, attributes={"k": 1})
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("test")
    meter.create_counter("c").add(3, {"x": "y"})
    meter.create_histogram("h").record(2.5)
    return spans_mem.get_finished_spans(), logs_mem.get_finished_logs(), reader.get_metrics_data()
