"""Oracle: what Langfuse v4 would store from received OTLP spans (Langfuse's attribute
mapping, https://langfuse.com/integrations/native/opentelemetry, as implemented upstream in langfuse/langfuse
``packages/shared/src/server/otel/OtelIngestionProcessor.ts``; prices from
``worker/src/constants/default-model-prices.json``).

Two halves: (1) decoding + whole-request validation of OTLP trace exports exactly as the fake server applies them
(:class:`ReceivedSpan`, :func:`spans_from_proto`, :func:`spans_from_json`; upstream ``getOtelIdRejectionReason`` /
``validateOtelSpanIds`` in ``packages/shared/src/server/otel/utils.ts``), and (2) the mapping below.

A re-implementation of the span → observation/trace mapping of upstream
``packages/shared/src/server/otel/OtelIngestionProcessor.ts`` and ``ObservationTypeMapper.ts`` (v4 direct
"events" path), restricted to what relay produces or must avoid. Framework-specific rules (Vercel AI SDK, LiveKit,
Logfire, …) are left out. Inputs are the fake's :class:`~tests.fakes.langfuse.ReceivedSpan` (any object with the
same attributes works). Times are unix **nanoseconds**; costs are **USD**; usage values are token counts.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

__all__ = [
    "LangfuseView",
    "TraceView",
    "ObservationView",
    "langfuse_view",
    "PRICES",
    "normalise_environment",
    "ReceivedSpan",
    "SpanEvent",
    "spans_from_proto",
    "spans_from_json",
]

_HEX = re.compile(r"^[0-9a-fA-F]+$")

_TYPES = {"span", "generation", "event", "embedding", "agent", "tool", "chain", "retriever", "guardrail", "evaluator"}
_OPENINFERENCE = {
    "CHAIN": "CHAIN",
    "RETRIEVER": "RETRIEVER",
    "LLM": "GENERATION",
    "EMBEDDING": "EMBEDDING",
    "AGENT": "AGENT",
    "TOOL": "TOOL",
    "GUARDRAIL": "GUARDRAIL",
    "EVALUATOR": "EVALUATOR",
}
_GENAI_OPERATION = {
    "chat": "GENERATION",
    "completion": "GENERATION",
    "text_completion": "GENERATION",
    "generate_content": "GENERATION",
    "generate": "GENERATION",
    "embeddings": "EMBEDDING",
    "invoke_agent": "AGENT",
    "create_agent": "AGENT",
    "execute_tool": "TOOL",
}
_MODEL_KEYS = [
    "langfuse.observation.model.name",
    "gen_ai.response.model",
    "ai.model.id",
    "gen_ai.request.model",
    "llm.response.model",
    "llm.model_name",
    "model",
]
_TYPE_MODEL_KEYS = [
    "langfuse.observation.model.name",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "llm.model_name",
    "model",
]
_IO_KEYS = [
    ("langfuse.observation.input", "langfuse.observation.output"),
    ("input.value", "output.value"),
    ("input", "output"),
    ("gen_ai.input.messages", "gen_ai.output.messages"),
    ("gen_ai.tool.call.arguments", "gen_ai.tool.call.result"),
]
_USAGE_KEY_MAP = {
    "prompt_tokens": "input",
    "completion_tokens": "output",
    "total_tokens": "total",
    "input_tokens": "input",
    "output_tokens": "output",
    "prompt": "input",
    "completion": "output",
    "cache_read.input_tokens": "input_cached_tokens",
    "cache_read_input_tokens": "input_cached_tokens",
    "cache_creation.input_tokens": "input_cache_creation",
    "cache_creation_input_tokens": "input_cache_creation",
}

# A few entries of Langfuse's default price table (langfuse/langfuse
# ``worker/src/constants/default-model-prices.json``; USD per token). Patterns are anchored and
# case-insensitive like upstream's ``matchPattern``: a suffixed or unknown id (``claude-opus-5-5``) gets no cost.
_P4 = {
    "input": ("input", "input_tokens"),
    "output": ("output", "output_tokens"),
    "read": ("cache_read_input_tokens", "input_cached_tokens", "input_cache_read"),
    "w5m": ("cache_creation_input_tokens", "input_cache_creation", "input_cache_creation_5m"),
    "w1h": ("input_cache_creation_1h",),
}
_P5 = {
    "input": ("input",),
    "output": ("output",),
    "read": ("cache_read_input_tokens",),
    "w5m": ("input_cache_creation_5m",),
    "w1h": ("input_cache_creation_1h",),
}


def _prices(aliases: dict[str, tuple[str, ...]], **usd: float) -> dict[str, float]:
    return {key: usd[bucket] for bucket, keys in aliases.items() for key in keys}


PRICES: list[tuple[str, re.Pattern[str], dict[str, float]]] = [
    (
        "claude-sonnet-4-5",
        re.compile(r"^(anthropic/)?claude-sonnet-4-5(-20250929)?$", re.I),
        _prices(_P4, input=3e-6, output=1.5e-5, read=3e-7, w5m=3.75e-6, w1h=6e-6),
    ),
    (
        "claude-haiku-4-5",
        re.compile(r"^(anthropic/)?claude-haiku-4-5(-20251001)?$", re.I),
        _prices(_P4, input=1e-6, output=5e-6, read=1e-7, w5m=1.25e-6, w1h=2e-6),
    ),
    (
        "claude-opus-5",
        re.compile(r"^(anthropic/)?claude-opus-5$", re.I),
        _prices(_P5, input=5e-6, output=2.5e-5, read=5e-7, w5m=6.25e-6, w1h=1e-5),
    ),
    (
        "claude-sonnet-5",
        re.compile(r"^(anthropic/)?claude-sonnet-5$", re.I),
        _prices(_P5, input=2e-6, output=1e-5, read=2e-7, w5m=2.5e-6, w1h=4e-6),
    ),
]
"""``(name, anchored pattern, {usage_key: USD per token})`` — a subset of upstream's default table."""


