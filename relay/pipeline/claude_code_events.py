"""Parsing half of the Claude Code mapper: dedupes one interaction's records and sorts them into typed buckets.

Pure functions and small dataclasses only; the assembly into Langfuse observations is in
``relay.pipeline.claude_code``. Sources: Claude Code's docs (https://code.claude.com/docs/en/monitoring-usage,
"Events", "Traces (beta)", "Standard attributes"), corrected by what is observed in Claude Code's exports
(``tests/fixtures/claude-code/``: event/span correlation, attribute types, 529 without status code, dedupe keys);
Langfuse's attribute mapping (https://langfuse.com/integrations/native/opentelemetry) and usage keys
(https://langfuse.com/docs/observability/features/token-and-cost-tracking).

Units: record times are Unix **nanoseconds**; Claude Code durations (``duration_ms``, ``ttft_ms``) are
**milliseconds**; costs are **USD** (``cost_usd`` float, kept as integer **nano-USD** in the ledger) or
**micro-USD** (``cost_usd_micros`` int, rounded). All numeric attributes go through the tolerant coercers of
``relay.otlp.values`` because several arrive as strings (observed).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from itertools import groupby
from operator import itemgetter
from typing import Any

from relay.model import usd_to_nanos
from relay.otlp.values import as_bool, as_float, as_int, as_str
from relay.pipeline.records import LogView, SpanView

__all__ = [
    "SPAN_INTERACTION",
    "SPAN_LLM",
    "SPAN_TOOL",
    "SPAN_BLOCKED",
    "SPAN_EXECUTION",
    "Collected",
    "collect",
    "derive_span_id",
    "derive_trace_id",
    "ms_to_ns",
    "usage_details",
    "cost_nanos",
    "error_class",
    "is_subagent",
    "span_request_id",
    "span_failed",
    "extra_attributes",
    "clean",
    "agent_key",
    "tool_name",
    "tool_error",
    "model_of",
    "model_parameters",
    "error_span_compatible",
    "AGENT_TOOLS",
]

SPAN_INTERACTION = "claude_code.interaction"
SPAN_LLM = "claude_code.llm_request"
SPAN_TOOL = "claude_code.tool"
SPAN_BLOCKED = "claude_code.tool.blocked_on_user"
SPAN_EXECUTION = "claude_code.tool.execution"

#: Tool names of the subagent launcher (``Task`` before Claude Code 2.1).
AGENT_TOOLS = frozenset({"Agent", "Task"})
#: Max distance (ns) between an ``api_error`` and an ERROR ``llm_request`` span end when no request_id joins them.
ERROR_MATCH_NS = 30_000_000_000

#: Standard attributes copied onto every record (Claude Code docs "Standard attributes"; observed): trace-level
#: facts, never observation attributes (Langfuse's attribute mapping would read ``user.id`` / ``session.id``).
STANDARD_KEYS = frozenset(
    {
        "user.id",
        "session.id",
        "terminal.type",
        "anthropic.provider",
        "anthropic.custom_base_url",
        "app.version",
        "app.entrypoint",
        "organization.id",
        "user.account_uuid",
        "user.account_id",
        "user.email",
        "prompt.id",
        "gen_ai.conversation.id",
        "gen_ai.provider.name",
        "span.type",
        "event.name",
        "event.timestamp",
        "event.sequence",
    }
)
#: Span attributes the mapper turns into Observation fields, per span name.
MAPPED_KEYS = {
    SPAN_INTERACTION: frozenset({"user_prompt", "user_prompt_length", "gen_ai.operation.name"}),
    SPAN_LLM: frozenset(
        {
            # 2.1.332 adds gen_ai.operation.name and gen_ai.usage.* (input INCLUDING cache, cache_write): mapped into
            # usage_details, so not forwarded again (Langfuse would count the cache twice)
            "gen_ai.operation.name",
            "gen_ai.usage.input_tokens",
            "gen_ai.usage.output_tokens",
            "gen_ai.usage.cache_read.input_tokens",
            "gen_ai.usage.cache_write.input_tokens",
            "gen_ai.usage.cache_creation.input_tokens",
            "model",
            "gen_ai.request.model",
            "gen_ai.response.model",
            "input_tokens",
            "output_tokens",
            "cache_read_tokens",
            "cache_creation_tokens",
            "speed",
            "effort",
            "duration_ms",
            "ttft_ms",
            "request_id",
            "gen_ai.response.id",
            "success",
            "error",
            "status_code",
            "error_class",
            "attempt",
            "query_source_safe",
            "agent_id",
        }
    ),
    SPAN_TOOL: frozenset(
        {
            "tool_name",
            "gen_ai.tool.name",
            "gen_ai.operation.name",
            "tool_use_id",
            "gen_ai.tool.call.id",
            "duration_ms",
        }
    ),
}
#: Span attributes that carry user content (commands, paths): forwarded only through ``MappingContext.content``.
CONTENT_KEYS = frozenset({"full_command", "file_path", "bash_command", "output", "content", "diff"})

#: Events that become or feed observations; every other event (startup, hooks, retention…) is filtered.
MAPPED_EVENTS = frozenset(
    {
        "user_prompt",
        "assistant_response",
        "api_request",
        "api_error",
        "api_retries_exhausted",
        "tool_decision",
        "tool_result",
        "subagent_completed",
    }
)


def derive_span_id(kind: str, *parts: Any) -> str:
    """A deterministic 16-hex observation id from Claude Code's own ids (sha256 of ``claude-code/<kind>/…``)."""
    raw = "claude-code/" + kind + "/" + "/".join(str(p) for p in parts)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def derive_trace_id(prompt_id: str) -> str:
    """The 32-hex trace id of an interaction without beta spans: sha256 of ``claude-code/trace/<prompt.id>``."""
    return hashlib.sha256(("claude-code/trace/" + prompt_id).encode()).hexdigest()[:32]


