"""One usage normaliser for every OpenTelemetry instrumentation family: span attributes → token buckets and cost.

The same :class:`Usage` feeds the usage ledger (``UsageRecord`` token fields, ``cost_nanos``) and the Langfuse export
(``usage_details`` / ``cost_details``), so the two always agree.

Token buckets (Anthropic's meaning, the ledger's): ``input`` = input tokens NOT read from or written to a cache,
``output`` (includes reasoning tokens in every family mapped here), ``cache_read``, ``cache_creation`` (writes; split
into 5-minute and 1-hour TTL when the library says so, else counted as 5-minute writes, Anthropic's default TTL).

The table :data:`TOKEN_KEYS` maps each attribute to a bucket, in precedence order (first present key wins), and
says where each mapping comes from:

- OpenTelemetry GenAI semantic conventions, current and ``gen_ai_latest_experimental`` names
  (https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-spans/, attribute registry
  https://opentelemetry.io/docs/specs/semconv/registry/attributes/gen-ai/): ``gen_ai.usage.input_tokens``
  (INCLUDES cached tokens), ``gen_ai.usage.output_tokens``, ``gen_ai.usage.cache_read.input_tokens``,
  ``gen_ai.usage.cache_creation.input_tokens``, ``gen_ai.usage.reasoning.output_tokens``; the deprecated
  ``gen_ai.usage.prompt_tokens`` / ``completion_tokens``.
- The Anthropic Python SDK's own ``anthropic.messages.create`` spans (anthropic ≥ 2.x, package
  https://pypi.org/project/anthropic/, source https://github.com/anthropics/anthropic-sdk-python
  ``src/anthropic/_tracing.py``): semconv names with input INCLUDING cache, cache writes as
  ``gen_ai.usage.cache_write.input_tokens`` and the TTL split as
  ``anthropic.usage.cache_creation.ephemeral_{5m,1h}_input_tokens``. Claude Code 2.1.332 uses the same
  ``cache_write`` name on its ``claude_code.llm_request`` spans.
- OpenInference (https://github.com/Arize-ai/openinference/blob/main/spec/semantic_conventions.md):
  ``llm.token_count.prompt`` (INCLUDES cache), ``llm.token_count.completion``,
  ``llm.token_count.prompt_details.cache_read`` / ``cache_write``, ``llm.token_count.completion_details.reasoning``,
  ``llm.token_count.total``; cost ``llm.cost.total`` (else ``llm.cost.prompt`` + ``llm.cost.completion``), USD.
- OpenLLMetry / Traceloop (https://github.com/traceloop/openllmetry, ``opentelemetry-semantic-conventions-ai``):
  semconv names plus ``gen_ai.usage.cache_read_input_tokens``, ``gen_ai.usage.cache_creation_input_tokens``,
  ``gen_ai.usage.reasoning_tokens``, ``llm.usage.total_tokens``.
- OpenLIT (https://docs.openlit.io/latest/sdk/features/tracing): semconv token names and ``gen_ai.usage.cost``
  (USD; **0 when its price list does not know the model** — treated as unknown, see below); for Anthropic its
  ``gen_ai.usage.input_tokens`` EXCLUDES cache (Anthropic's meaning).
- Langfuse SDK (https://langfuse.com/docs/observability/features/token-and-cost-tracking):
  ``langfuse.observation.usage_details`` (JSON object) in Langfuse's schema (``input`` excludes cache;
  ``cache_read_input_tokens`` / ``input_cached_tokens`` / ``input_cache_read``, ``input_cache_creation[_5m|_1h]``
  / ``cache_creation_input_tokens``, ``output``), OpenAI's (``prompt_tokens`` incl. cache,
  ``completion_tokens``, nested ``prompt_tokens_details.cached_tokens``,
  ``completion_tokens_details.reasoning_tokens``; Responses API ``input_tokens`` + ``input_tokens_details``) or
  Anthropic's (``input_tokens`` excl. cache, ``cache_read_input_tokens``, ``cache_creation_input_tokens``,
  ``cache_creation.ephemeral_{5m,1h}_input_tokens``); ``langfuse.observation.cost_details`` (JSON, USD).
- Vercel AI SDK (https://ai-sdk.dev/docs/ai-sdk-core/telemetry): ``ai.usage.inputTokens`` (v5/v6, incl. cache) /
  ``ai.usage.promptTokens`` (v4), ``ai.usage.outputTokens`` / ``completionTokens``, ``ai.usage.cachedInputTokens``,
  ``ai.usage.reasoningTokens``; v6 adds ``ai.usage.inputTokenDetails.{cacheReadTokens,cacheWriteTokens}``. Its
  ``.doGenerate`` / ``.doStream`` spans also carry ``gen_ai.usage.input_tokens`` (incl. cache, without the cache
  counts): the buckets are read independently, so the cache counts come from the ``ai.usage.*`` keys. Its outer
  ``ai.generateText`` / ``ai.streamText`` / ``…Object`` spans repeat the summed usage of their ``.doGenerate`` /
  ``.doStream`` children: only the children are LLM calls (:func:`is_aggregate`).
- Pydantic AI / Logfire (https://ai.pydantic.dev/logfire/, https://logfire.pydantic.dev/docs/): semconv names
  (input INCLUDES cache) plus ``gen_ai.usage.details.cache_read_tokens`` / ``cache_write_tokens`` /
  ``reasoning_tokens``; cost ``operation.cost`` (USD).
- Google GenAI SDK instrumentation (https://pypi.org/project/opentelemetry-instrumentation-google-genai/): semconv
  names (``prompt_token_count`` as input, incl. cached content).
- Sentry's AI conventions (https://develop.sentry.dev/sdk/telemetry/traces/modules/ai-agents/):
  ``gen_ai.usage.input_tokens.cached``, ``gen_ai.usage.input_tokens.cache_write``,
  ``gen_ai.usage.output_tokens.reasoning``.

Input meaning: with the OTel meaning the reported input includes cache reads and writes and relay subtracts them;
with Anthropic's meaning it does not. The family's known meaning decides (:data:`EXCLUDES_CACHE`); otherwise a
reported input smaller than cache read + cache creation can only be Anthropic's meaning, and relay does not subtract
(never floors a real count to 0).

Honest cost: a reported cost of 0 with non-zero tokens is "unknown" (OpenLIT, Langfuse wrappers for unknown models),
not free: ``cost_usd`` is None and the ledger prices the call from its own table (``cost_source="computed"``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from relay.otlp.values import as_int, as_str

__all__ = [
    "Usage",
    "json_object",
    "normalise",
    "provider_of",
    "TOKEN_KEYS",
    "COST_KEYS",
    "EXCLUDES_CACHE",
    "is_aggregate",
    "USAGE_ATTRIBUTE_PREFIXES",
    "is_usage_attribute",
]

#: bucket → attribute keys in precedence order (first present wins). Sources in the module docstring.
TOKEN_KEYS: dict[str, tuple[str, ...]] = {
    "input": (
        "gen_ai.usage.input_tokens",  # OTel GenAI semconv; Anthropic SDK; OpenLLMetry; OpenLIT; Pydantic AI
        "gen_ai.usage.prompt_tokens",  # OTel semconv (deprecated); OpenLLMetry (older)
        "llm.token_count.prompt",  # OpenInference
        "ai.usage.inputTokens",  # Vercel AI SDK v5
        "ai.usage.promptTokens",  # Vercel AI SDK v4
    ),
    "output": (
        "gen_ai.usage.output_tokens",
        "gen_ai.usage.completion_tokens",
        "llm.token_count.completion",
        "ai.usage.outputTokens",
        "ai.usage.completionTokens",
    ),
    "cache_read": (
        "gen_ai.usage.cache_read.input_tokens",  # OTel GenAI semconv (latest experimental); Anthropic SDK
        "gen_ai.usage.cache_read_input_tokens",  # OpenLLMetry
        "llm.token_count.prompt_details.cache_read",  # OpenInference
        "gen_ai.usage.details.cache_read_tokens",  # Pydantic AI
        "ai.usage.inputTokenDetails.cacheReadTokens",  # Vercel AI SDK v6
        "ai.usage.cachedInputTokens",  # Vercel AI SDK v5
        "gen_ai.usage.input_tokens.cached",  # Sentry
    ),
    "cache_creation": (
        "gen_ai.usage.cache_creation.input_tokens",  # OTel GenAI semconv (latest experimental)
        "gen_ai.usage.cache_write.input_tokens",  # Anthropic SDK, Claude Code ≥ 2.1.332
        "gen_ai.usage.cache_creation_input_tokens",  # OpenLLMetry
        "llm.token_count.prompt_details.cache_write",  # OpenInference
        "gen_ai.usage.details.cache_write_tokens",  # Pydantic AI
        "ai.usage.inputTokenDetails.cacheWriteTokens",  # Vercel AI SDK v6
        "gen_ai.usage.input_tokens.cache_write",  # Sentry
    ),
    "cache_creation_5m": ("anthropic.usage.cache_creation.ephemeral_5m_input_tokens",),  # Anthropic SDK
    "cache_creation_1h": ("anthropic.usage.cache_creation.ephemeral_1h_input_tokens",),  # Anthropic SDK
    "reasoning": (
        "gen_ai.usage.reasoning.output_tokens",
        "gen_ai.usage.reasoning_tokens",
        "llm.token_count.completion_details.reasoning",
        "gen_ai.usage.details.reasoning_tokens",
        "ai.usage.reasoningTokens",
        "ai.usage.outputTokenDetails.reasoningTokens",
        "gen_ai.usage.output_tokens.reasoning",
    ),
}

#: Reported total cost in USD, precedence order (``langfuse.observation.cost_details`` is read first, as JSON).
COST_KEYS = ("gen_ai.usage.cost", "llm.cost.total", "operation.cost")

#: ``(scope-name prefix, provider)`` pairs whose ``input`` EXCLUDES cache (Anthropic's meaning), e.g. OpenLIT's
#: Anthropic instrumentation. A provider of None matches any provider.
EXCLUDES_CACHE: tuple[tuple[str, str | None], ...] = (("openlit", "anthropic"),)

#: Attribute prefixes that carry usage or cost (dropped from spans that must not count, see ``genai``).
USAGE_ATTRIBUTE_PREFIXES = (
    "gen_ai.usage.",
    "llm.token_count.",
    "llm.usage.",
    "llm.cost.",
    "ai.usage.",
    "anthropic.usage.",
)
_USAGE_EXACT = frozenset({"operation.cost", "langfuse.observation.usage_details", "langfuse.observation.cost_details"})

_VERCEL_AGGREGATES = frozenset({"ai.generateText", "ai.streamText", "ai.generateObject", "ai.streamObject"})


def is_usage_attribute(key: str) -> bool:
    """True for an attribute that carries token usage or cost in any mapped family."""
    return key in _USAGE_EXACT or key.startswith(USAGE_ATTRIBUTE_PREFIXES)


def is_aggregate(name: str, attrs: Mapping[str, Any]) -> bool:
    """True for a span whose usage is the sum of its children's (Vercel AI SDK ``ai.generateText`` …): it is not an
    LLM call and must not be counted (its ``.doGenerate`` / ``.doStream`` children are)."""
    return name in _VERCEL_AGGREGATES


@dataclass(frozen=True)
class Usage:
    """Normalised usage of one LLM call. Token counts are None when the span did not report that bucket.

    ``cost_usd`` is the reported total cost (exact decimal USD) or None when unknown (not reported, or reported as 0
    with tokens). ``source`` names the family/attribute group that provided the tokens (``langfuse``,
    ``openinference``, ``semconv``, ``vercel``…), for metadata.
    """

    input: int | None = None
    output: int | None = None
    cache_read: int | None = None
    cache_creation_5m: int | None = None
    cache_creation_1h: int | None = None
    reasoning: int | None = None
    cost_usd: Decimal | None = None
    source: str | None = None

    @property
    def cache_creation(self) -> int | None:
        """All cache writes (5m + 1h), None when not reported."""
        if self.cache_creation_5m is None and self.cache_creation_1h is None:
            return None
        return (self.cache_creation_5m or 0) + (self.cache_creation_1h or 0)

    @property
    def has_tokens(self) -> bool:
        """True when any token bucket is non-zero."""
        return any((self.input, self.output, self.cache_read, self.cache_creation_5m, self.cache_creation_1h))

    @property
    def empty(self) -> bool:
        """True when nothing at all was reported (no bucket, no cost)."""
        return self.cost_usd is None and all(
            v is None
            for v in (self.input, self.output, self.cache_read, self.cache_creation_5m, self.cache_creation_1h)
        )

    def usage_details(self) -> dict[str, int] | None:
        """Langfuse ``usage_details``: each bucket under exactly one key (``input``, ``output``,
        ``cache_read_input_tokens``, ``input_cache_creation_5m``, ``input_cache_creation_1h``; Langfuse
        prices aliases of one bucket separately, so never two keys for one bucket). None when empty."""
        out = {
            "input": self.input,
            "output": self.output,
            "cache_read_input_tokens": self.cache_read,
            "input_cache_creation_5m": self.cache_creation_5m,
            "input_cache_creation_1h": self.cache_creation_1h,
        }
        clean = {k: v for k, v in out.items() if v is not None}
        return clean or None

    def ledger_tokens(self) -> dict[str, int]:
        """``UsageRecord`` token fields (absent buckets are 0)."""
        c5, c1 = self.cache_creation_5m or 0, self.cache_creation_1h or 0
        return {
            "input_tokens": self.input or 0,
            "output_tokens": self.output or 0,
            "cache_read_tokens": self.cache_read or 0,
            "cache_creation_tokens": c5 + c1,
            "cache_creation_5m_tokens": c5,
            "cache_creation_1h_tokens": c1,
        }

    def merged(self, other: Usage) -> Usage:
        """``self`` with its missing buckets (and cost) taken from ``other`` (another span of the same call)."""

        def pick(a, b):
            return a if a is not None else b

        return Usage(
            pick(self.input, other.input),
            pick(self.output, other.output),
            pick(self.cache_read, other.cache_read),
            pick(self.cache_creation_5m, other.cache_creation_5m),
            pick(self.cache_creation_1h, other.cache_creation_1h),
            pick(self.reasoning, other.reasoning),
            pick(self.cost_usd, other.cost_usd),
            self.source or other.source,
        )


def json_object(value: Any) -> dict[str, Any] | None:
    """``value`` as a dict: a mapping as is, a string holding a JSON object parsed; None otherwise."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return None
        return parsed if isinstance(parsed, dict) else None
    return None