# ----------------------------------------------------------------------------------------------------------- received spans
@dataclass(frozen=True)
class SpanEvent:
    """An OTLP span event: ``name``, ``time_ns`` (unix ns or None) and plain-Python ``attributes``."""

    name: str
    time_ns: int | None
    attributes: dict[str, Any]


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as Langfuse received it, decoded from protobuf or OTLP/JSON.

    Ids are lower-case hex for binary ids (strings sent in JSON are kept as sent, like upstream ``parseId``);
    ``parent_span_id`` is None for a root. ``start_ns``/``end_ns`` are unix ns, None when absent/zero.
    ``attributes``/``resource_attributes``/``scope_attributes`` map keys to str/int/float/bool/bytes/list/dict.
    ``status_code`` is the OTLP enum (0 UNSET, 1 OK, 2 ERROR). ``project`` is the authenticated project id.
    """

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: int = 0
    start_ns: int | None = None
    end_ns: int | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    resource_attributes: dict[str, Any] = field(default_factory=dict)
    scope_name: str = ""
    scope_version: str = ""
    scope_attributes: dict[str, Any] = field(default_factory=dict)
    status_code: int = 0
    status_message: str = ""
    events: tuple[SpanEvent, ...] = ()
    project: str | None = None
    public_key: str | None = None
    request_index: int | None = None


# ----------------------------------------------------------------------------------------------------------- decoding
class _Reject(Exception):
    """A 400 with ``{"error": message}`` from the traces handler."""


def _any_to_py(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_any_to_py(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _any_to_py(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind)


def _json_any_to_py(v: Any) -> Any:
    if not isinstance(v, dict):
        return v
    if "stringValue" in v:
        return v["stringValue"]
    if "boolValue" in v:
        return bool(v["boolValue"])
    if "intValue" in v:
        return int(v["intValue"])
    if "doubleValue" in v:
        return float(v["doubleValue"])
    if "bytesValue" in v:
        return base64.b64decode(v["bytesValue"])
    if "arrayValue" in v:
        return [_json_any_to_py(x) for x in (v["arrayValue"] or {}).get("values") or []]
    if "kvlistValue" in v:
        return _json_attrs((v["kvlistValue"] or {}).get("values") or [])
    return None


def _json_attrs(attrs: Any) -> dict[str, Any]:
    return {a.get("key"): _json_any_to_py(a.get("value") or {}) for a in attrs or [] if isinstance(a, dict)}


def _id_problem(value: Any, nbytes: int) -> str | None:
    """Upstream ``getOtelIdRejectionReason``: None if usable, else absent/wrong_length/all_zero/not_an_id."""
    if isinstance(value, dict) and "data" in value:
        value = value["data"]
    if value is None:
        return "absent"
    if isinstance(value, str):
        if not value:
            return "absent"
        if not _HEX.match(value):
            return None  # non-hex strings (e.g. base64) pass through upstream
        if len(value) != nbytes * 2:
            return "wrong_length"
        return "all_zero" if set(value) == {"0"} else None
    if isinstance(value, (bytes, list)):
        if len(value) != nbytes:
            return "wrong_length"
        return "all_zero" if all((int(b) & 0xFF) == 0 for b in value) else None
    return "not_an_id"


def _id_str(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("data")
    if isinstance(value, str):
        return value
    return bytes(int(b) & 0xFF for b in value).hex() if isinstance(value, list) else bytes(value).hex()


def _validate(resource_spans: list[tuple[Any, Any, list]], from_json: bool) -> None:
    """Whole-request validation (upstream otel/v1/traces handler); raises :class:`_Reject` naming the problems."""
    total = invalid = 0
    reasons: dict[str, int] = {}
    scopes: list[str] = []
    malformed = 0
    for _res, scope, spans in resource_spans:
        if spans is None:
            malformed += 1
            continue
        for sp in spans:
            total += 1
            bad = []
            for key, n in (("traceId", 16), ("spanId", 8)):
                reason = _id_problem(sp.get(key), n)
                if reason:
                    bad.append(f"{key}:{reason}")
            for key in ("attributes", "events") if from_json else ():
                if sp.get(key) is not None and not isinstance(sp.get(key), list):
                    bad.append(f"{key}:not_an_array")
            if bad:
                invalid += 1
                for r in bad:
                    reasons[r] = reasons.get(r, 0) + 1
                name = (scope or {}).get("name")
                if name and name not in scopes:
                    scopes.append(name)
    if invalid or malformed:
        problems = []
        if invalid:
            problems.append(f"{invalid} of {total} span(s) cannot be processed")
        if malformed:
            problems.append(f"{malformed} resource- or scope-level field(s) are present but not arrays")
        raise _Reject(
            f"Invalid OTLP trace export: {'; '.join(problems)} ({', '.join(reasons)}). The entire export was "
            f"rejected and no spans were ingested. Instrumentation scopes: {', '.join(scopes) or 'unknown'}. "
            "This endpoint accepts OpenTelemetry traces only — if you are exporting OpenTelemetry logs, point "
            "your log exporter elsewhere."
        )


def _proto_as_json_shape(req: ExportTraceServiceRequest) -> list[tuple[Any, Any, list]]:
    out = []
    for rs in req.resource_spans:
        res = {"attributes": {kv.key: _any_to_py(kv.value) for kv in rs.resource.attributes}}
        for ss in rs.scope_spans:
            scope = {
                "name": ss.scope.name,
                "version": ss.scope.version,
                "attributes": {kv.key: _any_to_py(kv.value) for kv in ss.scope.attributes},
            }
            spans = [
                {
                    "traceId": sp.trace_id or None,
                    "spanId": sp.span_id or None,
                    "parentSpanId": sp.parent_span_id or None,
                    "name": sp.name,
                    "kind": sp.kind,
                    "startTimeUnixNano": sp.start_time_unix_nano or None,
                    "endTimeUnixNano": sp.end_time_unix_nano or None,
                    "attributes": {kv.key: _any_to_py(kv.value) for kv in sp.attributes},
                    "events": [
                        SpanEvent(
                            e.name, e.time_unix_nano or None, {kv.key: _any_to_py(kv.value) for kv in e.attributes}
                        )
                        for e in sp.events
                    ],
                    "status": {"code": sp.status.code, "message": sp.status.message},
                }
                for sp in ss.spans
            ]
            out.append((res, scope, spans))
    return out


def _json_shape(doc: Any) -> list[tuple[Any, Any, list | None]]:
    rs_list = doc.get("resourceSpans") if isinstance(doc, dict) else None
    if rs_list is None:
        return []
    if not isinstance(rs_list, list):
        return [({}, {}, None)]
    out: list[tuple[Any, Any, list | None]] = []
    for rs in rs_list:
        if not isinstance(rs, dict):
            continue
        res = rs.get("resource") or {}
        scope_spans = rs.get("scopeSpans")
        if scope_spans is not None and not isinstance(scope_spans, list):
            out.append((res, {}, None))
            continue
        for ss in scope_spans or []:
            spans = (ss or {}).get("spans")
            if spans is not None and not isinstance(spans, list):
                out.append((res, (ss or {}).get("scope"), None))
                continue
            out.append((res, (ss or {}).get("scope") or {}, [s if isinstance(s, dict) else {} for s in spans or []]))
    return out


def _to_int(v: Any) -> int | None:
    try:
        return int(v) or None
    except (TypeError, ValueError):
        return None


def _enum_int(v: Any) -> int:
    """OTLP/JSON enums are integers; tolerate status-code names too."""
    names = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}
    return names.get(v, 0) if isinstance(v, str) and not v.isdigit() else int(v or 0)


def _build_spans(shape: list[tuple[Any, Any, list | None]], from_json: bool, **extra: Any) -> list[ReceivedSpan]:
    out = []
    for res, scope, spans in shape:
        res_attrs = _json_attrs(res.get("attributes")) if from_json else res["attributes"]
        scope = scope or {}
        scope_attrs = _json_attrs(scope.get("attributes")) if from_json else scope.get("attributes", {})
        for sp in spans or []:
            events = sp.get("events") or []
            if from_json:
                events = [
                    SpanEvent(e.get("name", ""), _to_int(e.get("timeUnixNano")), _json_attrs(e.get("attributes")))
                    for e in events
                ]
            status = sp.get("status") or {}
            out.append(
                ReceivedSpan(
                    trace_id=_id_str(sp["traceId"]),
                    span_id=_id_str(sp["spanId"]),
                    parent_span_id=_id_str(sp["parentSpanId"]) if sp.get("parentSpanId") else None,
                    name=sp.get("name") or "",
                    kind=_enum_int(sp.get("kind")),
                    start_ns=_to_int(sp.get("startTimeUnixNano")),
                    end_ns=_to_int(sp.get("endTimeUnixNano")),
                    attributes=_json_attrs(sp.get("attributes")) if from_json else sp["attributes"],
                    resource_attributes=res_attrs,
                    scope_name=scope.get("name") or "",
                    scope_version=scope.get("version") or "",
                    scope_attributes=scope_attrs,
                    status_code=_enum_int(status.get("code")),
                    status_message=status.get("message") or "",
                    events=tuple(events),
                    **extra,
                )
            )
    return out


def spans_from_proto(req: ExportTraceServiceRequest | bytes, **extra: Any) -> list[ReceivedSpan]:
    """Decode an ``ExportTraceServiceRequest`` (message or serialized bytes) into :class:`ReceivedSpan` s.

    Validates like the server and raises ``ValueError`` with the server's message on a bad span id.
    ``extra`` sets ``project``/``public_key``/``request_index`` on every span. Handy for oracle unit tests.
    """
    if isinstance(req, (bytes, bytearray)):
        req = ExportTraceServiceRequest.FromString(bytes(req))
    shape = _proto_as_json_shape(req)
    try:
        _validate(shape, False)
    except _Reject as e:
        raise ValueError(str(e)) from None
    return _build_spans(shape, False, **extra)


def spans_from_json(doc: dict | str | bytes, **extra: Any) -> list[ReceivedSpan]:
    """Decode an OTLP/JSON trace export (hex ids, ``[{key,value}]`` attributes) like :func:`spans_from_proto`."""
    if not isinstance(doc, dict):
        doc = json.loads(doc)
    shape = _json_shape(doc)
    try:
        _validate(shape, True)
    except _Reject as e:
        raise ValueError(str(e)) from None
    return _build_spans(shape, True, **extra)


@dataclass
class ObservationView:
    """One stored observation (a span). ``type`` is upper-case (SPAN, GENERATION, TOOL, AGENT, …); ``level`` one of
    DEBUG/DEFAULT/WARNING/ERROR; ``usage_details`` token counts by usage key (``total`` added as the sum when
    absent); ``cost_details`` USD by usage key + ``total``; ``cost_inferred`` is True when the cost came from
    :data:`PRICES` rather than from the span. Trace-level fields read from *this* span are kept too
    (``trace_name``, ``user_id``, …) so tests can check they were copied onto every span (v4)."""

    id: str
    trace_id: str
    parent_id: str | None
    name: str
    type: str
    level: str
    status_message: str | None
    start_ns: int
    end_ns: int
    model: str | None = None
    model_parameters: dict[str, Any] = field(default_factory=dict)
    usage_details: dict[str, float] = field(default_factory=dict)
    cost_details: dict[str, float] = field(default_factory=dict)
    cost_inferred: bool = False
    completion_start_time: str | None = None
    input: Any = None
    output: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)
    is_root: bool = False
    environment: str = "default"
    release: str | None = None
    version: str | None = None
    trace_name: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    tags: list[str] = field(default_factory=list)
    trace_metadata: dict[str, Any] = field(default_factory=dict)
    span_name: str = ""
    project: str | None = None

    @property
    def total_cost(self) -> float:
        """``cost_details["total"]`` in USD (0.0 when there is no cost)."""
        return float(self.cost_details.get("total", 0.0))


@dataclass
class TraceView:
    """A trace as the v4 UI shows it, aggregated over its observations (root first, then by start time):
    first non-empty name/user/session/release/version, union of tags, merged metadata (root wins), environment of
    the root (else first observation), input/output of the root observation (v4)."""

    id: str
    name: str | None
    user_id: str | None
    session_id: str | None
    tags: list[str]
    metadata: dict[str, Any]
    environment: str
    release: str | None
    version: str | None
    input: Any
    output: Any
    observation_ids: list[str]
    timestamp_ns: int


@dataclass
class LangfuseView:
    """What Langfuse would store: ``observations`` (list — v4 keeps every copy of a re-sent span id), ``traces`` by
    trace id, ``sessions`` session id → set of trace ids."""

    observations: list[ObservationView]
    traces: dict[str, TraceView]
    sessions: dict[str, set[str]]

    def by_type(self, t: str) -> list[ObservationView]:
        """Observations of type ``t`` (case-insensitive, e.g. ``"generation"``)."""
        return [o for o in self.observations if o.type == t.upper()]

    def generations(self) -> list[ObservationView]:
        """``by_type("GENERATION")``."""
        return self.by_type("GENERATION")

    def tools(self) -> list[ObservationView]:
        """``by_type("TOOL")``."""
        return self.by_type("TOOL")

    def observation(self, obs_id: str) -> ObservationView:
        """The first observation with id ``obs_id`` (``KeyError`` if none)."""
        for o in self.observations:
            if o.id == obs_id:
                return o
        raise KeyError(obs_id)

    def total_cost(self, trace_id: str | None = None) -> float:
        """Sum of observation ``cost_details["total"]`` in USD, duplicates counted (as v4 aggregates them)."""
        return sum(o.total_cost for o in self.observations if trace_id in (None, o.trace_id))

    @property
    def duplicate_observation_ids(self) -> dict[str, int]:
        """``{observation_id: copies}`` for ids stored more than once (export-once violations)."""
        counts: dict[str, int] = {}
        for o in self.observations:
            counts[o.id] = counts.get(o.id, 0) + 1
        return {k: n for k, n in counts.items() if n > 1}


# ----------------------------------------------------------------------------------------------------------- mapping
def _truthy(v: Any) -> bool:
    """JavaScript truthiness (upstream uses ``if (attributes[key])``)."""
    return v is not None and v is not False and v != "" and not (isinstance(v, (int, float)) and v == 0)


def _js_str(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, separators=(",", ":"), default=str)


def _first(attrs: dict[str, Any], keys: Iterable[str]) -> str | None:
    for k in keys:
        if _truthy(attrs.get(k)):
            return _js_str(attrs[k])
    return None


def _json_obj(v: Any) -> dict[str, Any] | None:
    if isinstance(v, dict):
        return v
    if isinstance(v, str):
        try:
            parsed = json.loads(v)
        except ValueError:
            return None
        return parsed if isinstance(parsed, dict) else None
    return None


def normalise_environment(value: Any) -> str:
    """Langfuse's environment rule: lower-case, strip a leading ``langfuse-``/``langfuse_``, ≤ 40 chars and
    ``^[a-z0-9-_]+$``, else ``default``."""
    env = str(value).lower()
    env = re.sub(r"^langfuse[-_]", "", env)
    return env if len(env) <= 40 and re.fullmatch(r"[a-z0-9\-_]+", env) else "default"


def _environment(attrs: dict[str, Any], res: dict[str, Any]) -> str:
    for key in ("langfuse.environment", "deployment.environment.name", "deployment.environment"):
        for source in (attrs, res):
            if _truthy(source.get(key)):
                return normalise_environment(source[key])
    return "default"


def _observation_type(attrs: dict[str, Any]) -> str:
    """``ObservationTypeMapper.ts`` priority chain (minus Vercel/LiveKit/old-Python-SDK rules)."""
    direct = attrs.get("langfuse.observation.type")
    if isinstance(direct, str) and direct in _TYPES:
        return direct.upper()
    for key, table in (("openinference.span.kind", _OPENINFERENCE), ("gen_ai.operation.name", _GENAI_OPERATION)):
        if isinstance(attrs.get(key), str) and attrs[key] in table:
            return table[attrs[key]]
    if _truthy(attrs.get("gen_ai.tool.name")) or _truthy(attrs.get("gen_ai.tool.call.id")):
        return "TOOL"
    if any(_truthy(attrs.get(k)) for k in _TYPE_MODEL_KEYS):
        return "GENERATION"
    return "SPAN"


def _usage(attrs: dict[str, Any]) -> dict[str, float]:
    """Usage: ``langfuse.observation.usage_details`` (JSON object string; a non-string value → ``{}``) else the
    generic ``gen_ai.usage.*`` / ``llm.token_count.*`` normalisation with ``input -= cache_read + cache_creation``
    (floored at 0). Non-numeric values are dropped; ``total`` = sum of the others when absent."""
    raw = attrs.get("langfuse.observation.usage_details")
    usage: dict[str, float] | None = None
    if _truthy(raw):
        if not isinstance(raw, str):
            return {}
        parsed = _json_obj(raw)
        if parsed is not None:
            usage = {k: v for k, v in parsed.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if usage is None:
        usage = {}
        for key, value in attrs.items():
            if key.startswith("gen_ai.usage.") and key != "gen_ai.usage.cost" or key.startswith("llm.token_count."):
                short = key.removeprefix("gen_ai.usage.").removeprefix("llm.token_count.")
                try:
                    number = float(value) if not isinstance(value, bool) else None
                except (TypeError, ValueError):
                    number = None
                if number is not None:
                    usage[_USAGE_KEY_MAP.get(short, short)] = int(number) if number.is_integer() else number
        cached = usage.get("input_cached_tokens", 0) + usage.get("input_cache_creation", 0)
        if cached and "input" in usage:
            usage["input"] = max(usage["input"] - cached, 0)
    if usage and "total" not in usage:
        usage["total"] = sum(usage.values())
    return usage


def _cost(attrs: dict[str, Any], model: str | None, usage: dict[str, float]) -> tuple[dict[str, float], bool]:
    """Cost: ``langfuse.observation.cost_details`` JSON > ``gen_ai.usage.cost`` > ``llm.cost.total``; if
    any is given Langfuse prices nothing. Otherwise Σ usage[key] × price[key] for a model matching :data:`PRICES`."""
    given = (
        _json_obj(attrs.get("langfuse.observation.cost_details"))
        if _truthy(attrs.get("langfuse.observation.cost_details"))
        else None
    )
    if given is None:
        for key in ("gen_ai.usage.cost", "llm.cost.total"):
            if _truthy(attrs.get(key)):
                given = {"total": attrs[key]}
                break
    if given:
        cost = {k: float(v) for k, v in given.items() if isinstance(v, (int, float, str)) and _is_number(v)}
        if cost and "total" not in cost:
            cost["total"] = sum(cost.values())
        return cost, False
    for _name, pattern, prices in PRICES:
        if model and pattern.match(model):
            cost = {k: usage[k] * p for k, p in prices.items() if k in usage and k != "total"}
            if cost:
                cost["total"] = sum(cost.values())
            return cost, bool(cost)
    return {}, False


def _is_number(v: Any) -> bool:
    try:
        float(v)
        return not isinstance(v, bool)
    except (TypeError, ValueError):
        return False


def _tags(attrs: dict[str, Any]) -> list[str]:
    value = None
    for key in (
        "langfuse.trace.tags",
        "langfuse.tags",
        "langfuse.observation.metadata.langfuse_tags",
        "langfuse.trace.metadata.langfuse_tags",
        "ai.telemetry.metadata.tags",
        "tag.tags",
    ):
        if _truthy(attrs.get(key)) or isinstance(attrs.get(key), list):
            value = attrs[key]
            break
    if value is None:
        return []
    if isinstance(value, list):
        return [_js_str(t) for t in value]
    if isinstance(value, str):
        if value.strip().startswith("["):
            try:
                parsed = json.loads(value)
                if isinstance(parsed, list):
                    return [_js_str(t) for t in parsed]
            except ValueError:
                pass
        return [t.strip() for t in value.split(",")] if "," in value else [value]
    return []


def _metadata(attrs: dict[str, Any], domain: str) -> dict[str, Any]:
    """``extractMetadata``: ``langfuse.<domain>.metadata`` (JSON object) + each ``langfuse.<domain>.metadata.<k>``."""
    prefix = f"langfuse.{domain}.metadata"
    out = dict(_json_obj(attrs.get(prefix) or attrs.get("langfuse.metadata")) or {})
    for key, value in attrs.items():
        for p in (prefix, "langfuse.metadata"):
            if key.startswith(p + "."):
                out[key[len(p) + 1 :]] = value
    return out


def _session_id(attrs: dict[str, Any]) -> str | None:
    sid = _first(
        attrs,
        [
            "langfuse.session.id",
            "session.id",
            "gen_ai.conversation.id",
            "langfuse.observation.metadata.langfuse_session_id",
            "langfuse.trace.metadata.langfuse_session_id",
            "ai.telemetry.metadata.sessionId",
        ],
    )
    return sid if sid is not None and len(sid) < 200 and sid.isascii() else None


def _observation(span: Any) -> ObservationView:
    attrs, res = dict(span.attributes), dict(span.resource_attributes)
    now = time.time_ns()
    start = span.start_ns or span.end_ns or now
    end = span.end_ns or span.start_ns or now
    model = _first(attrs, _MODEL_KEYS)
    usage = _usage(attrs)
    cost, inferred = _cost(attrs, model, usage)
    name = _first(attrs, ["gen_ai.tool.name", "logfire.msg"]) or attrs.get("ai.toolCall.name") or span.name
    io_input = io_output = None
    for in_key, out_key in _IO_KEYS:
        if _truthy(attrs.get(in_key)) or _truthy(attrs.get(out_key)):
            io_input, io_output = attrs.get(in_key), attrs.get(out_key)
            break
    io_keys = {k for pair in _IO_KEYS for k in pair}
    params = _json_obj(attrs.get("langfuse.observation.model.parameters"))
    if params is None:
        params = {
            k.removeprefix("gen_ai.request."): v
            for k, v in attrs.items()
            if k.startswith("gen_ai.request.") and k != "gen_ai.request.model"
        }
    cst = attrs.get("langfuse.observation.completion_start_time")
    if isinstance(cst, str) and cst.startswith('"'):
        cst = json.loads(cst)
    level = attrs.get("langfuse.observation.level")
    return ObservationView(
        id=span.span_id,
        trace_id=span.trace_id,
        parent_id=span.parent_span_id,
        name=_js_str(name),
        type=_observation_type(attrs),
        level=str(level).upper() if _truthy(level) else ("ERROR" if span.status_code == 2 else "DEFAULT"),
        status_message=_first(attrs, ["langfuse.observation.status_message"]) or span.status_message or None,
        start_ns=start,
        end_ns=end,
        model=model,
        model_parameters=params,
        usage_details=usage,
        cost_details=cost,
        cost_inferred=inferred,
        completion_start_time=cst if isinstance(cst, str) else None,
        input=io_input,
        output=io_output,
        metadata={
            **_metadata(attrs, "observation"),
            "attributes": {k: _js_str(v) for k, v in attrs.items() if k not in io_keys},
            "resourceAttributes": res,
            "scope": {
                "name": span.scope_name,
                "version": span.scope_version,
                "attributes": dict(span.scope_attributes),
            },
        },
        is_root=not span.parent_span_id or str(attrs.get("langfuse.internal.as_root")).lower() == "true",
        environment=_environment(attrs, res),
        release=_first(attrs, ["langfuse.release"]) or _first(res, ["langfuse.release"]),
        version=_first(attrs, ["langfuse.version"]) or _first(res, ["service.version"]),
        trace_name=_first(attrs, ["langfuse.trace.name"]),
        user_id=_first(
            attrs,
            [
                "langfuse.user.id",
                "user.id",
                "langfuse.observation.metadata.langfuse_user_id",
                "langfuse.trace.metadata.langfuse_user_id",
                "ai.telemetry.metadata.userId",
            ],
        ),
        session_id=_session_id(attrs),
        tags=_tags(attrs),
        trace_metadata=_metadata(attrs, "trace"),
        span_name=span.name,
        project=getattr(span, "project", None),
    )


def langfuse_view(spans: Iterable[Any]) -> LangfuseView:
    """Map received spans to what Langfuse v4 stores (attribute mapping): one :class:`ObservationView` per span
    (duplicates kept), :class:`TraceView` s aggregated per trace id, and sessions → trace ids.

    Trace fields come from span attributes only (never resource attributes), except environment (span, then
    resource, per key) and release/version (span, then resource ``langfuse.release`` / ``service.version``).
    """
    observations = [_observation(s) for s in spans]
    by_trace: dict[str, list[ObservationView]] = {}
    for o in observations:
        by_trace.setdefault(o.trace_id, []).append(o)
    traces: dict[str, TraceView] = {}
    sessions: dict[str, set[str]] = {}
    for tid, obs in by_trace.items():
        ordered = sorted(obs, key=lambda o: (not o.is_root, o.start_ns))
        root = next((o for o in ordered if o.is_root), None)
        pick = functools.partial(_first_set, ordered)
        tags: list[str] = []
        metadata: dict[str, Any] = {}
        for o in ordered:
            tags += [t for t in o.tags if t not in tags]
            for k, v in o.trace_metadata.items():
                metadata.setdefault(k, v)
        session = pick("session_id")
        traces[tid] = TraceView(
            id=tid,
            name=pick("trace_name"),
            user_id=pick("user_id"),
            session_id=session,
            tags=tags,
            metadata=metadata,
            environment=(root or ordered[0]).environment,
            release=pick("release"),
            version=pick("version"),
            input=root.input if root else None,
            output=root.output if root else None,
            observation_ids=[o.id for o in ordered],
            timestamp_ns=min(o.start_ns for o in obs),
        )
        for o in obs:
            if o.session_id:
                sessions.setdefault(o.session_id, set()).add(tid)
    return LangfuseView(observations=observations, traces=traces, sessions=sessions)


def _first_set(observations: list[Any], attr: str) -> Any:
    """The first truthy ``attr`` of ``observations`` (None when none has it)."""
    return next((getattr(o, attr) for o in observations if getattr(o, attr)), None)