def ms_to_ns(ms: Any) -> int:
    """Milliseconds (any numeric wire type) to nanoseconds; 0 when absent."""
    v = as_float(ms)
    return int(round(v * 1_000_000)) if v and v > 0 else 0


def clean(d: dict[str, Any]) -> dict[str, Any]:
    """``d`` without None values (metadata must stay JSON-able and sparse)."""
    return {k: v for k, v in d.items() if v is not None}


def is_subagent(attrs: dict[str, Any]) -> bool:
    """True when a record belongs to a subagent: ``agent_id`` set or ``query_source`` ``agent:…`` (observed)."""
    if as_str(attrs.get("agent_id")):
        return True
    qs = as_str(attrs.get("query_source")) or as_str(attrs.get("query_source_safe")) or ""
    return qs.startswith("agent:") or qs.startswith("agent.")


def flat_usage(attrs: dict[str, Any]) -> dict[str, Any]:
    """``attrs`` with Claude Code's flat token attributes (``input_tokens`` excl. cache, ``cache_read_tokens``,
    ``cache_creation_tokens``, ``output_tokens``) filled from the OTel GenAI ones when only those are present
    (``claude_code.llm_request`` spans from 2.1.332 carry both; ``gen_ai.usage.input_tokens`` INCLUDES cache there),
    through the one normaliser (``relay.pipeline.genai_usage``). Unchanged when the flat ones are there."""
    if attrs.get("input_tokens") is not None or attrs.get("gen_ai.usage.input_tokens") is None:
        return attrs
    from relay.pipeline.genai_usage import normalise

    u = normalise(attrs, provider="anthropic")
    return {
        **attrs,
        **{
            k: v
            for k, v in (
                ("input_tokens", u.input),
                ("output_tokens", u.output),
                ("cache_read_tokens", u.cache_read),
                ("cache_creation_tokens", u.cache_creation),
            )
            if v is not None
        },
    }


def usage_details(attrs: dict[str, Any]) -> dict[str, int]:
    """Langfuse ``usage_details`` from ``api_request`` or flat ``llm_request`` span attributes (Langfuse usage keys).

    Each token bucket is under exactly one key. Without the 5m/1h split (spans), all of ``cache_creation_tokens``
    goes to ``input_cache_creation_5m``.
    """
    m5, h1 = as_int(attrs.get("cache_creation_5m_tokens")), as_int(attrs.get("cache_creation_1h_tokens"))
    if m5 is None and h1 is None:
        m5 = as_int(attrs.get("cache_creation_tokens"))
    return {
        "input": as_int(attrs.get("input_tokens")) or 0,
        "output": as_int(attrs.get("output_tokens")) or 0,
        "cache_read_input_tokens": as_int(attrs.get("cache_read_tokens")) or 0,
        "input_cache_creation_5m": m5 or 0,
        "input_cache_creation_1h": h1 or 0,
    }


