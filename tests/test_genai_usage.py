"""The one usage normaliser, family by family, with attribute sets as each library documents or sends them (the
recorded real-library exports are exercised end to end in ``test_e2e_genai_families.py``). Expected numbers are
written out by hand: ``input`` is always the non-cached input."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from relay.pipeline.claude_code_events import flat_usage
from relay.pipeline.genai_usage import COST_KEYS, TOKEN_KEYS, Usage, is_aggregate, normalise, provider_of

CASES = [
    # OTel GenAI semconv (latest experimental names): input includes cache
    (
        "semconv",
        {
            "gen_ai.usage.input_tokens": 1200,
            "gen_ai.usage.output_tokens": 300,
            "gen_ai.usage.cache_read.input_tokens": 1000,
            "gen_ai.usage.cache_creation.input_tokens": 100,
            "gen_ai.usage.reasoning.output_tokens": 64,
        },
        "",
        (100, 300, 1000, 100, 0),
    ),
    # Anthropic SDK native span: cache_write + TTL split
    (
        "anthropic-sdk",
        {
            "gen_ai.usage.input_tokens": 1212,
            "gen_ai.usage.output_tokens": 30,
            "gen_ai.usage.cache_read.input_tokens": 1000,
            "gen_ai.usage.cache_write.input_tokens": 200,
            "anthropic.usage.cache_creation.ephemeral_5m_input_tokens": 150,
            "anthropic.usage.cache_creation.ephemeral_1h_input_tokens": 50,
        },
        "com.anthropic.sdk.python",
        (12, 30, 1000, 150, 50),
    ),
    # OpenInference
    (
        "openinference",
        {
            "llm.token_count.prompt": 1212,
            "llm.token_count.completion": 30,
            "llm.token_count.prompt_details.cache_read": 1000,
            "llm.token_count.prompt_details.cache_write": 200,
            "llm.token_count.total": 1242,
        },
        "openinference.instrumentation.anthropic",
        (12, 30, 1000, 200, 0),
    ),
    # OpenLLMetry's own names
    (
        "openllmetry",
        {
            "gen_ai.usage.prompt_tokens": 1212,
            "gen_ai.usage.completion_tokens": 30,
            "gen_ai.usage.cache_read_input_tokens": 1000,
            "gen_ai.usage.cache_creation_input_tokens": 200,
            "llm.usage.total_tokens": 1242,
        },
        "opentelemetry.instrumentation.anthropic",
        (12, 30, 1000, 200, 0),
    ),
    # OpenLIT for Anthropic: input EXCLUDES cache even when it is larger than the cache
    (
        "openlit-anthropic",
        {
            "gen_ai.system": "anthropic",
            "gen_ai.usage.input_tokens": 5000,
            "gen_ai.usage.output_tokens": 30,
            "gen_ai.usage.cache_read_input_tokens": 1000,
        },
        "openlit.instrumentation.anthropic",
        (5000, 30, 1000, 0, 0),
    ),
    # Vercel AI SDK v5 and v4
    (
        "vercel-v5",
        {
            "ai.usage.inputTokens": 1200,
            "ai.usage.outputTokens": 300,
            "ai.usage.cachedInputTokens": 1000,
            "ai.usage.reasoningTokens": 10,
        },
        "ai",
        (200, 300, 1000, 0, 0),
    ),
    ("vercel-v4", {"ai.usage.promptTokens": 7, "ai.usage.completionTokens": 3}, "ai", (7, 3, 0, 0, 0)),
    # Pydantic AI / Logfire
    (
        "pydantic-ai",
        {
            "gen_ai.usage.input_tokens": 1212,
            "gen_ai.usage.output_tokens": 30,
            "gen_ai.usage.details.cache_read_tokens": 1000,
            "gen_ai.usage.details.cache_write_tokens": 200,
        },
        "pydantic-ai",
        (12, 30, 1000, 200, 0),
    ),
    # Sentry's names
    (
        "sentry",
        {
            "gen_ai.usage.input_tokens": 60,
            "gen_ai.usage.input_tokens.cached": 50,
            "gen_ai.usage.output_tokens": 100,
            "gen_ai.usage.output_tokens.reasoning": 30,
        },
        "",
        (10, 100, 50, 0, 0),
    ),
    # Langfuse SDK: OpenAI schema (nested details), Anthropic schema, Langfuse's own keys
    (
        "langfuse-openai",
        {
            "langfuse.observation.usage_details": json.dumps(
                {
                    "prompt_tokens": 1200,
                    "completion_tokens": 300,
                    "total_tokens": 1500,
                    "prompt_tokens_details": {"cached_tokens": 1000},
                    "completion_tokens_details": {"reasoning_tokens": 64},
                }
            )
        },
        "langfuse-sdk",
        (200, 300, 1000, 0, 0),
    ),
    (
        "langfuse-anthropic",
        {
            "langfuse.observation.usage_details": json.dumps(
                {
                    "input_tokens": 12,
                    "output_tokens": 30,
                    "cache_read_input_tokens": 1000,
                    "cache_creation_input_tokens": 200,
                    "cache_creation": {"ephemeral_5m_input_tokens": 200, "ephemeral_1h_input_tokens": 0},
                }
            )
        },
        "langfuse-sdk",
        (12, 30, 1000, 200, 0),
    ),
    (
        "langfuse-own",
        {
            "langfuse.observation.usage_details": json.dumps(
                {"input": 12, "output": 30, "cache_read_input_tokens": 1000, "input_cache_creation_1h": 200}
            )
        },
        "langfuse-sdk",
        (12, 30, 1000, 0, 200),
    ),
    # Google GenAI SDK instrumentation (semconv names)
    (
        "google-genai",
        {"gen_ai.system": "gemini", "gen_ai.usage.input_tokens": 40, "gen_ai.usage.output_tokens": 9},
        "opentelemetry.instrumentation.google_genai",
        (40, 9, 0, 0, 0),
    ),
]


@pytest.mark.parametrize("family, attrs, scope, want", CASES, ids=[c[0] for c in CASES])
def test_each_family_maps_to_the_same_buckets(family, attrs, scope, want):
    u = normalise(attrs, scope, provider_of(attrs, scope))
    t = u.ledger_tokens()
    got = (
        t["input_tokens"],
        t["output_tokens"],
        t["cache_read_tokens"],
        t["cache_creation_5m_tokens"],
        t["cache_creation_1h_tokens"],
    )
    assert got == want
    details = u.usage_details()
    assert sum(v for k, v in details.items()) == sum(want)  # each token under exactly one Langfuse key


def test_anthropic_meaning_is_detected_when_input_is_smaller_than_the_cache():
    u = normalise(
        {
            "gen_ai.usage.input_tokens": 12,
            "gen_ai.usage.cache_read.input_tokens": 1000,
            "gen_ai.usage.cache_creation.input_tokens": 200,
        }
    )
    assert (u.input, u.cache_read, u.cache_creation) == (12, 1000, 200)  # not floored to 0


def test_cost_is_exact_and_zero_with_tokens_is_unknown():
    assert normalise({"llm.cost.total": 0.0123456789, "llm.token_count.prompt": 5}).cost_usd == Decimal("0.0123456789")
    assert normalise({"llm.cost.prompt": 0.25, "llm.cost.completion": 0.5}).cost_usd == Decimal("0.75")
    assert normalise({"operation.cost": 0.001}).cost_usd == Decimal("0.001")
    # OpenLIT's 0 for a model its price list lacks: unknown, so relay prices it
    assert normalise({"gen_ai.usage.cost": 0, "gen_ai.usage.input_tokens": 100}).cost_usd is None
    assert (
        normalise({"langfuse.observation.cost_details": '{"total": 0}', "gen_ai.usage.output_tokens": 3}).cost_usd
        is None
    )
    # 0 without tokens (a failed call) is a real 0
    assert normalise({"langfuse.observation.cost_details": '{"input": 0, "output": 0, "total": 0}'}).cost_usd == 0


def test_malformed_values_are_ignored():
    assert normalise({"gen_ai.usage.input_tokens": "abc", "gen_ai.usage.output_tokens": -3}).empty
    assert normalise({"langfuse.observation.usage_details": '{"input": "3"}'}).empty
    assert normalise({"langfuse.observation.usage_details": "not json"}).empty
    assert Usage().usage_details() is None


def test_vercel_outer_spans_are_aggregates_and_providers_are_found():
    assert is_aggregate("ai.generateText", {}) and not is_aggregate("ai.generateText.doGenerate", {})
    assert provider_of({"ai.model.provider": "openai.chat"}) == "openai"
    assert provider_of({"llm.provider": "Anthropic"}) == "anthropic"
    assert provider_of({}, "com.anthropic.sdk.python") == "anthropic"
    assert provider_of({}, "my-agent") is None


def test_claude_code_2_1_332_span_without_flat_tokens_uses_the_semconv_ones():
    # the numbers of 2.1.332's second API call of protobuf-tools: gen_ai.usage.input_tokens includes the cache
    attrs = {
        "gen_ai.usage.input_tokens": 12260,
        "gen_ai.usage.output_tokens": 25,
        "gen_ai.usage.cache_read.input_tokens": 12164,
        "gen_ai.usage.cache_write.input_tokens": 84,
    }
    flat = flat_usage(attrs)
    assert (flat["input_tokens"], flat["output_tokens"], flat["cache_read_tokens"], flat["cache_creation_tokens"]) == (
        12,
        25,
        12164,
        84,
    )
    both = {**attrs, "input_tokens": 12}
    assert flat_usage(both) is both


@pytest.mark.parametrize(
    "attrs",
    [{k: 5} for keys in TOKEN_KEYS.values() for k in keys]
    + [{k: 0.25} for k in COST_KEYS]
    + [
        {"llm.cost.prompt": 0.25},
        {"llm.cost.completion": 0.25},
        {"langfuse.observation.usage_details": '{"input": 5}'},
        {"langfuse.observation.cost_details": '{"total": 0.25}'},
    ],
    ids=lambda a: next(iter(a)),
)
def test_each_usage_attribute_alone_is_read(attrs):
    """The normaliser's shortcut for spans without usage (most spans) never skips a span that has one."""
    assert normalise(attrs) != Usage(source="")
