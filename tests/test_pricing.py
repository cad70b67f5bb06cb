"""The price table and model-id matching (relay.usage.pricing). Expected costs are worked out by hand from the
providers' list prices (USD per 1M tokens = micro-USD per token), not read back from the table."""

from __future__ import annotations

import pytest

from relay.config_load import RelayConfig
from relay.model import UsageRecord
from relay.usage.config import PricingConfig
from relay.usage.pricing import Pricing, normalize_model


@pytest.fixture(scope="module")
def pricing() -> Pricing:
    return Pricing.load()


def rec(model: str | None, inp=0, out=0, read=0, w5=0, w1=0, creation=None) -> UsageRecord:
    return UsageRecord(
        key="k",
        kind="llm",
        time_ns=1,
        model=model,
        input_tokens=inp,
        output_tokens=out,
        cache_read_tokens=read,
        cache_creation_5m_tokens=w5,
        cache_creation_1h_tokens=w1,
        cache_creation_tokens=w5 + w1 if creation is None else creation,
    )


@pytest.mark.parametrize(
    "model, entry",
    [
        ("claude-sonnet-4-5", "claude-sonnet-4-5"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),  # dated
        ("claude-sonnet-4-20250514", "claude-sonnet-4"),  # dated, not confused with 4-5
        ("Claude-Opus-4-1-20250805", "claude-opus-4-1"),  # case
        ("anthropic/claude-haiku-4-5", "claude-haiku-4-5"),  # provider prefix
        ("anthropic/claude-3.5-sonnet", "claude-3-5-sonnet"),  # OpenRouter dotted version
        ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5"),  # Bedrock inference profile
        ("anthropic.claude-3-5-sonnet-20241022-v2:0", "claude-3-5-sonnet"),  # Bedrock model id
        ("global.anthropic.claude-opus-4-5-20251101-v1:0", "claude-opus-4-5"),
        ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5"),  # Vertex
        ("claude-3-5-sonnet-v2@20241022", "claude-3-5-sonnet"),  # Vertex v2
        ("publishers/anthropic/models/claude-3-7-sonnet@20250219", "claude-3-7-sonnet"),
        ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
        ("claude-opus-4-6[1m]", "claude-opus-4-6"),  # Claude Code's 1M-context suffix
        ("claude-opus-5-5", "claude-opus-5-5"),  # Claude Code 2.1.329's default
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),  # exact dated entry wins
        ("openai/gpt-4.1-mini", "gpt-4.1-mini"),
        ("gpt-5-mini-2025-08-07", "gpt-5-mini"),
        ("gpt-5-chat-latest", "gpt-5"),  # longest prefix
        ("o4-mini-2025-04-16", "o4-mini"),
        ("models/gemini-2.5-flash", "gemini-2.5-flash"),
        ("gemini-2.5-flash-lite-preview-06-17", "gemini-2.5-flash-lite"),  # longest prefix, not 2.5-flash
        ("gemini-1.5-pro-002", "gemini-1.5-pro"),  # 3-digit build suffix
    ],
)
def test_model_ids_match_their_entry(pricing, model, entry):
    assert pricing.lookup(model)[0] == entry


@pytest.mark.parametrize(
    "model",
    [
        None,
        "",
        "my-own-model",
        "claude-opus-4-9",  # a new minor version is not priced as claude-opus-4
        "gpt-5.2",
        "claude",
        "gemini-2.5",
    ],
)
def test_unknown_models_have_no_price(pricing, model):
    assert pricing.lookup(model) is None
    assert pricing.cost_nanos(rec(model, inp=1000)) is None


def test_normalize_model():
    assert normalize_model("eu.anthropic.claude-sonnet-4-20250514-v1:0") == "claude-sonnet-4"
    assert normalize_model("claude-sonnet-4.5") == "claude-sonnet-4-5"
    assert normalize_model("gpt-4.1") == "gpt-4.1"  # dots kept outside Claude ids


def test_claude_cost_with_every_token_kind(pricing):
    # Sonnet 4.5: $3 in, $15 out, $0.30 cache read, $3.75 5m write, $6 1h write per 1M tokens
    r = rec("claude-sonnet-4-5-20250929", inp=1000, out=500, read=20_000, w5=3000, w1=1000)
    assert pricing.cost_nanos(r) == (3 * 1000 + 15 * 500 + 6000 + 11_250 + 6 * 1000) * 1000 == 33_750_000