def cost_nanos(attrs: dict[str, Any]) -> int | None:
    """Claude Code's reported cost in integer nano-USD: ``cost_usd`` (a double) rounded to the nearest nano-dollar
    through its shortest decimal form, so float noise never moves it; else ``cost_usd_micros`` × 1000 (that integer
    is already rounded to whole micro-dollars, observed, so it is only a fallback); None when neither is sent."""
    usd = as_float(attrs.get("cost_usd"))
    if usd is not None:
        return usd_to_nanos(usd)
    micros = as_int(attrs.get("cost_usd_micros"))
    return None if micros is None else micros * 1000


def cost_usd(attrs: dict[str, Any]) -> float | None:
    """Claude Code's reported cost in USD for Langfuse's ``cost_details``: the ledger's nano-USD figure / 10⁹, so
    Langfuse and the ledger agree to the nano-dollar."""
    nanos = cost_nanos(attrs)
    return None if nanos is None else nanos / 1_000_000_000


def error_class(status_code: int | None, text: str | None, span_class: str | None = None) -> str:
    """Failure class of an API call from its status code, else the error text or the span's ``error_class`` (observed).

    ``overloaded`` (529, "Overloaded", span ``repeated_529``), ``rate_limit`` (429), ``server_error`` (5xx),
    ``client_error`` (4xx), ``timeout``, ``connection_error``, else ``unknown``.
    """
    if status_code is not None:
        if status_code == 529:
            return "overloaded"
        if status_code == 429:
            return "rate_limit"
        if 500 <= status_code < 600:
            return "server_error"
        if 400 <= status_code < 500:
            return "client_error"
    low = f"{text or ''} {span_class or ''}".lower()
    for needles, cls in (
        (("529", "overloaded"), "overloaded"),
        (("rate_limit", "rate limit", "429"), "rate_limit"),
        (("timeout", "timed out"), "timeout"),
        (("connection", "econn"), "connection_error"),
        (("server_error",), "server_error"),
        (("client_error",), "client_error"),
    ):
        if any(n in low for n in needles):
            return cls
    return "unknown"


def span_request_id(span: SpanView) -> str | None:
    """The API request id of an ``llm_request`` span (``request_id`` = ``gen_ai.response.id``)."""
    return as_str(span.attrs.get("request_id")) or as_str(span.attrs.get("gen_ai.response.id"))


def span_failed(span: SpanView) -> bool:
    """True for an ERROR span or one whose ``success`` attribute is false."""
    return span.status_code == 2 or as_bool(span.attrs.get("success")) is False


def extra_attributes(span: SpanView, ctx: Any) -> dict[str, Any]:
    """Claude Code's own span attributes that the mapper does not turn into fields, for ``Observation.attributes``.

    Standard attributes, copies of resource attributes and mapped keys are dropped; content-bearing keys
    (``full_command``, ``file_path``…) pass through ``ctx.content`` (dropped when content forwarding is off).
    """
    out: dict[str, Any] = {}
    mapped = MAPPED_KEYS.get(span.name, frozenset())
    for k, v in span.attrs.items():
        if k in STANDARD_KEYS or k in mapped or k in span.resource:
            continue
        if k in CONTENT_KEYS:
            v = ctx.content(v)
        if v is not None:
            out[k] = v
    return out


def agent_key(attrs: dict[str, Any]) -> str | None:
    """A subagent's identity: ``agent_id``, else its ``query_source`` (span spelling normalised to ``agent:…``)."""
    if not is_subagent(attrs):
        return None
    qs = as_str(attrs.get("query_source")) or (as_str(attrs.get("query_source_safe")) or "").replace(".", ":")
    return as_str(attrs.get("agent_id")) or qs


