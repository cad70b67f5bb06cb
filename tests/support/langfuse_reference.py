"""The upb-based Langfuse encoder relay used before ``relay.otlp.wire`` (``relay.exporters.langfuse_encode`` until
issue 12), kept verbatim as the reference the byte-level encoder must match: it builds the
``ExportTraceServiceRequest`` message field by field with ``relay.otlp.values.dict_to_attrs``, so upb does the
wire encoding. Only the helpers whose code did not change are imported from the production module."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span, Status

from relay.exporters.langfuse_encode import (
    DEFAULT_SERVICE_NAME,
    SCOPE_NAME,
    iso_time,
    normalize_environment,
    relay_version,
    valid_session_id,
)
from relay.model import Level, Observation, TraceInfo
from relay.otlp.values import dict_to_attrs

_TOKEN_PREFIXES = ("gen_ai.usage.", "llm.token_count.")
_COST_KEYS = frozenset({"gen_ai.usage.cost", "llm.cost.total"})


def _json(value: Any, *, sort: bool = False) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=sort, separators=(",", ":"), default=str)


def _content(value: Any) -> str:
    """Input/output/metadata values: strings as-is, anything else as JSON."""
    return value if isinstance(value, str) else _json(value)


def _tags(tags: Iterable[Any]) -> list[str]:
    out: list[str] = []
    for t in tags:
        s = t if isinstance(t, str) else _json(t)
        if s and s not in out:
            out.append(s)
    return out


def trace_attributes(trace: TraceInfo) -> dict[str, Any]:
    """The trace-level Langfuse attributes put on every span (Langfuse v4 reads them per span): ``langfuse.trace.name``,
    ``langfuse.user.id``, ``langfuse.session.id``, ``langfuse.trace.tags`` (array of strings),
    ``langfuse.trace.metadata.<k>`` (sorted, string values), ``langfuse.environment`` (normalised),
    ``langfuse.release``, ``langfuse.version`` — each only when set and valid."""
    out: dict[str, Any] = {}
    if trace.name:
        out["langfuse.trace.name"] = trace.name
    if trace.user_id:
        out["langfuse.user.id"] = trace.user_id
    if session := valid_session_id(trace.session_id):
        out["langfuse.session.id"] = session
    if tags := _tags(trace.tags):
        out["langfuse.trace.tags"] = tags
    for k in sorted(trace.metadata):
        v = trace.metadata[k]
        if v is not None:
            out[f"langfuse.trace.metadata.{k}"] = _content(v)
    if env := normalize_environment(trace.environment):
        out["langfuse.environment"] = env
    if trace.release:
        out["langfuse.release"] = trace.release
    if trace.version:
        out["langfuse.version"] = trace.version
    return out


def observation_attributes(obs: Observation) -> dict[str, Any]:
    """The observation-level Langfuse attributes of one observation (attribute mapping, usage/cost): type, level,
    status message, model (also as ``gen_ai.request.model``/``gen_ai.response.model``), model parameters (JSON),
    ``usage_details`` (JSON object string of ints), ``cost_details`` (JSON object string of USD floats), completion
    start (ISO), input/output and ``langfuse.observation.metadata.<k>`` (sorted)."""
    out: dict[str, Any] = {
        "langfuse.observation.type": str(obs.type),
        "langfuse.observation.level": str(obs.level),
    }
    if obs.status_message:
        out["langfuse.observation.status_message"] = obs.status_message
    if obs.model:
        out["langfuse.observation.model.name"] = obs.model
    if obs.model_parameters:
        out["langfuse.observation.model.parameters"] = _json(obs.model_parameters, sort=True)
    if obs.usage_details is not None:
        usage = {k: int(v) for k, v in obs.usage_details.items() if v is not None}
        out["langfuse.observation.usage_details"] = _json(usage, sort=True)
    if obs.cost_details is not None:
        cost = {k: float(v) for k, v in obs.cost_details.items() if v is not None}
        out["langfuse.observation.cost_details"] = _json(cost, sort=True)
    if obs.completion_start_ns is not None:
        out["langfuse.observation.completion_start_time"] = iso_time(obs.completion_start_ns)
    if obs.input is not None:
        out["langfuse.observation.input"] = _content(obs.input)
    if obs.output is not None:
        out["langfuse.observation.output"] = _content(obs.output)
    for k in sorted(obs.metadata):
        v = obs.metadata[k]
        if v is not None:
            out[f"langfuse.observation.metadata.{k}"] = _content(v)
    return out


def span_attributes(trace: TraceInfo, obs: Observation, trace_attrs: dict[str, Any] | None = None) -> dict[str, Any]:
    """All attributes of the span for ``obs``: its extra ``attributes`` first (minus those Langfuse would use to
    re-derive usage/cost the explicit JSON already states), then the Langfuse attributes, which win.

    - ``usage_details`` set → token attributes ``gen_ai.usage.*`` / ``llm.token_count.*`` are dropped (except the
      cost key ``gen_ai.usage.cost``, which is usage-independent and dropped only when ``cost_details`` is set);
    - ``cost_details`` set → ``gen_ai.usage.cost`` / ``llm.cost.total`` are dropped;
    - a model also fills ``gen_ai.request.model`` / ``gen_ai.response.model`` when the span has none (existing
      values are the agent's own and are kept);
    - user/session: the explicit ``langfuse.user.id`` / ``langfuse.session.id`` outrank raw ``user.id`` /
      ``session.id`` / ``gen_ai.conversation.id`` in Langfuse, so the raw keys are kept as context.

    ``trace_attrs`` is ``trace_attributes(trace)`` when the caller already has it (computed once per trace).
    """
    extra: dict[str, Any] = {}
    for k, v in obs.attributes.items():
        if v is None:
            continue
        if obs.usage_details is not None and k.startswith(_TOKEN_PREFIXES) and k not in _COST_KEYS:
            continue
        if obs.cost_details is not None and (k in _COST_KEYS or k.startswith("llm.cost.")):
            continue
        extra[k] = v
    if obs.model:
        extra.setdefault("gen_ai.request.model", obs.model)
        extra.setdefault("gen_ai.response.model", obs.model)
    extra.update(trace_attributes(trace) if trace_attrs is None else trace_attrs)
    extra.update(observation_attributes(obs))
    return extra


def _id(hex_value: str, size: int, what: str) -> bytes:
    try:
        raw = bytes.fromhex(hex_value)
    except (TypeError, ValueError):
        raw = b""
    if len(raw) != size or not any(raw):
        # Langfuse rejects the whole request for one bad id (upstream otel/v1/traces handler): fail before sending.
        raise ValueError(f"invalid {what} {hex_value!r}: need {size * 2} hex characters, not all zero")
    return raw


def encode_span(
    trace: TraceInfo, obs: Observation, out: Span | None = None, trace_attrs: dict[str, Any] | None = None
) -> Span:
    """One observation as an OTLP ``Span`` (kind INTERNAL). Ids come from lowercase hex (``trace_id`` 32, ``id`` and
    ``parent_id`` 16 characters; ``ValueError`` when invalid); ``start_ns``/``end_ns`` are Unix ns (a missing end
    takes the start); status is ERROR with ``status_message`` when ``status_error`` or level ERROR, else UNSET;
    events are ``(name, time_ns, attributes)``. ``trace_attrs``: see ``span_attributes``."""
    span = Span() if out is None else out
    trace_hex = obs.trace_id or trace.trace_id
    if trace.trace_id and trace_hex != trace.trace_id:
        raise ValueError(f"observation {obs.id} belongs to trace {trace_hex}, not {trace.trace_id}")
    span.trace_id = _id(trace_hex, 16, "trace id")
    span.span_id = _id(obs.id, 8, "span id")
    if obs.parent_id:
        span.parent_span_id = _id(obs.parent_id, 8, "parent span id")
    span.name = obs.name or str(obs.type)
    span.kind = Span.SpanKind.SPAN_KIND_INTERNAL
    span.start_time_unix_nano = obs.start_ns or obs.end_ns or 0
    span.end_time_unix_nano = obs.end_ns or obs.start_ns or 0
    dict_to_attrs(span_attributes(trace, obs, trace_attrs), span.attributes)
    for name, time_ns, attrs in obs.events:
        ev = span.events.add(name=name, time_unix_nano=time_ns)
        dict_to_attrs(attrs, ev.attributes)
    if obs.status_error or obs.level == Level.ERROR:
        span.status.code = Status.StatusCode.STATUS_CODE_ERROR
        if obs.status_message:
            span.status.message = obs.status_message
    return span


def encode_spans(trace: TraceInfo, observations: list[Observation]) -> ResourceSpans:
    """One trace as one OTLP ``ResourceSpans``: resource attributes from ``trace.resource`` (plus ``service.name``
    = ``unknown_service`` when missing); one ``ScopeSpans`` per instrumentation scope — the observation's original
    ``scope`` (name, version), which Langfuse shows as ``metadata.scope``, or ``relay`` at relay's version for
    observations relay made —; one span per observation, in the given order within its scope (see ``encode_span``,
    ``span_attributes``)."""
    rs = ResourceSpans()
    resource: dict[str, Any] = dict(trace.resource)
    if not resource.get("service.name"):
        resource["service.name"] = DEFAULT_SERVICE_NAME
    dict_to_attrs(resource, rs.resource.attributes)
    scopes: dict[tuple[str, str], Any] = {}
    trace_attrs = trace_attributes(trace)  # the same on every span of the trace
    for obs in observations:
        key = obs.scope or (SCOPE_NAME, relay_version())
        ss = scopes.get(key)
        if ss is None:
            ss = scopes[key] = rs.scope_spans.add()
            ss.scope.name, ss.scope.version = key
        encode_span(trace, obs, ss.spans.add(), trace_attrs)
    return rs


def encode_request(items: list[tuple[TraceInfo, list[Observation]]]) -> ExportTraceServiceRequest:
    """An ``ExportTraceServiceRequest`` (the body of ``POST /api/public/otel/v1/traces``) with one
    ``ResourceSpans`` per ``(trace, observations)`` item; items without observations are skipped (OTLP spec:
    senders should not create empty envelopes)."""
    req = ExportTraceServiceRequest()
    for trace, observations in items:
        if observations:
            req.resource_spans.append(encode_spans(trace, observations))
    return req
