"""OTLP request decoding, validation (partial success) and response encoding, shared by HTTP and gRPC.

Spec: OTLP spec "OTLP/gRPC" and "OTLP/HTTP" (https://opentelemetry.io/docs/specs/otlp/#otlpgrpc, #otlphttp):

- requests are ``Export{Trace,Metrics,Logs}ServiceRequest`` in binary protobuf or OTLP/JSON (proto3 JSON
  mapping with hex ``traceId``/``spanId``, integer enums, int64 as numbers or strings, unknown fields ignored);
- invalid items are removed and reported as ``partial_success`` (still a success response);
- responses use the request's encoding: ``Export*ServiceResponse`` on success, ``google.rpc.Status`` on errors.

Decompression lives in :mod:`relay.otlp.compression` and is re-exported here.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as logs_svc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as metrics_svc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as trace_svc

from relay.model import Signal
from relay.otlp import jsontree
from relay.otlp.compression import CodecError, CorruptBody, TooLarge, UnsupportedEncoding, decompress
from relay.otlp.jsonids import hex_ids_to_base64

__all__ = [
    "CodecError",
    "CorruptBody",
    "TooLarge",
    "UnsupportedEncoding",
    "BadMessage",
    "decompress",
    "Format",
    "parse_content_type",
    "ValidatedRequest",
    "parse_export",
    "count_items",
    "export_response",
    "status_message",
    "REQUEST_TYPES",
    "RESPONSE_TYPES",
]

#: Request message class per signal.
REQUEST_TYPES: dict[Signal, type[Message]] = {
    Signal.TRACES: trace_svc.ExportTraceServiceRequest,
    Signal.METRICS: metrics_svc.ExportMetricsServiceRequest,
    Signal.LOGS: logs_svc.ExportLogsServiceRequest,
}
#: Response message class per signal.
RESPONSE_TYPES: dict[Signal, type[Message]] = {
    Signal.TRACES: trace_svc.ExportTraceServiceResponse,
    Signal.METRICS: metrics_svc.ExportMetricsServiceResponse,
    Signal.LOGS: logs_svc.ExportLogsServiceResponse,
}
_REJECTED_FIELD = {
    Signal.TRACES: "rejected_spans",
    Signal.METRICS: "rejected_data_points",
    Signal.LOGS: "rejected_log_records",
}
_METRIC_KINDS = ("gauge", "sum", "histogram", "exponential_histogram", "summary")
#: Upper bound on the partial-success / Status message (responses SHOULD stay small, OTLP spec "OTLP/HTTP Response").
_MAX_MESSAGE = 4096
_MAX_REASONS = 5
#: Deepest JSON nesting accepted. An OTLP/JSON export request needs about 10 levels plus AnyValue nesting
#: (kvlist/array values); the proto3 JSON parser itself stops at 100 message levels (``ParseDict``'s
#: ``max_recursion_depth``). Deeper documents are refused with 400 before they reach a recursive parser.
MAX_JSON_DEPTH = 128
#: OTLP timestamps are ``fixed64`` nanoseconds since the Unix epoch (opentelemetry-proto ``trace.proto``,
#: ``logs.proto``, ``metrics.proto``); relay stores them as SQLite's signed 64-bit INTEGER, so a value at or above
#: 2^63 (after the year 2262, never a real clock) is rejected as an invalid item rather than accepted and then
#: failing in storage.
MAX_TIME_NS = 2**63 - 1


class BadMessage(CodecError):
    """The (decompressed) body is not a valid protobuf / OTLP-JSON request → HTTP 400 / INVALID_ARGUMENT."""


class Format(StrEnum):
    """Wire encoding of an OTLP/HTTP request; the value is the response ``Content-Type``."""

    PROTOBUF = "application/x-protobuf"
    JSON = "application/json"


def parse_content_type(value: str | None) -> Format | None:
    """Map a ``Content-Type`` header (parameters such as ``charset`` allowed, case-insensitive) to a
    :class:`Format`; ``None`` when unsupported (→ 415). ``application/protobuf`` is accepted as an alias."""
    if not value:
        return None
    media = value.split(";", 1)[0].strip().lower()
    if media in ("application/x-protobuf", "application/protobuf"):
        return Format.PROTOBUF
    if media == "application/json":
        return Format.JSON
    return None


@dataclass(frozen=True)
class ValidatedRequest:
    """A decoded and validated export request.

    ``message`` is the request with rejected items removed; ``payload`` is its protobuf serialization (the
    original bytes when a protobuf request needed no change); ``items`` counts accepted items (spans / log
    records / metric data points); ``rejected`` counts removed items and ``error_message`` explains why
    (``None`` when nothing was rejected); ``rejected_by`` counts the removed items per reason code
    (``trace_id``, ``span_id``, ``parent_span_id``, ``timestamp``: the ``invalid`` reasons of
    :class:`relay.model.Outcome`).
    """

    signal: Signal
    message: Message
    payload: bytes
    items: int
    rejected: int
    error_message: str | None
    rejected_by: dict[str, int] = field(default_factory=dict)


def parse_export(signal: Signal, data: bytes, fmt: Format) -> ValidatedRequest:
    """Decode ``data`` (already decompressed) as the ``signal``'s export request in ``fmt`` and validate it.

    Validation (partial success, spec "Partial Success"): a span whose ``trace_id`` is not 16 bytes or all
    zero, whose ``span_id`` is not 8 bytes or all zero, or whose ``parent_span_id`` is neither empty nor
    8 bytes is removed; a log record whose ``trace_id``/``span_id`` is set with a length other than 16/8 bytes
    is removed; a span, log record or metric data point with a timestamp at or beyond 2^63 ns is removed
    (``MAX_TIME_NS``). Raises :class:`BadMessage` (with ``field`` when known) for undecodable input, JSON nested
    deeper than ``MAX_JSON_DEPTH`` and JSON keys with lone surrogates.
    """
    cls = REQUEST_TYPES[signal]
    msg = cls()
    if fmt is Format.PROTOBUF:
        try:
            msg.ParseFromString(data)
        except DecodeError as e:
            raise BadMessage(
                f"cannot decode the body as an OTLP protobuf {cls.__name__} ({len(data)} bytes): {e}"
            ) from None
    else:
        _parse_json(data, msg, signal)
    if signal is Signal.TRACES:
        rejected, reasons = _validate_spans(msg)
    elif signal is Signal.LOGS:
        rejected, reasons = _validate_logs(msg)
    else:
        rejected, reasons = _validate_metrics(msg)
    items = count_items(signal, msg)
    payload = data if (fmt is Format.PROTOBUF and not rejected) else msg.SerializeToString()
    error = _rejection_message(signal, rejected, items, reasons) if rejected else None
    by: dict[str, int] = {}
    for (why, _where), n in reasons.items():
        code = _REASON_CODES.get(why.split(" ", 1)[0], "timestamp")
        by[code] = by.get(code, 0) + n
    return ValidatedRequest(signal, msg, payload, items, rejected, error, by)


def _parse_json(data: bytes, msg: Message, signal: Signal) -> None:
    name = type(msg).__name__
    try:
        tree = json.loads(data)
    except json.JSONDecodeError as e:
        raise BadMessage(f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except ValueError as e:  # undecodable UTF-8/16/32
        raise BadMessage(f"invalid JSON text: {e}") from None
    except RecursionError:  # the C decoder gives up near 1,000 levels
        raise BadMessage(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    if not isinstance(tree, dict):
        raise BadMessage(f"OTLP/JSON {name} must be a JSON object, got {type(tree).__name__}")
    if jsontree.fill(msg, tree, MAX_JSON_DEPTH):
        return
    msg.Clear()
    _parse_json_tree(tree, msg, signal)


def _parse_json_tree(tree: dict[str, Any], msg: Message, signal: Signal) -> None:
    """The reference path of OTLP/JSON: the structural check, hex ids rewritten to base64 (in ``tree``), then the
    protobuf runtime's ``ParseDict``, for the requests the fast path (``relay.otlp.jsontree.fill``) leaves to it.
    Raises :class:`BadMessage`."""
    name = type(msg).__name__
    try:
        jsontree.check_tree(tree, MAX_JSON_DEPTH)
    except jsontree.TreeProblem as e:
        raise BadMessage(e.message) from None
    try:
        hex_ids_to_base64(signal, tree)
    except CodecError as e:
        raise BadMessage(e.message, e.field) from None
    try:
        json_format.ParseDict(tree, msg, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, AttributeError, RecursionError, OverflowError) as e:
        # OverflowError: an integer too large for a double field (float() of it)
        raise BadMessage(f"invalid OTLP/JSON {name}: {e}") from None
    except SystemError as e:  # upb fails this way on a lone surrogate where a message was expected (a string)
        cause = e.__cause__ or e.__context__ or e
        raise BadMessage(f"invalid OTLP/JSON {name}: {type(cause).__name__}: {cause}") from None


_ZERO_TRACE_ID, _ZERO_SPAN_ID = bytes(16), bytes(8)


def _bad_id(value: bytes, size: int) -> bool:
    return len(value) != size or not any(value)


#: First word of a problem message → the ``invalid`` reason code counted in ``relay_items_total``.
_REASON_CODES = {"traceId": "trace_id", "spanId": "span_id", "parentSpanId": "parent_span_id"}


def _time_problem(**times: int) -> str | None:
    """A problem message for the first of ``times`` (field name → fixed64 ns) beyond ``MAX_TIME_NS``, or None."""
    for name, value in times.items():
        if value > MAX_TIME_NS:
            return f"timestamp {name}={value} is at or beyond 2^63 ns (after the year 2262)"
    return None


def _span_problem(span) -> str | None:
    """Why a span is invalid (OTLP trace.proto: 16-byte trace id, 8-byte span id, none all zero; timestamps
    below 2^63 ns, see ``MAX_TIME_NS``), or None."""
    tid, sid = span.trace_id, span.span_id
    if (  # the common case, valid and without events, in one expression
        len(tid) == 16
        and len(sid) == 8
        and tid != _ZERO_TRACE_ID
        and sid != _ZERO_SPAN_ID
        and len(span.parent_span_id) in (0, 8)
        and span.start_time_unix_nano <= MAX_TIME_NS
        and span.end_time_unix_nano <= MAX_TIME_NS
        and not span.events
    ):
        return None
    if _bad_id(span.trace_id, 16):
        return f"traceId must be 16 bytes and not all zero (got {len(span.trace_id)} bytes)"
    if _bad_id(span.span_id, 8):
        return f"spanId must be 8 bytes and not all zero (got {len(span.span_id)} bytes)"
    if len(span.parent_span_id) not in (0, 8):
        return f"parentSpanId must be empty or 8 bytes (got {len(span.parent_span_id)} bytes)"
    problem = _time_problem(startTimeUnixNano=span.start_time_unix_nano, endTimeUnixNano=span.end_time_unix_nano)
    for e in span.events:
        problem = problem or _time_problem(**{"events.timeUnixNano": e.time_unix_nano})
    return problem


def _log_problem(rec) -> str | None:
    """Why a log record is invalid (OTLP logs.proto: ids optional, but of the right length; timestamps below
    2^63 ns), or None."""
    if len(rec.trace_id) not in (0, 16):
        return f"traceId must be empty or 16 bytes (got {len(rec.trace_id)} bytes)"
    if len(rec.span_id) not in (0, 8):
        return f"spanId must be empty or 8 bytes (got {len(rec.span_id)} bytes)"
    return _time_problem(timeUnixNano=rec.time_unix_nano, observedTimeUnixNano=rec.observed_time_unix_nano)


def _point_problem(p) -> str | None:
    """Why a metric data point is invalid (timestamps, incl. its exemplars', below 2^63 ns), or None."""
    problem = _time_problem(startTimeUnixNano=getattr(p, "start_time_unix_nano", 0), timeUnixNano=p.time_unix_nano)
    for ex in getattr(p, "exemplars", ()):
        problem = problem or _time_problem(**{"exemplars.timeUnixNano": ex.time_unix_nano})
    return problem


def _drop_invalid(items, path: str, problem, reasons: Counter) -> int:
    """Delete the items ``problem`` finds fault with from a repeated field; count reasons; return how many."""
    drop = [(i, why) for i, item in enumerate(items) if (why := problem(item))]
    for i, why in drop:
        reasons[(why, f"{path}[{i}]")] += 1
    for i, _ in reversed(drop):
        del items[i]
    return len(drop)


def _validate_spans(req: trace_svc.ExportTraceServiceRequest) -> tuple[int, Counter[tuple[str, str]]]:
    rejected, reasons = 0, Counter[tuple[str, str]]()
    for ri, rs in enumerate(req.resource_spans):
        for si, ss in enumerate(rs.scope_spans):
            rejected += _drop_invalid(ss.spans, f"resourceSpans[{ri}].scopeSpans[{si}].spans", _span_problem, reasons)
    return rejected, reasons


def _validate_logs(req: logs_svc.ExportLogsServiceRequest) -> tuple[int, Counter[tuple[str, str]]]:
    rejected, reasons = 0, Counter[tuple[str, str]]()
    for ri, rl in enumerate(req.resource_logs):
        for si, sl in enumerate(rl.scope_logs):
            rejected += _drop_invalid(
                sl.log_records, f"resourceLogs[{ri}].scopeLogs[{si}].logRecords", _log_problem, reasons
            )
    return rejected, reasons


def _validate_metrics(req: metrics_svc.ExportMetricsServiceRequest) -> tuple[int, Counter[tuple[str, str]]]:
    rejected, reasons = 0, Counter[tuple[str, str]]()
    for ri, rm in enumerate(req.resource_metrics):
        for si, sm in enumerate(rm.scope_metrics):
            for mi, m in enumerate(sm.metrics):
                kind = m.WhichOneof("data")
                if kind in _METRIC_KINDS:
                    path = f"resourceMetrics[{ri}].scopeMetrics[{si}].metrics[{mi}].{kind}.dataPoints"
                    rejected += _drop_invalid(getattr(m, kind).data_points, path, _point_problem, reasons)
    return rejected, reasons


def _rejection_message(signal: Signal, rejected: int, accepted: int, reasons: Counter) -> str:
    by_reason: dict[str, list[str]] = {}
    for (why, where), n in reasons.items():
        by_reason.setdefault(why, []).extend([where] * n)
    parts = []
    for why, where in list(by_reason.items())[:_MAX_REASONS]:
        parts.append(f"{len(where)} with {why} (first: {where[0]})")
    if len(by_reason) > _MAX_REASONS:
        parts.append(f"{len(by_reason) - _MAX_REASONS} more reasons")
    noun = signal.item_name.replace("_", " ")
    return _clip(f"rejected {rejected} of {rejected + accepted} {noun}: " + "; ".join(parts))


def count_items(signal: Signal, msg: Message) -> int:
    """Items in an export request: spans (traces), log records (logs) or data points across gauge, sum,
    histogram, exponential histogram and summary metrics (metrics; Collector ``metric_points``)."""
    if signal is Signal.TRACES:
        return sum(len(ss.spans) for rs in msg.resource_spans for ss in rs.scope_spans)
    if signal is Signal.LOGS:
        return sum(len(sl.log_records) for rl in msg.resource_logs for sl in rl.scope_logs)
    n = 0
    for rm in msg.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                if kind in _METRIC_KINDS:
                    n += len(getattr(m, kind).data_points)
    return n


def export_response(signal: Signal, fmt: Format, rejected: int = 0, error_message: str | None = None) -> bytes:
    """Serialize an ``Export*ServiceResponse`` in ``fmt``; ``partial_success`` is set only when ``rejected`` > 0
    or ``error_message`` is non-empty (spec: full success leaves it unset). Empty success is ``b""`` in
    protobuf and ``{}`` in JSON."""
    resp = RESPONSE_TYPES[signal]()
    if rejected or error_message:
        ps = resp.partial_success
        setattr(ps, _REJECTED_FIELD[signal], rejected)
        ps.error_message = _clip(error_message or "")
    return _encode(resp, fmt)


def status_message(
    fmt: Format, code: int, message: str, *, field: str | None = None, details: Iterable[Message] = ()
) -> bytes:
    """Serialize a ``google.rpc.Status`` (``code`` is a ``google.rpc.Code`` number, ``message`` English) in
    ``fmt``. When ``field`` is given a ``google.rpc.BadRequest`` field violation is attached (spec: 400
    responses SHOULD carry one); ``details`` are further messages packed as ``Any``."""
    st = status_pb2.Status(code=code, message=_clip(message))
    if field:
        bad = error_details_pb2.BadRequest()
        bad.field_violations.add(field=_clip(field), description=_clip(message))
        st.details.add().Pack(bad)
    for d in details:
        st.details.add().Pack(d)
    return _encode(st, fmt)


def _encode(msg: Message, fmt: Format) -> bytes:
    if fmt is Format.PROTOBUF:
        return msg.SerializeToString()
    tree: dict[str, Any] = json_format.MessageToDict(msg)
    return json.dumps(tree, separators=(",", ":")).encode()


def _clip(text: str) -> str:
    """``text`` cut to ``_MAX_MESSAGE`` characters and made valid UTF-8: a parser's message may quote a lone
    surrogate of the request, which protobuf and JSON encoders refuse (it is shown as ``\\udXXX``)."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"