def tool_name(span: SpanView | None, attrs: dict[str, Any]) -> str:
    """The span's ``gen_ai.tool.name`` (bare MCP name), else the event's ``tool_name``; for ``mcp_tool`` the
    name from ``tool_parameters`` when tool details are on (observed)."""
    if span is not None:
        name = as_str(span.attrs.get("gen_ai.tool.name")) or as_str(span.attrs.get("tool_name"))
        if name:
            return name
    name = as_str(attrs.get("tool_name")) or "tool"
    if name == "mcp_tool":
        try:
            params = json.loads(attrs.get("tool_parameters") or "{}")
        except (TypeError, ValueError):
            params = {}
        if isinstance(params, dict):
            name = as_str(params.get("mcp_tool_name")) or name
    return name


def tool_error(attrs: dict[str, Any], exe: SpanView | None) -> str:
    """Status message of a failed tool: ``error_type: error`` from the event, else the execution span's."""
    etype, err = as_str(attrs.get("error_type")), as_str(attrs.get("error"))
    if etype and err and etype not in err:
        return f"{etype}: {err}"
    if etype or err:
        return etype or err or ""
    if exe is not None:
        return (
            exe.status_message or as_str(exe.attrs.get("error")) or as_str(exe.attrs.get("error_class")) or "tool_error"
        )
    return "tool_error"


def model_of(a: dict[str, Any], sa: dict[str, Any]) -> str | None:
    """Model id from event attributes ``a``, else from the span's (``model`` > response > request model)."""
    return (
        as_str(a.get("model"))
        or as_str(sa.get("model"))
        or as_str(sa.get("gen_ai.response.model"))
        or as_str(sa.get("gen_ai.request.model"))
    )


def model_parameters(a: dict[str, Any], sa: dict[str, Any]) -> dict[str, Any] | None:
    """Langfuse model parameters (``speed`` selects price tiers, ``effort``) from event or span attributes."""
    return (
        clean(
            {"speed": as_str(a.get("speed") or sa.get("speed")), "effort": as_str(a.get("effort") or sa.get("effort"))}
        )
        or None
    )


def error_span_compatible(ev: LogView, span: SpanView) -> bool:
    """Whether an ``api_error`` without request_id can be the ERROR span's call: same model and attempt when
    both sides say, and the span ended within ``ERROR_MATCH_NS`` of the event."""
    for k in ("model", "attempt"):
        x, y = as_str(ev.attrs.get(k)), as_str(span.attrs.get(k))
        if x and y and x != y:
            return False
    return abs(span.end_ns - ev.time_ns) <= ERROR_MATCH_NS


def _log_key(v: LogView) -> tuple:
    a = v.attrs
    seq = as_int(a.get("event.sequence"))
    if seq is not None:
        return ("seq", as_str(a.get("user.id")), as_str(a.get("session.id")), seq, v.time_ns, v.event_name)
    return ("raw", v.event_name, v.time_ns, json.dumps(a, sort_keys=True, default=str))


def _log_order(v: LogView) -> tuple:
    seq = as_int(v.attrs.get("event.sequence"))
    return (v.time_ns, -1 if seq is None else seq, v.event_name or "")


def _attrs_json(v: LogView) -> str:
    return json.dumps(v.attrs, sort_keys=True, default=str)


def _in_log_order(logs: list[LogView]) -> list[LogView]:
    """``logs`` by (time, event.sequence, event name), ties by their attributes' sorted JSON: the order a sort by the
    whole 4-tuple gives, with the JSON (all of a record's attributes, prompts and tool inputs included) made only
    for the records that tie on the rest — in practice, duplicates."""
    keyed = sorted(((_log_order(v), v) for v in logs), key=itemgetter(0))
    out: list[LogView] = []
    for _, group in groupby(keyed, key=itemgetter(0)):
        tied = [v for _, v in group]
        out.extend(sorted(tied, key=_attrs_json) if len(tied) > 1 else tied)
    return out


