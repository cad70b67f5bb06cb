"""Model prices and the cost of a usage record when the agent reported none.

The table is data: ``relay/usage/prices.yaml`` (USD per 1M tokens, sources in its header), an optional operator file
(``ledger.pricing.file``) merged over it, and inline overrides (``ledger.pricing.models``) merged last.

Model-id matching (case-insensitive), first hit wins:

1. the id exactly as reported (so a dated entry such as ``gpt-4o-2024-05-13`` can carry its own price);
2. the normalised id: ``[1m]``-style suffixes dropped, everything up to the last ``/`` dropped (``anthropic/``,
   ``openai/``, ``models/``, ``publishers/google/models/``), Vertex ``@<version>`` dropped, Bedrock
   ``[region.]anthropic.`` prefix and ``-v1:0`` suffix dropped, dotted Claude versions (``claude-3.5-sonnet``) written
   with dashes, a trailing date (``-20250929``, ``-2024-08-06``) or ``-latest`` dropped;
3. the longest table entry that is a prefix of the normalised id at a ``-`` boundary, unless the rest starts with a
   1–2 digit number: ``gemini-1.5-pro-002`` and ``gpt-5-chat-latest`` match, but ``claude-opus-4-9`` does NOT fall
   back to ``claude-opus-4`` (a new minor version may be priced differently; better no cost than a wrong one).

An unknown model gets no computed cost (the record keeps ``cost_source="none"``).

Cost in nano-USD = Σ tokens × USD-per-1M-tokens × 1000 (a USD-per-1M price *is* micro-USD per token), computed
in ``Decimal`` and rounded half-up to an integer (exact for every list price with at most three decimals per 1M
tokens).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from relay.model import UsageRecord
from relay.usage.config import ModelPriceConfig, PriceTableConfig, PricingConfig

__all__ = ["ModelPrice", "Pricing", "normalize_model", "PRICES_FILE"]

#: The shipped price table (package data).
PRICES_FILE = "prices.yaml"

_BRACKET = re.compile(r"\[[^\]]*\]$")
_VERTEX = re.compile(r"@[^@]*$")
_BEDROCK = re.compile(r"^(?:[a-z]{2,7}(?:-[a-z]+)?\.)?anthropic\.")
_BEDROCK_VERSION = re.compile(r"-v\d+(?::\d+)?$")
_DATE = re.compile(r"-(?:\d{8}|\d{4}-\d{2}-\d{2})$")
_LATEST = re.compile(r"-latest$")
_DOTTED = re.compile(r"(?<=\d)\.(?=\d)")
_VERSION_REST = re.compile(r"^\d{1,2}(?:$|[-.])")


@dataclass(frozen=True)
class ModelPrice:
    """A model's prices in USD per 1M tokens (= micro-USD per token), as exact decimals."""

    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal

    @classmethod
    def of(cls, cfg: ModelPriceConfig) -> ModelPrice:
        """From a validated config entry; omitted cache prices default to input (5m) and to the 5m price (1h)."""

        def d(v: float | None, default: Decimal) -> Decimal:
            return default if v is None else Decimal(str(v))

        inp = Decimal(str(cfg.input))
        w5 = d(cfg.cache_write_5m, inp)
        return cls(inp, Decimal(str(cfg.output)), d(cfg.cache_read, inp), w5, d(cfg.cache_write_1h, w5))


def normalize_model(model: str) -> str:
    """The model id with provider prefixes, deployment suffixes and dates removed (step 2 of the matching rules)."""
    m = _BRACKET.sub("", model.strip().lower())
    m = m.rsplit("/", 1)[-1]
    m = _VERTEX.sub("", m)
    m = _BEDROCK.sub("", m)
    m = _BEDROCK_VERSION.sub("", m)
    if m.startswith("claude"):
        m = _DOTTED.sub("-", m)
    m = _LATEST.sub("", m)
    m = _DATE.sub("", m)
    return _BEDROCK_VERSION.sub("", m)  # Vertex ``claude-3-5-sonnet-v2@20241022``


class Pricing:
    """A price table with model-id matching. Build with ``Pricing.load(config)``; ``table`` maps lower-case model
    ids to prices."""

    def __init__(self, table: Mapping[str, ModelPrice]):
        self.table = {k.lower(): v for k, v in table.items()}
        # longest first, for the prefix rule
        self._prefixes = sorted(self.table, key=len, reverse=True)
        self._cache: dict[str, tuple[str, ModelPrice] | None] = {}

    @classmethod
    def load(cls, cfg: PricingConfig | None = None) -> Pricing:
        """The shipped table, then ``cfg.file`` merged over it, then ``cfg.models``. Raises ``OSError`` when the
        file cannot be read and ``ValueError`` (with the file name) when it is not a valid price table."""
        cfg = cfg or PricingConfig()
        shipped = resources.files("relay.usage").joinpath(PRICES_FILE).read_text(encoding="utf-8")
        entries: dict[str, ModelPriceConfig] = dict(_parse(shipped, PRICES_FILE))
        if cfg.file:
            entries.update(_parse(Path(cfg.file).read_text(encoding="utf-8"), cfg.file))
        entries.update(cfg.models)
        return cls({k: ModelPrice.of(v) for k, v in entries.items()})

    def lookup(self, model: str | None) -> tuple[str, ModelPrice] | None:
        """``(table entry, prices)`` for a reported model id, or None when unknown (rules in the module doc)."""
        if not model:
            return None
        if model in self._cache:
            return self._cache[model]
        hit = self._match(model)
        if len(self._cache) < 10_000:
            self._cache[model] = hit
        return hit

    def _match(self, model: str) -> tuple[str, ModelPrice] | None:
        raw = model.strip().lower()
        for candidate in (raw, normalize_model(model)):
            if candidate in self.table:
                return candidate, self.table[candidate]
        name = normalize_model(model)
        for key in self._prefixes:
            if name.startswith(key + "-") and not _VERSION_REST.match(name[len(key) + 1 :]):
                return key, self.table[key]
        return None

    def cost_nanos(self, record: UsageRecord) -> int | None:
        """The cost of ``record``'s tokens in nano-USD, or None when its model is unknown.

        Cache writes beyond the 5m/1h split (``cache_creation_tokens`` larger than their sum) are priced as 5m
        writes, Anthropic's default TTL."""
        hit = self.lookup(record.model)
        if hit is None:
            return None
        p = hit[1]
        split = record.cache_creation_5m_tokens + record.cache_creation_1h_tokens
        extra = max(0, record.cache_creation_tokens - split)
        total = (
            p.input * record.input_tokens
            + p.output * record.output_tokens
            + p.cache_read * record.cache_read_tokens
            + p.cache_write_5m * (record.cache_creation_5m_tokens + extra)
            + p.cache_write_1h * record.cache_creation_1h_tokens
        )
        return int((total * 1000).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _parse(text: str, source: str) -> dict[str, ModelPriceConfig]:
    """The ``models`` of a price file; raises ``ValueError`` naming ``source`` when invalid."""
    try:
        data: Any = yaml.safe_load(text) or {}
        return dict(PriceTableConfig.model_validate(data).models)
    except (yaml.YAMLError, ValueError) as e:
        raise ValueError(f"invalid price table {source}: {e}") from e
