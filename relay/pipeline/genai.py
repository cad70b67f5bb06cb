"""Map one trace of other agents' OpenTelemetry GenAI-semconv spans to Langfuse observations and ledger records.

Spans pass through (ids, parent, name, times, status, events, attributes) with the Langfuse fields made explicit, so
Langfuse does not have to guess (Langfuse's attribute mapping, https://langfuse.com/integrations/native/opentelemetry,
as implemented in langfuse/langfuse ``packages/shared/src/server/otel/OtelIngestionProcessor.ts``; usage and cost:
https://langfuse.com/docs/observability/features/token-and-cost-tracking).
GenAI semantic conventions: https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-spans/ (``gen_ai.usage.
input_tokens`` *includes* cache reads/writes there, so relay subtracts them).

Units: span times are Unix ns, ``duration_ms`` ms, cost USD (``cost_micros`` = micro-USD).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from relay.model import Level, Observation, ObservationType, Outcome, TraceInfo, UsageRecord
from relay.otlp.values import as_float, as_int, as_str
from relay.pipeline.context import MappedTrace, MappingContext
from relay.pipeline.records import SpanView

__all__ = ["map_spans", "observation_type", "usage_details_of", "cost_details_of", "SOURCE"]

#: ``UsageRecord.source`` of records made here.
SOURCE = "otel.genai"
#: Langfuse usage key for cache writes: priced for both Claude 4.x and 5-generation models (langfuse/langfuse
#: ``worker/src/constants/default-model-prices.json``).
CACHE_CREATION_KEY = "input_cache_creation_5m"

_STATUS_ERROR = 2  # OTLP Status.code
_G, _E, _A, _T = ObservationType.GENERATION, ObservationType.EMBEDDING, ObservationType.AGENT, ObservationType.TOOL
#: ``gen_ai.operation.name`` → type (Langfuse's attribute mapping, observation type).
_OPERATION_TYPES = {"chat": _G, "text_completion": _G, "generate_content": _G, "completion": _G, "embeddings": _E,
                    "invoke_agent": _A, "create_agent": _A, "execute_tool": _T}
#: ``openinference.span.kind`` → type (ranks above ``gen_ai.operation.name`` in Langfuse).
_OPENINFERENCE_TYPES = {"LLM": _G, "EMBEDDING": _E, "TOOL": _T, "AGENT": _A, "CHAIN": ObservationType.CHAIN,
                        "RETRIEVER": ObservationType.RETRIEVER, "GUARDRAIL": ObservationType.GUARDRAIL,
                        "EVALUATOR": ObservationType.EVALUATOR}
#: Model attributes in Langfuse's precedence (Langfuse's attribute mapping, model).
_MODEL_KEYS = ("langfuse.observation.model.name", "gen_ai.response.model", "ai.model.id", "gen_ai.request.model",
               "llm.response.model", "llm.model_name", "model")
_LLM_TYPES = (_G, _E)
#: Content sources, first hit wins; the promoted key is removed from the pass-through attributes.
_INPUT_KEYS = ("langfuse.observation.input", "gen_ai.input.messages", "gen_ai.prompt", "input.value",
               "gen_ai.tool.call.arguments")
_OUTPUT_KEYS = ("langfuse.observation.output", "gen_ai.output.messages", "gen_ai.completion", "output.value",
                "gen_ai.tool.call.result")
_CONTENT_KEYS = frozenset(
    _INPUT_KEYS + _OUTPUT_KEYS + ("gen_ai.system_instructions", "langfuse.trace.input", "langfuse.trace.output")
)
_CONTENT_PREFIXES = ("gen_ai.prompt.", "gen_ai.completion.", "llm.input_messages", "llm.output_messages",
                     "llm.prompts")
#: Span events whose attributes are all content (older GenAI semconv put prompts/completions in events).
_CONTENT_EVENT_PREFIXES = ("gen_ai.content.", "gen_ai.choice", "gen_ai.user.", "gen_ai.assistant.",
                           "gen_ai.system.", "gen_ai.tool.message", "gen_ai.client.inference.operation.details")


def _first(maps: Iterable[Mapping[str, Any]], *keys: str) -> str | None:
    """First non-empty string value, key precedence first, then map order."""
    maps = list(maps)
    for key in keys:
        for m in maps:
            if v := as_str(m.get(key)):
                return v
    return None


def observation_type(attrs: Mapping[str, Any]) -> ObservationType:
    """Langfuse type of a span (Langfuse's attribute mapping, observation type): ``langfuse.observation.type`` >
    ``openinference.span.kind`` > ``gen_ai.operation.name`` > any model attribute → GENERATION > SPAN."""
    explicit = as_str(attrs.get("langfuse.observation.type"))
    if explicit and explicit.lower() in ObservationType._value2member_map_:
        return ObservationType(explicit.lower())
    oi = as_str(attrs.get("openinference.span.kind"))
    if oi and oi.upper() in _OPENINFERENCE_TYPES:
        return _OPENINFERENCE_TYPES[oi.upper()]
    op = as_str(attrs.get("gen_ai.operation.name"))
    if op and op.lower() in _OPERATION_TYPES:
        return _OPERATION_TYPES[op.lower()]
    if any(as_str(attrs.get(k)) for k in _MODEL_KEYS):
        return ObservationType.GENERATION
    return ObservationType.SPAN


def _json_object(value: Any) -> dict[str, Any] | None:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return None
        return parsed if isinstance(parsed, dict) else None
    return None


def usage_details_of(attrs: Mapping[str, Any]) -> dict[str, int] | None:
    """Explicit Langfuse ``usage_details`` (token counts) of a span, or None (Langfuse token and cost tracking docs).

    An existing ``langfuse.observation.usage_details`` JSON object wins (integer values only; anything else →
    None so the attribute passes through untouched). Else from ``gen_ai.usage.input_tokens`` (or legacy
    ``prompt_tokens``), ``output_tokens`` (``completion_tokens``), ``cache_read.input_tokens`` and
    ``cache_creation.input_tokens``, with OTel semantics: ``input`` = input − cache read − cache creation, floored
    at 0. Keys: ``input``, ``output``, ``cache_read_input_tokens``, ``input_cache_creation_5m`` (each when reported).
    """
    if "langfuse.observation.usage_details" in attrs:
        parsed = _json_object(attrs["langfuse.observation.usage_details"])
        if not parsed:
            return None
        out: dict[str, int] = {}
        for k, v in parsed.items():
            n = as_int(v)
            if n is None or isinstance(v, str) or (isinstance(v, float) and v != n):
                return None
            out[k] = n
        return out

    def tokens(*keys: str) -> int | None:
        return next((n for k in keys if (n := as_int(attrs.get(k))) is not None), None)

    inp = tokens("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
    reported = {
        "output": tokens("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"),
        "cache_read_input_tokens": tokens("gen_ai.usage.cache_read.input_tokens"),
        CACHE_CREATION_KEY: tokens("gen_ai.usage.cache_creation.input_tokens"),
    }
    if inp is not None:
        cached = (reported["cache_read_input_tokens"] or 0) + (reported[CACHE_CREATION_KEY] or 0)
        reported = {"input": max(0, inp - cached), **reported}
    usage = {k: v for k, v in reported.items() if v is not None}
    return usage or None


def cost_details_of(attrs: Mapping[str, Any]) -> dict[str, float] | None:
    """Explicit Langfuse ``cost_details`` (USD) of a span, or None: an existing ``langfuse.observation.cost_details``
    JSON object of numbers, else ``gen_ai.usage.cost`` / ``llm.cost.total`` as ``{"total": …}`` (Langfuse's
    attribute mapping, cost)."""
    if "langfuse.observation.cost_details" in attrs:
        parsed = _json_object(attrs["langfuse.observation.cost_details"])
        if not parsed:
            return None
        out = {k: as_float(v) for k, v in parsed.items()}
        return None if any(v is None for v in out.values()) else out  # type: ignore[return-value]
    for key in ("gen_ai.usage.cost", "llm.cost.total"):
        if (total := as_float(attrs.get(key))) is not None:
            return {"total": total}
    return None


def _tags_of(value: Any) -> list[str]:
    """``langfuse.trace.tags`` as a list: array attribute, JSON-array string, comma list or single string (Langfuse)."""
    if isinstance(value, (list, tuple)):
        return [s for v in value if (s := as_str(v))]
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = None
            if isinstance(parsed, list):
                return [s for v in parsed if (s := as_str(v))]
        return [t.strip() for t in text.split(",") if t.strip()]
    return []


def _redact(ctx: MappingContext, value: Any) -> Any:
    """``ctx.content`` applied to a whole value: strings directly, containers leaf by leaf (None = drop)."""
    if not ctx.forward_content:
        return None
    if isinstance(value, str):
        return ctx.content(value)

    def walk(v: Any) -> Any:
        if isinstance(v, str):
            r = ctx.content(v)
            return v if r is None else r  # "" and the agent's own "<REDACTED>" stay as they are
        if isinstance(v, Mapping):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [walk(x) for x in v]
        return v

    return walk(value)


def _is_content_key(key: str) -> bool:
    return key in _CONTENT_KEYS or key.startswith(_CONTENT_PREFIXES)


def _content_attrs(ctx: MappingContext, attrs: Mapping[str, Any], all_content: bool = False) -> dict[str, Any]:
    """Attributes with every content value redacted through ``ctx.content`` (dropped when it yields None);
    ``all_content``: every text/structured value counts as content (numbers and booleans are kept)."""
    out: dict[str, Any] = {}
    for k, v in attrs.items():
        if _is_content_key(k) or (all_content and isinstance(v, (str, list, tuple, Mapping))):
            v = _redact(ctx, v)
            if v is None:
                continue
        out[k] = v
    return out


def _trace_info(spans: list[SpanView], root: SpanView, ctx: MappingContext, known: TraceInfo | None) -> TraceInfo:
    """Trace-level fields (Langfuse v4 reads them per span): explicit span attributes on any span (root first) >
    ``known`` > ``ctx`` identity from span then resource attributes."""
    ordered = [root, *(s for s in spans if s is not root)]
    attr_maps = [s.attrs for s in ordered]
    resources: list[Mapping[str, Any]] = []
    for s in ordered:
        if s.resource not in resources:
            resources.append(s.resource)
    identity = ctx.identity(*attr_maps, *resources)
    k = known or TraceInfo(trace_id=root.trace_id)

    user = _first(attr_maps, "langfuse.user.id", "user.id", "enduser.id") or k.user_id or identity.user_id
    session = _first(attr_maps, "langfuse.session.id", "session.id", "gen_ai.conversation.id") or k.session_id
    name = _first(attr_maps, "langfuse.trace.name")
    if not name:
        name = root.name if root.parent_id is None else (k.name or root.name)

    tags: list[str] = []
    for t in [*k.tags, *identity.tags, *(t for m in attr_maps for t in _tags_of(m.get("langfuse.trace.tags")))]:
        if t not in tags:
            tags.append(t)
    metadata: dict[str, str] = dict(k.metadata)
    metadata.update(identity.metadata)
    for m in reversed(attr_maps):  # root's values win
        blob = _json_object(m.get("langfuse.trace.metadata")) or {}
        metadata.update({kk: s for kk, v in blob.items() if (s := as_str(v))})
        prefix = "langfuse.trace.metadata."
        metadata.update({kk[len(prefix):]: s for kk, v in m.items() if kk.startswith(prefix) and (s := as_str(v))})

    return TraceInfo(
        trace_id=root.trace_id,
        name=name,
        user_id=user,
        session_id=session,
        tags=tags,
        metadata=metadata,
        environment=ctx.environment_of(*attr_maps, *resources) or k.environment,
        release=ctx.release or _first([*attr_maps, *resources], "langfuse.release") or k.release,
        version=_first(attr_maps, "langfuse.version") or k.version,
        resource=dict(root.resource) or dict(k.resource),
    )


def _observation(view: SpanView, ctx: MappingContext) -> Observation:
    """One span as an Observation with explicit Langfuse fields (Langfuse's attribute mapping)."""
    a = view.attrs
    otype = observation_type(a)
    attrs = _content_attrs(ctx, a)
    inp = out = None
    for keys, is_input in ((_INPUT_KEYS, True), (_OUTPUT_KEYS, False)):
        for key in keys:
            if key in a:
                value = attrs.pop(key, None)  # promoted (already redacted): not sent twice
                if is_input:
                    inp = value
                else:
                    out = value
                break

    explicit_level = as_str(a.get("langfuse.observation.level"))
    if explicit_level and explicit_level.upper() in Level._value2member_map_:
        level = Level(explicit_level.upper())
    else:
        level = Level.ERROR if view.status_code == _STATUS_ERROR else Level.DEFAULT

    params = _json_object(a.get("langfuse.observation.model.parameters"))
    if params is None and otype in _LLM_TYPES:
        prefix = "gen_ai.request."
        params = {k[len(prefix):]: v for k, v in a.items() if k.startswith(prefix) and k != "gen_ai.request.model"}

    events = [
        (name, time_ns, _content_attrs(ctx, ev_attrs, all_content=name.startswith(_CONTENT_EVENT_PREFIXES)))
        for name, time_ns, ev_attrs in view.events
    ]

    return Observation(
        id=view.span_id,
        trace_id=view.trace_id,
        name=view.name,
        type=otype,
        start_ns=view.start_ns,
        end_ns=view.end_ns,
        parent_id=view.parent_id,
        level=level,
        status_message=as_str(a.get("langfuse.observation.status_message")) or view.status_message or None,
        model=_first([a], *_MODEL_KEYS),
        model_parameters=params or None,
        usage_details=usage_details_of(a),
        cost_details=cost_details_of(a),
        input=inp,
        output=out,
        attributes=attrs,
        events=events,
        status_error=view.status_code == _STATUS_ERROR,
    )


def _usage_tokens(usage: Mapping[str, int] | None) -> dict[str, int]:
    """Ledger token fields from Langfuse usage keys (input excludes cache, as in the ledger's Anthropic semantics)."""
    u = dict(usage or {})

    def take(*keys: str) -> int:
        return sum(int(u.get(k) or 0) for k in keys)

    c5m = take("input_cache_creation_5m", "input_cache_creation", "cache_creation_input_tokens")
    c1h = take("input_cache_creation_1h")
    return {
        "input_tokens": take("input", "input_tokens"),
        "output_tokens": take("output", "output_tokens"),
        "cache_read_tokens": take("cache_read_input_tokens", "input_cached_tokens", "input_cache_read"),
        "cache_creation_tokens": c5m + c1h,
        "cache_creation_5m_tokens": c5m,
        "cache_creation_1h_tokens": c1h,
    }


def _usage_record(
    view: SpanView, obs: Observation, trace: TraceInfo, ctx: MappingContext, root: SpanView
) -> UsageRecord | None:
    """The ledger record of a generation/embedding (``llm``) or tool (``tool``) span, else None."""
    a = view.attrs
    if obs.type in _LLM_TYPES:
        kind = "llm"
    elif obs.type == ObservationType.TOOL:
        kind = "tool"
    else:
        return None
    failed = view.status_code == _STATUS_ERROR
    record = UsageRecord(
        key=f"{kind}:{view.trace_id}:{view.span_id}",
        kind=kind,
        time_ns=view.start_ns or view.end_ns,
        tenant=ctx.tenant,
        session_id=trace.session_id,
        trace_id=view.trace_id,
        user=trace.user_id,
        # identity labels (team.id, department…) of this span, else the root's, else the resource's; the pipeline
        # merges the tenant's labels over them (relay.usage.labels)
        labels=dict(ctx.identity(a, root.attrs, view.resource).metadata),
        agent=_first([a, root.attrs, view.resource], "gen_ai.agent.name", "service.name"),
        duration_ms=(view.end_ns - view.start_ns) / 1e6 if view.end_ns and view.start_ns else None,
        success=not failed,
        status_code=as_int(a.get("http.response.status_code")),
        error_class=as_str(a.get("error.type")),
        error=(obs.status_message if failed else None),
        source=SOURCE,
    )
    if kind == "tool":
        record.tool_name = as_str(a.get("gen_ai.tool.name")) or view.name
        return record
    record.model = obs.model
    for field_name, n in _usage_tokens(obs.usage_details).items():
        setattr(record, field_name, n)
    if obs.cost_details:
        total = obs.cost_details.get("total")
        total = sum(obs.cost_details.values()) if total is None else total
        record.cost_micros = round(total * 1e6)
        record.cost_source = "reported"
    return record


def _root_of(spans: list[SpanView]) -> SpanView:
    """The trace's root: the earliest span without a parent, else the earliest whose parent is not in the batch."""
    ids = {s.span_id for s in spans}
    for candidates in ([s for s in spans if s.parent_id is None], [s for s in spans if s.parent_id not in ids], spans):
        if candidates:
            return min(candidates, key=lambda s: (s.start_ns, s.span_id))
    raise ValueError("no spans")


def map_spans(spans: list[SpanView], ctx: MappingContext, known: TraceInfo | None = None) -> MappedTrace:
    """Map all spans of ONE trace (GenAI semconv or any other non-Claude-Code agent) to a ``MappedTrace``.

    - ``trace``: a ``TraceInfo`` with user, session, name, tags, metadata, environment, release, version and the
      root span's resource (see ``_trace_info``); the encoder copies it onto every span (Langfuse v4 reads it per span);
    - ``observations``: one per span, in input order, ids/parent/name/times (ns)/status/events kept, content
      redacted through ``ctx.content`` and promoted to input/output, type/level/model/usage/cost explicit;
    - ``usage``: one ``llm`` record per generation or embedding, one ``tool`` record per tool span.

    ``known`` is the TraceInfo already exported for this trace (late spans), used to fill gaps. Each view's
    ``outcome`` is set to ``forwarded``. An empty list gives an empty ``MappedTrace``.
    """
    if not spans:
        return MappedTrace()
    trace_ids = {s.trace_id for s in spans}
    if len(trace_ids) != 1:
        raise ValueError(f"map_spans expects one trace, got {sorted(trace_ids)}")
    root = _root_of(spans)
    trace = _trace_info(spans, root, ctx, known)
    mapped = MappedTrace(trace=trace)
    for view in spans:
        obs = _observation(view, ctx)
        mapped.observations.append(obs)
        if (record := _usage_record(view, obs, trace, ctx, root)) is not None:
            mapped.usage.append(record)
        view.outcome = Outcome.FORWARDED.value
    return mapped