def _count(value: Any, strict: bool = False) -> int | None:
    """A token count: a non-negative integer (integral floats accepted; numeric strings too unless ``strict``, as
    in a JSON ``usage_details`` object, where Langfuse ignores strings), else None."""
    if isinstance(value, bool) or (strict and isinstance(value, str)):
        return None
    if isinstance(value, float):
        return int(value) if value.is_integer() and value >= 0 else None
    n = as_int(value)
    return n if n is not None and n >= 0 else None


def _usd(value: Any) -> Decimal | None:
    """A USD amount as an exact decimal (floats through their shortest ``repr``), None when not a finite number."""
    if value is None or isinstance(value, bool):
        return None
    try:
        d = Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None
    return d if d.is_finite() else None


def _dig(obj: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(p)
    return obj


def _split(total_creation: int | None, m5: int | None, h1: int | None) -> tuple[int | None, int | None]:
    """5m/1h cache writes: the split when reported (any remainder of the total counted as 5m), else all 5m."""
    if m5 is None and h1 is None:
        return total_creation, None
    rest = max(0, (total_creation or 0) - (m5 or 0) - (h1 or 0))
    return (m5 or 0) + rest, h1


def _finish(
    inp: int | None,
    out: int | None,
    read: int | None,
    creation: int | None,
    m5: int | None,
    h1: int | None,
    reasoning: int | None,
    cost: Decimal | None,
    includes_cache: bool | None,
    source: str,
) -> Usage:
    """Apply the input meaning and the honest-cost rule (module docstring)."""
    c5, c1 = _split(creation, m5, h1)
    cached = (read or 0) + (c5 or 0) + (c1 or 0)
    if inp is not None and cached:
        if includes_cache is None:
            includes_cache = inp >= cached  # smaller than the cache alone: Anthropic's meaning
        if includes_cache:
            inp = inp - cached
    usage = Usage(inp, out, read, c5, c1, reasoning, cost, source)
    if cost is not None and cost == 0 and usage.has_tokens:
        usage = Usage(inp, out, read, c5, c1, reasoning, None, source)  # 0 with tokens: unknown, not free
    return usage


def _from_usage_details(blob: Mapping[str, Any], cost: Decimal | None) -> Usage | None:
    """``langfuse.observation.usage_details`` in Langfuse's, OpenAI's or Anthropic's schema (module docstring)."""
    if any(isinstance(v, str) for v in blob.values()):
        return None  # not numbers: Langfuse would not read it either; the attribute passes through untouched

    def n(*path: str) -> int | None:
        return _count(_dig(blob, *path), strict=True)

    def first(*keys: str) -> int | None:
        return next((v for k in keys if (v := n(k)) is not None), None)

    if "prompt_tokens" in blob or "completion_tokens" in blob:  # OpenAI Chat Completions schema
        return _finish(
            n("prompt_tokens"),
            n("completion_tokens"),
            n("prompt_tokens_details", "cached_tokens"),
            None,
            None,
            None,
            n("completion_tokens_details", "reasoning_tokens"),
            cost,
            True,
            "langfuse:openai",
        )
    if "input_tokens_details" in blob or "output_tokens_details" in blob:  # OpenAI Responses schema
        return _finish(
            n("input_tokens"),
            n("output_tokens"),
            n("input_tokens_details", "cached_tokens"),
            None,
            None,
            None,
            n("output_tokens_details", "reasoning_tokens"),
            cost,
            True,
            "langfuse:openai",
        )
    if "input_tokens" in blob and "input" not in blob:  # Anthropic Messages schema
        return _finish(
            n("input_tokens"),
            n("output_tokens"),
            n("cache_read_input_tokens"),
            n("cache_creation_input_tokens"),
            n("cache_creation", "ephemeral_5m_input_tokens"),
            n("cache_creation", "ephemeral_1h_input_tokens"),
            None,
            cost,
            False,
            "langfuse:anthropic",
        )
    # Langfuse's own keys: ``input`` already excludes cache (each bucket is priced under its own key)
    creation = first("input_cache_creation", "cache_creation_input_tokens")
    m5, h1 = n("input_cache_creation_5m"), n("input_cache_creation_1h")
    usage = _finish(
        first("input", "input_tokens"),
        first("output", "output_tokens"),
        first("cache_read_input_tokens", "input_cached_tokens", "input_cache_read"),
        creation,
        m5,
        h1,
        first("output_reasoning_tokens", "reasoning_tokens"),
        cost,
        False,
        "langfuse",
    )
    return None if usage.empty else usage


def _cost(attrs: Mapping[str, Any]) -> Decimal | None:
    details = json_object(attrs.get("langfuse.observation.cost_details"))
    if details:
        total = _usd(details.get("total"))
        if total is None:
            parts = [_usd(v) for k, v in details.items()]
            total = sum((p for p in parts if p is not None), Decimal(0)) if any(p is not None for p in parts) else None
        if total is not None:
            return total
    for key in COST_KEYS:
        if (v := _usd(attrs.get(key))) is not None:
            return v
    prompt, completion = _usd(attrs.get("llm.cost.prompt")), _usd(attrs.get("llm.cost.completion"))
    if prompt is not None or completion is not None:
        return (prompt or Decimal(0)) + (completion or Decimal(0))
    return None


def _includes_cache(scope_name: str, provider: str | None) -> bool | None:
    for prefix, prov in EXCLUDES_CACHE:
        if scope_name.startswith(prefix) and (prov is None or (provider or "").lower() == prov):
            return False
    return None


def normalise(attrs: Mapping[str, Any], scope_name: str = "", provider: str | None = None) -> Usage:
    """The normalised usage of one span's attributes (module docstring): ``langfuse.observation.usage_details``
    when it parses, else the first present key of each bucket in :data:`TOKEN_KEYS`. ``scope_name`` and
    ``provider`` (default: :func:`provider_of` the span, looked up only for spans that report usage) select the
    family's input meaning (:data:`EXCLUDES_CACHE`). Never raises on bad values (they are ignored). An empty
    ``Usage`` when nothing is reported."""
    if attrs.keys().isdisjoint(_USAGE_KEYS):  # most spans (tools, agents, plain spans) report nothing
        return Usage(source="")
    cost = _cost(attrs)
    details = json_object(attrs.get("langfuse.observation.usage_details"))
    if details:
        from_details = _from_usage_details(details, cost)
        if from_details is not None:
            return from_details

    def first(bucket: str) -> tuple[int | None, str | None]:
        for key in TOKEN_KEYS[bucket]:
            raw = attrs.get(key)
            if raw is not None and (v := _count(raw)) is not None:  # most keys are absent: skip _count for them
                return v, key
        return None, None

    inp, inp_key = first("input")
    out, out_key = first("output")
    read, _ = first("cache_read")
    creation, _ = first("cache_creation")
    m5, _ = first("cache_creation_5m")
    h1, _ = first("cache_creation_1h")
    reasoning, _ = first("reasoning")
    key = inp_key or out_key or ""
    source = (
        "openinference" if key.startswith("llm.") else "vercel" if key.startswith("ai.") else "semconv" if key else None
    )
    return _finish(
        inp,
        out,
        read,
        creation,
        m5,
        h1,
        reasoning,
        cost,
        _includes_cache(scope_name, provider if provider is not None else provider_of(attrs, scope_name)),
        source or ("cost" if cost is not None else ""),
    )


#: Every attribute ``normalise`` reads: a span with none of them reports no usage.
_USAGE_KEYS = frozenset(
    {k for keys in TOKEN_KEYS.values() for k in keys}
    | set(COST_KEYS)
    | {
        "llm.cost.prompt",
        "llm.cost.completion",
        "langfuse.observation.usage_details",
        "langfuse.observation.cost_details",
    }
)


def provider_of(attrs: Mapping[str, Any], scope_name: str = "") -> str | None:
    """The LLM provider of a span, lower case: ``gen_ai.provider.name`` > ``gen_ai.system`` > ``llm.provider`` >
    ``llm.system`` > ``ai.model.provider`` (Vercel, ``openai.chat`` → ``openai``) > a provider named in the
    instrumentation scope (``anthropic`` / ``openai`` / ``google`` …); None when unknown."""
    for key in ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system", "ai.model.provider"):
        if v := as_str(attrs.get(key)):
            return v.lower().split(".")[0]
    low = scope_name.lower()
    for name in ("anthropic", "openai", "google", "gemini", "bedrock", "mistral", "cohere", "groq", "vertex"):
        if name in low:
            return name
    return None
