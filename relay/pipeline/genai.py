"""Map one trace of other agents' OpenTelemetry GenAI-semconv spans to Langfuse observations and ledger records.

Spans pass through (ids, parent, name, times, status, events, attributes) with the Langfuse fields made explicit, so
Langfuse does not have to guess (Langfuse's attribute mapping, https://langfuse.com/integrations/native/opentelemetry,
as implemented in langfuse/langfuse ``packages/shared/src/server/otel/OtelIngestionProcessor.ts``; usage and cost:
https://langfuse.com/docs/observability/features/token-and-cost-tracking).
GenAI semantic conventions: https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-spans/. Token usage and cost of
every instrumentation family go through ONE normaliser (``relay.pipeline.genai_usage``), which feeds both the
ledger record and the GENERATION's ``usage_details`` / ``cost_details``.

**Counted once.** Two spans describing one LLM call — the same ``gen_ai.response.id``, or an SDK's native client
span (``anthropic.messages.create`` of the Anthropic SDK, scope ``com.anthropic.sdk.python``) next to an
instrumentor's span of the same provider and model whose time overlaps it (its parent, or a sibling for streams) —
give ONE ledger record and ONE GENERATION. The GENERATION is the instrumentor's span (it carries the prompt,
response, parameters and user/session); its usage and cost are the native span's where that reports them (the SDK
reads the provider's response body itself; instrumentors differ, e.g. OpenLLMetry counts a streamed Anthropic
answer's output one token high), completed from the instrumentor's. The native span stays visible as a plain SPAN
without usage or cost (``metadata.relay.counted_in`` names the GENERATION). With several instrumentors on one call
the outermost keeps it. The ledger key is the response id when known, so even spans mapped in different batches
count once. Spans that only repeat their calls' totals — Vercel AI SDK's ``ai.generateText``/``ai.streamText``, an
agent or chain span with usage attributes (Pydantic AI's agent run) — keep no usage or cost
(``metadata.relay.aggregate``).

**Scope.** Each observation keeps its span's instrumentation scope (name, version), which Langfuse shows as
``metadata.scope``.

Units: span times are Unix ns, ``duration_ms`` ms, cost USD in ``cost_details`` and integer nano-USD
(``cost_nanos``) in ledger records.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from relay.model import (
    NANOS_PER_USD,
    Level,
    Observation,
    ObservationType,
    Outcome,
    TraceInfo,
    UsageRecord,
    usd_to_nanos,
)
from relay.otlp.values import as_float, as_int, as_str
from relay.pipeline.context import MappedTrace, MappingContext
from relay.pipeline.genai_usage import (
    Usage,
    is_aggregate,
    is_usage_attribute,
    json_object,
    normalise,
    provider_of,
)
from relay.pipeline.records import SpanView

__all__ = ["map_spans", "observation_type", "usage_details_of", "cost_details_of", "SOURCE", "NATIVE_SCOPE_PREFIXES"]

#: Instrumentation scopes of LLM SDKs' own client spans (the SDK reads the provider's response itself).
NATIVE_SCOPE_PREFIXES = ("com.anthropic.sdk",)

#: ``UsageRecord.source`` of records made here.
SOURCE = "otel.genai"
#: ``worker/src/constants/default-model-prices.json``).

_STATUS_ERROR = 2  # OTLP Status.code
_G, _E, _A, _T = ObservationType.GENERATION, ObservationType.EMBEDDING, ObservationType.AGENT, ObservationType.TOOL
#: ``gen_ai.operation.name`` → type (Langfuse's attribute mapping, observation type).
_OPERATION_TYPES = {
    "chat": _G,
    "text_completion": _G,
    "generate_content": _G,
    "completion": _G,
    "embeddings": _E,
    "invoke_agent": _A,
    "create_agent": _A,
    "execute_tool": _T,
}
#: ``openinference.span.kind`` → type (ranks above ``gen_ai.operation.name`` in Langfuse).
_OPENINFERENCE_TYPES = {
    "LLM": _G,
    "EMBEDDING": _E,
    "TOOL": _T,
    "AGENT": _A,
    "CHAIN": ObservationType.CHAIN,
    "RETRIEVER": ObservationType.RETRIEVER,
    "GUARDRAIL": ObservationType.GUARDRAIL,
    "EVALUATOR": ObservationType.EVALUATOR,
}
#: Model attributes in Langfuse's precedence (Langfuse's attribute mapping, model).
_MODEL_KEYS = (
    "langfuse.observation.model.name",
    "gen_ai.response.model",
    "ai.model.id",
    "gen_ai.request.model",
    "llm.response.model",
    "llm.model_name",
    "model",
)
_LLM_TYPES = (_G, _E)
#: Content sources, first hit wins; the promoted key is removed from the pass-through attributes.
_INPUT_KEYS = (
    "langfuse.observation.input",
    "gen_ai.input.messages",
    "gen_ai.prompt",
    "input.value",
    "gen_ai.tool.call.arguments",
)
_OUTPUT_KEYS = (
    "langfuse.observation.output",
    "gen_ai.output.messages",
    "gen_ai.completion",
    "output.value",
    "gen_ai.tool.call.result",
)
_CONTENT_KEYS = frozenset(
    _INPUT_KEYS + _OUTPUT_KEYS + ("gen_ai.system_instructions", "langfuse.trace.input", "langfuse.trace.output")
)
_CONTENT_PREFIXES = ("gen_ai.prompt.", "gen_ai.completion.", "llm.input_messages", "llm.output_messages", "llm.prompts")
#: Span events whose attributes are all content (older GenAI semconv put prompts/completions in events).
_CONTENT_EVENT_PREFIXES = (
    "gen_ai.content.",
    "gen_ai.choice",
    "gen_ai.user.",
    "gen_ai.assistant.",
    "gen_ai.system.",
    "gen_ai.tool.message",
    "gen_ai.client.inference.operation.details",
)


#: User id conventions, first hit wins (Langfuse's order, https://langfuse.com/integrations/native/opentelemetry):
#: Langfuse SDK, OTel ``user.id`` (also what
#: OpenInference's ``using_attributes(user_id=…)`` sets), ``enduser.id``, Vercel AI SDK telemetry metadata.
USER_KEYS = (
    "langfuse.user.id",
    "user.id",
    "enduser.id",
    "langfuse.observation.metadata.langfuse_user_id",
    "ai.telemetry.metadata.userId",
)
#: Session id conventions: Langfuse SDK, ``session.id`` (OpenInference ``using_attributes(session_id=…)``), OTel
#: GenAI ``gen_ai.conversation.id``, Vercel AI SDK telemetry metadata.
SESSION_KEYS = (
    "langfuse.session.id",
    "session.id",
    "gen_ai.conversation.id",
    "langfuse.observation.metadata.langfuse_session_id",
    "ai.telemetry.metadata.sessionId",
)


def _first(maps: Iterable[Mapping[str, Any]], *keys: str) -> str | None:
    """First non-empty string value, key precedence first, then map order."""
    maps = list(maps)
    for key in keys:
        for m in maps:
            v = m.get(key)
            if v is not None and (v := as_str(v)):
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


def usage_details_of(attrs: Mapping[str, Any], scope_name: str = "") -> dict[str, int] | None:
    """Langfuse ``usage_details`` (token counts) of a span from the one normaliser
    (``relay.pipeline.genai_usage.normalise``), or None when it reports no tokens. Keys: ``input`` (excl. cache),
    ``output``, ``cache_read_input_tokens``, ``input_cache_creation_5m``, ``input_cache_creation_1h`` — each bucket
    under one key."""
    return normalise(attrs, scope_name).usage_details()


def cost_details_of(attrs: Mapping[str, Any], usage: Usage | None = None) -> dict[str, float] | None:
    """Langfuse ``cost_details`` (USD) of a span, or None when its cost is unknown: a valid explicit
    ``langfuse.observation.cost_details`` object as sent (unless its total is 0 while the call used tokens: unknown,
    not free), else ``{"total": …}`` from the normaliser's reported cost (Langfuse's attribute mapping, cost)."""
    usage = usage if usage is not None else normalise(attrs)
    if usage.cost_usd is None:
        return None
    if "langfuse.observation.cost_details" in attrs:
        parsed = json_object(attrs["langfuse.observation.cost_details"])
        if parsed:
            out = {k: as_float(v) for k, v in parsed.items()}
            if all(v is not None for v in out.values()):
                return out  # type: ignore[return-value]
    return {"total": float(usage.cost_usd)}


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


def _content_attrs(ctx: MappingContext, attrs: Mapping[str, Any], all_content: bool = False) -> dict[str, Any]:
    """Attributes with every content value redacted through ``ctx.content`` (dropped when it yields None);
    ``all_content``: every text/structured value counts as content (numbers and booleans are kept)."""
    out: dict[str, Any] = {}
    known = _CONTENT_KEY_CACHE
    for k, v in attrs.items():
        content = known.get(k)
        if content is None:
            content = k in _CONTENT_KEYS or k.startswith(_CONTENT_PREFIXES)
            if len(known) >= _CONTENT_KEY_CACHE_MAX:
                known.clear()
            known[k] = content
        if content or (all_content and isinstance(v, (str, list, tuple, Mapping))):
            v = _redact(ctx, v)
            if v is None:
                continue
        out[k] = v
    return out


#: attribute key → whether it is a content key (``_content_attrs``' memo: attribute names repeat across spans; the
#: cache is cleared when it reaches ``_CONTENT_KEY_CACHE_MAX`` keys, so arbitrary names cannot grow it).
_CONTENT_KEY_CACHE: dict[str, bool] = {}
_CONTENT_KEY_CACHE_MAX = 4096


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

    user = _first(attr_maps, *USER_KEYS) or k.user_id or identity.user_id
    session = _first(attr_maps, *SESSION_KEYS) or k.session_id
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
        blob = json_object(m.get("langfuse.trace.metadata")) or {}
        metadata.update({kk: text for kk, v in blob.items() if (text := as_str(v))})
        prefix = "langfuse.trace.metadata."
        metadata.update(
            {kk[len(prefix) :]: text for kk, v in m.items() if kk.startswith(prefix) and (text := as_str(v))}
        )

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


def _model_of(view: SpanView) -> str | None:
    """The span's model (Langfuse's precedence), else ``model`` of OpenInference's
    ``llm.invocation_parameters`` JSON, else the model in a semconv span name ``"{operation} {model}"`` (errored
    calls often carry no model attribute)."""
    a = view.attrs
    if model := _first([a], *_MODEL_KEYS, "llm.request.model_name"):
        return model
    params = json_object(a.get("llm.invocation_parameters"))
    if params and (model := as_str(params.get("model"))):
        return model
    op, _, rest = view.name.partition(" ")
    llm_op = _OPERATION_TYPES.get(op.lower()) in _LLM_TYPES
    if rest and llm_op and " " not in rest.strip():
        return rest.strip()
    return None


def _type_of(view: SpanView) -> ObservationType:
    """:func:`observation_type`, except that an errored span an LLM instrumentation left without any GenAI attribute
    (OpenLIT 1.45's Anthropic instrumentation on an HTTP error) is a GENERATION when it is named ``"{operation}
    {model}"`` (:func:`_model_of`) by a scope that names a provider (``openlit.instrumentation.anthropic``)."""
    otype = observation_type(view.attrs)
    if (
        otype == ObservationType.SPAN
        and view.status_code == _STATUS_ERROR
        and provider_of(view.attrs, view.scope_name)
        and _model_of(view)
    ):
        return _OPERATION_TYPES.get(view.name.partition(" ")[0].lower(), _G)
    return otype


def _observation(view: SpanView, ctx: MappingContext, usage: Usage) -> Observation:
    """One span as an Observation with explicit Langfuse fields (Langfuse's attribute mapping); ``usage`` is its
    normalised usage
    (``map_spans`` may have replaced it by the usage of the call's other span, or emptied it)."""
    a = view.attrs
    otype = _type_of(view)
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

    params = json_object(a.get("langfuse.observation.model.parameters"))
    if params is None and otype in _LLM_TYPES:
        prefix = "gen_ai.request."
        params = {k[len(prefix) :]: v for k, v in a.items() if k.startswith(prefix) and k != "gen_ai.request.model"}

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
        model=_model_of(view),
        model_parameters=params or None,
        usage_details=usage.usage_details(),
        cost_details=cost_details_of(a, usage),
        input=inp,
        output=out,
        attributes=attrs,
        events=events,
        status_error=view.status_code == _STATUS_ERROR,
        scope=(view.scope_name, view.scope_version) if view.scope_name else None,
    )


