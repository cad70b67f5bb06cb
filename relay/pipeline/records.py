"""Flattened, protocol-independent views of OTLP log records and spans, as the pipeline's mappers see them.

Built from decoded ``Export*ServiceRequest`` protobuf messages (JSON requests are converted to protobuf at the
receiver). Ids are lowercase hex strings, ``None`` when absent or all-zero. Times are Unix nanoseconds.
Attribute values are plain Python values (see ``relay.otlp.values.any_to_py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from relay.otlp.values import any_to_py, attrs_to_dict

__all__ = ["LogView", "SpanView", "iter_logs", "iter_spans", "hex_id"]

CLAUDE_CODE_SCOPE_PREFIX = "com.anthropic.claude_code"


def hex_id(raw: bytes) -> str | None:
    """A trace/span id as lowercase hex, or None when empty or all zero (OTLP: invalid id)."""
    if not raw or not any(raw):
        return None
    return raw.hex()


@dataclass
class LogView:
    """One OTLP log record with its resource and scope.

    ``event_name`` is Claude Code's ``event.name`` attribute (without the ``claude_code.`` prefix), else the
    OTLP ``event_name`` field, else None. ``seq`` is the inbound spool sequence number it came from.
    """

    resource: dict[str, Any]
    scope_name: str
    scope_version: str
    time_ns: int
    trace_id: str | None
    span_id: str | None
    body: Any
    attrs: dict[str, Any]
    event_name: str | None
    severity_number: int = 0
    seq: int = 0
    #: Set by the mapper: the record's ``relay.model.Outcome`` value (forwarded / filtered).
    outcome: str | None = None

    @property
    def is_claude_code(self) -> bool:
        """True for Claude Code's event scope (``com.anthropic.claude_code.events``)."""
        return self.scope_name.startswith(CLAUDE_CODE_SCOPE_PREFIX)


@dataclass
class SpanView:
    """One OTLP span with its resource and scope; ``raw`` is the span as it came (its serialized protobuf ``Span``),
    whose attributes ``attrs`` decodes when first read (views built by ``iter_spans``).

    ``status_code`` is the OTLP enum value (0 unset, 1 ok, 2 error). ``events`` are ``(name, time_ns, attrs)``.
    """

    resource: dict[str, Any]
    scope_name: str
    scope_version: str
    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    kind: int
    start_ns: int
    end_ns: int
    attrs: dict[str, Any]
    status_code: int
    status_message: str
    events: list[tuple[str, int, dict[str, Any]]] = field(default_factory=list)
    raw: bytes | None = None
    seq: int = 0
    #: Set by the mapper: the record's ``relay.model.Outcome`` value (forwarded / filtered).
    outcome: str | None = None

    @property
    def is_claude_code(self) -> bool:
        """True for Claude Code's tracing scope (``com.anthropic.claude_code.tracing``)."""
        return self.scope_name.startswith(CLAUDE_CODE_SCOPE_PREFIX)


class _LazyAttrs:
    """``SpanView.attrs`` of views built by ``iter_spans``: decoded from ``raw`` on first read and then stored on the
    instance (a non-data descriptor, so later reads are plain attribute reads). An open trace thus holds its spans
    as their protobuf bytes, not as dicts of Python objects, and attributes are turned into Python values once, when
    the trace is mapped.

    Bytes, not the decoded upb message: a upb message keeps the arena of its whole request alive, so one span of a
    request held open would hold every span of it; measured on 512-span GenAI requests, an open span costs ~1.6 KB
    as bytes and ~3.6 KB as a message (``bench/ingest.py``'s bodies), for the same CPU (re-parsing one span's bytes
    is about as fast as reading the attributes out of the big request's arena)."""

    def __get__(self, obj: SpanView | None, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        raw = obj.raw
        a = obj.__dict__["attrs"] = attrs_to_dict(Span.FromString(raw).attributes) if raw is not None else {}
        return a


SpanView.attrs = _LazyAttrs()  # type: ignore[assignment]


def iter_logs(req: ExportLogsServiceRequest, seq: int = 0) -> Iterator[LogView]:
    """Every log record of a request as a ``LogView``."""
    for rl in req.resource_logs:
        resource = attrs_to_dict(rl.resource.attributes)
        for sl in rl.scope_logs:
            sname, sver = sl.scope.name, sl.scope.version
            for r in sl.log_records:
                attrs = attrs_to_dict(r.attributes)
                ev = attrs.get("event.name")
                if not isinstance(ev, str) or not ev:
                    ev = r.event_name or None
                body = any_to_py(r.body)
                yield LogView(
                    resource=resource,
                    scope_name=sname,
                    scope_version=sver,
                    time_ns=r.time_unix_nano or r.observed_time_unix_nano,
                    trace_id=hex_id(r.trace_id),
                    span_id=hex_id(r.span_id),
                    body=body,
                    attrs=attrs,
                    event_name=ev,
                    severity_number=r.severity_number,
                    seq=seq,
                )


def iter_spans(req: ExportTraceServiceRequest, seq: int = 0) -> Iterator[SpanView]:
    """Every span of a request as a ``SpanView`` (spans with invalid ids are skipped: the receiver rejects them)."""
    for rs in req.resource_spans:
        resource = attrs_to_dict(rs.resource.attributes)
        for ss in rs.scope_spans:
            sname, sver = ss.scope.name, ss.scope.version
            for s in ss.spans:
                tid, sid = hex_id(s.trace_id), hex_id(s.span_id)
                if tid is None or sid is None:
                    continue
                view = SpanView(
                    resource=resource,
                    scope_name=sname,
                    scope_version=sver,
                    trace_id=tid,
                    span_id=sid,
                    parent_id=hex_id(s.parent_span_id),
                    name=s.name,
                    kind=s.kind,
                    start_ns=s.start_time_unix_nano,
                    end_ns=s.end_time_unix_nano,
                    attrs=None,  # type: ignore[arg-type]
                    status_code=s.status.code,
                    status_message=s.status.message,
                    events=[(e.name, e.time_unix_nano, attrs_to_dict(e.attributes)) for e in s.events]
                    if s.events
                    else [],
                    raw=s.SerializeToString(),
                    seq=seq,
                )
                del view.__dict__["attrs"]  # decoded from raw by _LazyAttrs when the mapper reads it
                yield view
