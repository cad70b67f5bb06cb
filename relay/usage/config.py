"""The usage ledger's configuration (``ledger:`` in relay's config file).

```yaml
ledger:
  pricing:
    file: /etc/relay/prices.yaml          # optional: same shape as relay/usage/prices.yaml, merged over it
    models:                               # optional: inline overrides, merged last (USD per 1M tokens)
      claude-sonnet-4-5: {input: 3, output: 15, cache_read: 0.3, cache_write_5m: 3.75, cache_write_1h: 6}
      my-finetune: {input: 1.0, output: 2.0}
```

Prices are **USD per one million tokens**. A cache price left out defaults to the input price (a provider without a
cache-write premium, e.g. OpenAI or Gemini implicit caching, bills written tokens as plain input); an omitted
``cache_write_1h`` defaults to ``cache_write_5m``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ModelPriceConfig", "PriceTableConfig", "PricingConfig", "LedgerConfig"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelPriceConfig(_Model):
    """One model's list prices in USD per 1M tokens (``input`` excludes cache reads and writes)."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_read: float | None = Field(None, ge=0)
    cache_write_5m: float | None = Field(None, ge=0)
    cache_write_1h: float | None = Field(None, ge=0)


class PriceTableConfig(_Model):
    """The shape of a price file: ``models`` maps a model id (matched as described in ``relay.usage.pricing``) to
    its prices. Other top-level keys are not allowed; comments carry the sources."""

    models: dict[str, ModelPriceConfig] = {}


class PricingConfig(_Model):
    """``ledger.pricing``: the shipped price table, an optional extra file merged over it, inline overrides last."""

    #: Path of an extra price file (``models:`` mapping, same shape as the shipped ``relay/usage/prices.yaml``).
    file: str | None = None
    #: Inline per-model prices (USD per 1M tokens); win over the shipped table and ``file``.
    models: dict[str, ModelPriceConfig] = {}


class LedgerConfig(_Model):
    """``ledger``: the usage ledger (one record per LLM call and tool call)."""

    pricing: PricingConfig = PricingConfig()