def _usage_record(
    view: SpanView,
    obs: Observation,
    trace: TraceInfo,
    ctx: MappingContext,
    root: SpanView,
    usage: Usage,
    key: str | None,
    labels_cache: dict[int, dict[str, str]],
) -> UsageRecord | None:
    """The ledger record of a generation/embedding (``llm``) or tool (``tool``) span, else None. ``usage`` is the
    call's normalised usage; ``key`` overrides the ledger key (the response id of a call described by two spans).
    A call without a reported cost is priced from ``ctx.pricing`` when its model is known (``computed``), and the
    observation's ``cost_details`` get the same figure so Langfuse and the ledger agree. ``labels_cache`` is
    ``_labels``' per-trace cache (shared by the records of one ``map_spans`` call)."""
    a = view.attrs
    if obs.type in _LLM_TYPES:
        kind = "llm"
    elif obs.type == ObservationType.TOOL:
        kind = "tool"
    else:
        return None
    failed = view.status_code == _STATUS_ERROR
    record = UsageRecord(
        key=key or f"{kind}:{view.trace_id}:{view.span_id}",
        kind=kind,
        time_ns=view.start_ns or view.end_ns,
        tenant=ctx.tenant,
        session_id=trace.session_id,
        trace_id=view.trace_id,
        user=trace.user_id,
        # identity labels (team.id, department…) of this span, else the root's, else the resource's; the pipeline
        # merges the tenant's labels over them (relay.usage.labels)
        labels=_labels(ctx, a, root, view, labels_cache),
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
    for field_name, n in usage.ledger_tokens().items():
        setattr(record, field_name, n)
    if usage.cost_usd is not None:
        record.cost_nanos = usd_to_nanos(usage.cost_usd)
        record.cost_source = "reported"
    elif ctx.pricing is not None and usage.has_tokens:
        nanos = ctx.pricing.cost_nanos(record)
        if nanos is not None:
            record.cost_nanos, record.cost_source = nanos, "computed"
            obs.cost_details = {"total": nanos / NANOS_PER_USD}
    if record.cost_source != "none":
        obs.metadata.setdefault("relay.cost_source", record.cost_source)
    return record


def _labels(
    ctx: MappingContext, attrs: Mapping[str, Any], root: SpanView, view: SpanView, cache: dict[int, dict[str, str]]
) -> dict[str, str]:
    """The identity metadata of a span's ledger record: its attributes, then the root's, then the resource's
    (``MappingContext.identity``). Most spans carry no identity attribute of their own: their identity is the
    root's and resource's, computed once per resource of the trace (``cache``, by ``id`` of the resource dict,
    which lives as long as the trace's views)."""
    if not attrs.keys().isdisjoint(ctx.identity_keys):
        return dict(ctx.identity(attrs, root.attrs, view.resource).metadata)
    hit = cache.get(id(view.resource))
    if hit is None:
        hit = cache[id(view.resource)] = ctx.identity(root.attrs, view.resource).metadata
    return dict(hit)


def _root_of(spans: list[SpanView]) -> SpanView:
    """The trace's root: the earliest span without a parent, else the earliest whose parent is not in the batch."""
    ids = {s.span_id for s in spans}
    for candidates in ([s for s in spans if s.parent_id is None], [s for s in spans if s.parent_id not in ids], spans):
        if candidates:
            return min(candidates, key=lambda s: (s.start_ns, s.span_id))
    raise ValueError("no spans")


_EXPLICIT_USAGE = frozenset({"langfuse.observation.usage_details", "langfuse.observation.cost_details"})


def _is_native(view: SpanView) -> bool:
    return view.scope_name.startswith(NATIVE_SCOPE_PREFIXES)


def _same_model(a: str | None, b: str | None) -> bool:
    return a is None or b is None or a == b or a.startswith(b) or b.startswith(a)


def _overlap(x: SpanView, y: SpanView) -> int:
    return min(x.end_ns, y.end_ns) - max(x.start_ns, y.start_ns)


def _calls(llm: list[SpanView], models: dict[str, str | None]) -> list[list[SpanView]]:
    """The LLM spans grouped into calls (module docstring "Counted once"): same ``gen_ai.response.id``, else an
    SDK-native span with the instrumentor span of the same provider and model that overlaps it in time (its parent
    first, else the largest overlap). Groups of one for everything else; input order kept within a group."""
    group_of: dict[str, list[SpanView]] = {}
    by_response: dict[str, list[SpanView]] = {}
    for v in llm:
        rid = as_str(v.attrs.get("gen_ai.response.id"))
        g = by_response.setdefault(rid, []) if rid else []
        g.append(v)
        group_of[v.span_id] = g
    providers = {v.span_id: provider_of(v.attrs, v.scope_name) for v in llm}
    for v in llm:
        g = group_of[v.span_id]
        if not _is_native(v) or any(not _is_native(o) for o in g):
            continue
        cands = [
            o
            for o in llm
            if not _is_native(o)
            and _overlap(o, v) > 0
            and providers[o.span_id] in (None, providers[v.span_id])
            and _same_model(models[o.span_id], models[v.span_id])
            and not any(_is_native(x) for x in group_of[o.span_id])
        ]
        if not cands:
            continue
        parent = next((o for o in cands if o.span_id == v.parent_id), None)
        other = parent or max(cands, key=lambda o: (_overlap(o, v), -o.start_ns, o.span_id))
        og = group_of[other.span_id]
        og.extend(g)
        for x in g:
            group_of[x.span_id] = og
    seen: set[int] = set()
    out = []
    for v in llm:
        g = group_of[v.span_id]
        if id(g) not in seen:
            seen.add(id(g))
            out.append(g)
    return out


def _keeper(call: list[SpanView]) -> SpanView:
    """The span of a call that becomes its GENERATION: the outermost instrumentor span (earliest start, longest),
    else the outermost span."""
    pool = [v for v in call if not _is_native(v)] or call
    return min(pool, key=lambda v: (v.start_ns, -v.end_ns, v.span_id))


def _call_usage(call: list[SpanView], usage: dict[str, Usage]) -> Usage:
    """A call's usage: its native spans' first, completed from the other spans' (module docstring)."""
    ordered = sorted(call, key=lambda v: (not _is_native(v), v.start_ns, v.span_id))
    out = Usage()
    for v in ordered:
        out = out.merged(usage[v.span_id]) if not out.empty else usage[v.span_id]
    return out


def _demote(obs: Observation, keeper_id: str) -> None:
    """Make ``obs`` a plain SPAN without usage or cost (the call is counted in ``keeper_id``)."""
    obs.type = ObservationType.SPAN
    obs.usage_details = obs.cost_details = None
    obs.model = obs.model_parameters = None
    obs.attributes = {k: v for k, v in obs.attributes.items() if not is_usage_attribute(k)}
    obs.metadata["relay.counted_in"] = keeper_id


def map_spans(spans: list[SpanView], ctx: MappingContext, known: TraceInfo | None = None) -> MappedTrace:
    """Map all spans of ONE trace (GenAI semconv or any other non-Claude-Code agent) to a ``MappedTrace``.

    - ``trace``: a ``TraceInfo`` with user, session, name, tags, metadata, environment, release, version and the
      root span's resource (see ``_trace_info``); the encoder copies it onto every span (Langfuse v4 reads it per span);
    - ``observations``: one per span, in input order, ids/parent/name/times (ns)/status/events/scope kept, content
      redacted through ``ctx.content`` and promoted to input/output, type/level/model/usage/cost explicit;
    - ``usage``: one ``llm`` record per LLM call (two spans of one call count once, module docstring), one ``tool``
      record per tool span.

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
    usage = {v.span_id: normalise(v.attrs, v.scope_name) for v in spans}
    obs_of: dict[str, Observation] = {}
    for view in spans:
        obs = _observation(view, ctx, usage[view.span_id])
        if obs.type in _LLM_TYPES and is_aggregate(view.name, view.attrs):
            _demote(obs, "")
            obs.metadata.pop("relay.counted_in")
            obs.metadata["relay.aggregate"] = True  # a sum over its child calls, counted there
        elif obs.type not in _LLM_TYPES and not usage[view.span_id].empty and not _EXPLICIT_USAGE & view.attrs.keys():
            # an agent/chain/tool span repeating its calls' totals (e.g. Pydantic AI's agent run): the calls count;
            # usage the agent stated explicitly for Langfuse (langfuse.observation.usage_details) stays as sent
            obs.usage_details = obs.cost_details = None
            obs.attributes = {k: v for k, v in obs.attributes.items() if not is_usage_attribute(k)}
            obs.metadata["relay.aggregate"] = True
        obs_of.setdefault(view.span_id, obs)
        mapped.observations.append(obs)
        view.outcome = Outcome.FORWARDED.value
    llm = list({v.span_id: v for v in spans if obs_of[v.span_id].type in _LLM_TYPES}.values())
    models = {v.span_id: obs_of[v.span_id].model for v in llm}
    counted: set[str] = set()
    labels_cache: dict[int, dict[str, str]] = {}
    for call in _calls(llm, models):
        keeper = _keeper(call)
        obs = obs_of[keeper.span_id]
        key = None
        if len(call) > 1:
            call_usage = _call_usage(call, usage)
            obs.usage_details = call_usage.usage_details()
            obs.cost_details = cost_details_of(keeper.attrs, call_usage)
            failed = [v for v in call if v.status_code == _STATUS_ERROR]
            if failed and keeper.status_code != _STATUS_ERROR:
                obs.level, obs.status_error = Level.ERROR, True
                obs.status_message = obs.status_message or failed[0].status_message or None
            obs.model = obs.model or next((models[v.span_id] for v in call if models[v.span_id]), None)
            for v in call:
                if v is not keeper:
                    _demote(obs_of[v.span_id], keeper.span_id)
        else:
            call_usage = usage[keeper.span_id]
        rid = next((r for v in call if (r := as_str(v.attrs.get("gen_ai.response.id")))), None)
        if rid:
            key = f"llm:{provider_of(keeper.attrs, keeper.scope_name) or 'unknown'}:{rid}"
        view = (
            keeper
            if keeper.status_code == _STATUS_ERROR or not any(v.status_code == _STATUS_ERROR for v in call)
            else next(v for v in call if v.status_code == _STATUS_ERROR)
        )
        record = _usage_record(keeper, obs, trace, ctx, root, call_usage, key, labels_cache)
        if record is not None:
            if view is not keeper:  # the failure is on the other span of the call
                record.success, record.error = False, obs.status_message
                record.status_code = record.status_code or as_int(view.attrs.get("http.response.status_code"))
                record.error_class = record.error_class or as_str(view.attrs.get("error.type"))
            if record.status_code is None:
                record.status_code = next(
                    (c for v in call if (c := as_int(v.attrs.get("http.response.status_code"))) is not None), None
                )
            if record.key not in counted:
                counted.add(record.key)
                mapped.usage.append(record)
        for v in call:
            counted.add(v.span_id)
    for view in spans:
        obs = obs_of[view.span_id]
        if view.span_id in counted or obs.type != ObservationType.TOOL:
            continue
        counted.add(view.span_id)
        if (record := _usage_record(view, obs, trace, ctx, root, usage[view.span_id], None, labels_cache)) is not None:
            mapped.usage.append(record)
    return mapped