def test_claude_code_default_model_matches_its_own_reported_cost(pricing):
    # protobuf-text fixture: 12 input, 18 output, 12146 5m cache writes; Claude Code reported $0.061138
    assert pricing.cost_nanos(rec("claude-opus-5-5", inp=12, out=18, w5=12_146)) == 61_138_000
    # protobuf-tools call 2: 12 in, 23 out, 12163 cache reads, 84 writes → $0.0033606 (12163 × 0.2 µ$ = 2432.6 µ$: exact in nano-USD)
    assert pricing.cost_nanos(rec("claude-opus-5-5", inp=12, out=23, read=12_163, w5=84)) == 3_360_600


def test_openai_cached_input_is_priced_as_cache_read(pricing):
    # gpt-4o-mini: $0.15 in, $0.075 cached, $0.60 out; input already excludes the cached tokens
    r = rec("gpt-4o-mini-2024-07-18", inp=10_000, read=5000, out=1000)
    assert pricing.cost_nanos(r) == (1500 + 375 + 600) * 1000


def test_gemini_and_bedrock(pricing):
    # gemini-2.5-flash: $0.30 in, $2.50 out, $0.03 cache read
    assert (
        pricing.cost_nanos(rec("models/gemini-2.5-flash-preview-05-20", inp=1000, out=100, read=1000))
        == (300 + 250 + 30) * 1000
    )
    # Opus 4.1 on Bedrock: $15 in, $75 out
    assert pricing.cost_nanos(rec("us.anthropic.claude-opus-4-1-20250805-v1:0", inp=10, out=10)) == (150 + 750) * 1000


def test_cache_writes_without_split_count_as_5m_and_rounding_is_half_up(pricing):
    # genai spans report one cache-creation count: priced at the 5m rate ($3.75 for Sonnet 4.5)
    assert pricing.cost_nanos(rec("claude-sonnet-4-5", creation=1000)) == 3_750_000
    # Haiku 3: $0.25 per 1M input → 1 token = 250 n$ exactly (no rounding to micro-dollars any more)
    assert pricing.cost_nanos(rec("claude-3-haiku", inp=1)) == 250
    assert pricing.cost_nanos(rec("claude-3-haiku", inp=2)) == 500
    assert pricing.cost_nanos(rec("claude-3-haiku", inp=6)) == 1500
    assert pricing.cost_nanos(rec("claude-3-haiku")) == 0


def test_overrides_file_then_inline(tmp_path):
    extra = tmp_path / "prices.yaml"
    extra.write_text(
        "models:\n"
        "  claude-sonnet-4-5: {input: 2, output: 10}\n"  # a negotiated discount
        "  acme-llm: {input: 1, output: 2, cache_read: 0.5}\n"
    )
    cfg = RelayConfig.model_validate(
        {"ledger": {"pricing": {"file": str(extra), "models": {"acme-llm": {"input": 4, "output": 8}}}}}
    )
    p = Pricing.load(cfg.ledger.pricing)
    # file over shipped: cache prices default to the input price
    assert (
        p.cost_nanos(rec("claude-sonnet-4-5-20250929", inp=100, out=10, read=1000, w5=10, w1=10))
        == (200 + 100 + 2000 + 20 + 20) * 1000
    )
    # inline over file (the whole entry: its cache_read default is now the inline input price)
    assert p.cost_nanos(rec("acme-llm-v2", inp=10, read=10)) == (40 + 40) * 1000
    # the rest of the shipped table is untouched
    assert p.cost_nanos(rec("gpt-4.1", inp=1000)) == 2_000_000


def test_invalid_price_file_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  x: {input: -1, output: 2}\n")
    with pytest.raises(ValueError, match="bad.yaml"):
        Pricing.load(PricingConfig(file=str(bad)))
    bad.write_text("models: [1, 2\n")
    with pytest.raises(ValueError, match="bad.yaml"):
        Pricing.load(PricingConfig(file=str(bad)))


def test_shipped_table_covers_the_required_families(pricing):
    for model in (
        "claude-3-opus",
        "claude-3-5-sonnet",
        "claude-3-7-sonnet",
        "claude-sonnet-4",
        "claude-opus-4-1",
        "claude-opus-4-5",
        "claude-haiku-4-5",
        "claude-sonnet-5",
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "gpt-4.1-nano",
        "o1",
        "o3",
        "o3-mini",
        "o4-mini",
        "gpt-5",
        "gpt-5-nano",
        "gemini-1.5-flash",
        "gemini-2.0-flash",
        "gemini-2.5-pro",
        "gemini-2.5-flash",
    ):
        assert pricing.lookup(model)[0] == model
    for entry, price in pricing.table.items():
        if entry.startswith("claude"):  # every Claude entry prices both cache-write TTLs and reads below input
            assert price.cache_write_1h >= price.cache_write_5m >= price.input > price.cache_read > 0, entry
