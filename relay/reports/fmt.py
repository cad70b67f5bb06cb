"""Number formatting shared by the report renderers. ``None`` renders as ``n/a`` everywhere (missing, not 0).

Money arrives in nano-USD (integers) and is shown in USD with two decimals (``$1,234.56``); ratios 0..1 as percents.
"""

from __future__ import annotations

from typing import Any

from relay.reports.model import pct_change

__all__ = ["NA", "usd", "usd_plain", "count", "tokens", "percent", "change", "seconds", "usage_json"]

NA = "n/a"


def usd(nanos: float | None) -> str:
    """``$1,234.56`` from nano-USD; ``n/a`` for None."""
    if nanos is None:
        return NA
    return f"${nanos / 1e9:,.2f}"


def usd_plain(nanos: float | None) -> str:
    """``1234.56`` (no symbol or separators, for CSV) from nano-USD; ``n/a`` for None."""
    return NA if nanos is None else f"{nanos / 1e9:.2f}"


def count(n: float | None) -> str:
    """``12,345``; ``n/a`` for None."""
    return NA if n is None else f"{int(round(n)):,}"


def tokens(n: float | None) -> str:
    """Compact token counts: ``950``, ``12.3k``, ``4.56M``, ``1.2B``; ``n/a`` for None."""
    if n is None:
        return NA
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            v = n / div
            return f"{v:.3g}{suffix}" if v < 100 else f"{v:,.0f}{suffix}"
    return f"{int(n)}"


def percent(r: float | None, digits: int = 1) -> str:
    """A ratio 0..1 as ``12.5%``; ``n/a`` for None."""
    return NA if r is None else f"{r * 100:.{digits}f}%"


def change(cur: float | None, prev: float | None) -> str:
    """Relative change as ``+23%`` / ``−5%`` / ``±0%``; ``new`` when prev is 0 and cur is not; ``n/a`` when a side
    is missing."""
    if cur is None or prev is None:
        return NA
    if prev == 0:
        return "±0%" if cur == 0 else "new"
    p = pct_change(cur, prev)
    assert p is not None
    if abs(p) < 0.005:
        return "±0%"
    return f"{'+' if p > 0 else '−'}{abs(p) * 100:.0f}%"


def seconds(s: float | None) -> str:
    """A duration: ``45s``, ``12m``, ``3h 05m``; ``n/a`` for None."""
    if s is None:
        return NA
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def usage_json(r: Any) -> dict[str, Any]:
    """The usage figures of a row with token counts, ``cost_nanos`` (nano-USD), ``api_calls`` and ``total_tokens``
    (a usage-table row, a block) in the camelCase of ccusage's JSON: ``inputTokens``, ``outputTokens``,
    ``cacheCreationTokens``, ``cacheReadTokens``, ``totalTokens``, ``totalCost`` (USD, 9 decimals), ``apiCalls``."""
    return {
        "inputTokens": r.input_tokens,
        "outputTokens": r.output_tokens,
        "cacheCreationTokens": r.cache_creation_tokens,
        "cacheReadTokens": r.cache_read_tokens,
        "totalTokens": r.total_tokens,
        "totalCost": round(r.cost_nanos / 1e9, 9),
        "apiCalls": r.api_calls,
    }