@dataclass
class Collected:
    """One interaction's records, deduplicated and keyed by Claude Code's own ids.

    Logs: ``prompts`` (all ``user_prompt``, incl. mid-turn), ``requests``/``responses`` by ``request_id``,
    ``errors``/``exhausted`` in time order, ``decisions``/``results`` by ``tool_use_id``, ``subagents`` by
    ``agent_id``. Spans: the ``interaction`` span, ``llm`` spans, ``tools`` by ``tool_use_id``, ``helpers``
    (``blocked_on_user`` / ``execution``) by span id, ``by_id`` all spans by span id. ``used`` holds ``id()`` of
    the records that were forwarded (became or were merged into an observation).
    """

    logs: list[LogView] = field(default_factory=list)
    prompts: list[LogView] = field(default_factory=list)
    requests: dict[str, LogView] = field(default_factory=dict)
    responses: dict[str, LogView] = field(default_factory=dict)
    main_responses: list[LogView] = field(default_factory=list)
    errors: list[LogView] = field(default_factory=list)
    exhausted: list[LogView] = field(default_factory=list)
    decisions: dict[str, LogView] = field(default_factory=dict)
    results: dict[str, LogView] = field(default_factory=dict)
    subagents: dict[str, LogView] = field(default_factory=dict)
    interaction: SpanView | None = None
    llm: list[SpanView] = field(default_factory=list)
    tools: dict[str, SpanView] = field(default_factory=dict)
    helpers: dict[str, SpanView] = field(default_factory=dict)
    by_id: dict[str, SpanView] = field(default_factory=dict)
    used: set[int] = field(default_factory=set)

    def use(self, *views: LogView | SpanView | None) -> None:
        """Mark records as forwarded."""
        for v in views:
            if v is not None:
                self.used.add(id(v))

    @property
    def empty(self) -> bool:
        """True when nothing here can become an observation."""
        return not (
            self.prompts
            or self.requests
            or self.errors
            or self.exhausted
            or self.results
            or self.decisions
            or self.interaction
            or self.llm
            or self.tools
        )


def _first(bucket: dict[str, Any], key: str, view: Any) -> None:
    if key not in bucket:
        bucket[key] = view


def collect(logs: list[LogView], spans: list[SpanView]) -> Collected:
    """Dedupe and bucket the records (any input order gives the same result: records are sorted first).

    Log duplicates: same (user.id, session.id, event.sequence, time, event) (observed), or the same ``request_id`` /
    ``tool_use_id`` / ``agent_id`` for the events keyed by them. Span duplicates: same span id.
    """
    c = Collected()
    seen: set[tuple] = set()
    for v in _in_log_order(logs):
        key = _log_key(v)
        if key in seen or v.event_name not in MAPPED_EVENTS:
            continue
        seen.add(key)
        a, ev = v.attrs, v.event_name
        c.logs.append(v)
        if ev == "user_prompt":
            c.prompts.append(v)
        elif ev == "api_request":
            rid = as_str(a.get("request_id")) or "seq:" + "/".join(str(x) for x in key[1:5])
            _first(c.requests, rid, v)
        elif ev == "assistant_response":
            response_rid = as_str(a.get("request_id"))
            if response_rid:
                _first(c.responses, response_rid, v)
            if not is_subagent(a) and (not response_rid or c.responses[response_rid] is v):
                c.main_responses.append(v)
        elif ev == "api_error":
            c.errors.append(v)
        elif ev == "api_retries_exhausted":
            c.exhausted.append(v)
        elif ev in ("tool_decision", "tool_result", "subagent_completed"):
            k = as_str(a.get("agent_id" if ev == "subagent_completed" else "tool_use_id"))
            bucket = {"tool_decision": c.decisions, "tool_result": c.results, "subagent_completed": c.subagents}[ev]
            if k:
                _first(bucket, k, v)
    for s in sorted(spans, key=lambda s: (s.start_ns, s.span_id, s.end_ns)):
        if s.span_id in c.by_id:
            continue
        c.by_id[s.span_id] = s
        if s.name == SPAN_INTERACTION:
            c.interaction = c.interaction or s
        elif s.name == SPAN_LLM:
            c.llm.append(s)
        elif s.name == SPAN_TOOL:
            tuid = as_str(s.attrs.get("tool_use_id")) or as_str(s.attrs.get("gen_ai.tool.call.id")) or s.span_id
            _first(c.tools, tuid, s)
        elif s.name in (SPAN_BLOCKED, SPAN_EXECUTION):
            c.helpers[s.span_id] = s
    return c
