"""The headline figures every renderer shows, in one order, with their previous-period value and unit.

A headline's value is None when its source is missing (e.g. no metrics exported → lines of code "n/a"); the
previous value is None when the previous period had no data, so its change reads ``n/a``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from relay.reports import fmt
from relay.reports.model import Figures, Report

__all__ = ["Headline", "headlines"]


@dataclass(frozen=True)
class Headline:
    """``key`` (stable, for CSV/JSON), ``name`` (for people), raw ``current``/``previous`` values, ``unit``
    (``usd`` in nano-USD, ``tokens``, ``count``, ``ratio`` 0..1, ``seconds``) and ``section``."""

    key: str
    name: str
    current: float | None
    previous: float | None
    unit: str
    section: str

    def show(self, value: float | None) -> str:
        """``value`` formatted for people in this headline's unit (``n/a`` for None)."""
        f: Callable[[float | None], str] = {
            "usd": fmt.usd,
            "tokens": fmt.tokens,
            "count": fmt.count,
            "ratio": fmt.percent,
            "seconds": fmt.seconds,
        }[self.unit]
        return f(value)

    @property
    def change(self) -> str:
        """Relative change against the previous period (ratios: difference in percentage points)."""
        if self.unit == "ratio":
            if self.current is None or self.previous is None:
                return fmt.NA
            pp = (self.current - self.previous) * 100
            return "±0 pp" if abs(pp) < 0.05 else f"{'+' if pp > 0 else '−'}{abs(pp):.1f} pp"
        return fmt.change(self.current, self.previous)


_SPEC: list[tuple[str, str, str, str, Callable[[Figures], float | None]]] = [
    ("cost", "Cost", "usd", "cost", lambda f: f.cost_nanos),
    ("input_tokens", "Input tokens", "tokens", "cost", lambda f: f.input_tokens),
    ("output_tokens", "Output tokens", "tokens", "cost", lambda f: f.output_tokens),
    ("cache_read_tokens", "Cache read tokens", "tokens", "cost", lambda f: f.cache_read_tokens),
    ("cache_creation_tokens", "Cache creation tokens", "tokens", "cost", lambda f: f.cache_creation_tokens),
    ("cache_hit_ratio", "Cache hit ratio", "ratio", "cost", lambda f: f.cache_hit_ratio),
    ("sessions", "Sessions", "count", "activity", lambda f: f.sessions),
    ("active_users", "Active users", "count", "activity", lambda f: f.active_users),
    ("interactions", "Interactions", "count", "activity", lambda f: f.interactions),
    ("avg_session", "Avg session length", "seconds", "activity", lambda f: f.avg_session_seconds),
    ("api_calls", "API calls", "count", "reliability", lambda f: f.api_calls),
    ("api_error_rate", "API error rate", "ratio", "reliability", lambda f: f.error_rate),
    ("tool_calls", "Tool calls", "count", "tools", lambda f: f.tool_calls if f.tool_records else None),
    ("tool_success_rate", "Tool success rate", "ratio", "tools", lambda f: f.tool_success_rate),
    ("accept_rate", "Tool accept rate", "ratio", "tools", lambda f: f.accept_rate),
    ("lines_added", "Lines added", "count", "code", lambda f: f.lines_added),
    ("lines_removed", "Lines removed", "count", "code", lambda f: f.lines_removed),
    ("commits", "Commits", "count", "code", lambda f: f.commits),
    ("pull_requests", "Pull requests", "count", "code", lambda f: f.pull_requests),
    ("cost_per_pr", "Cost per PR", "usd", "code", lambda f: f.cost_per_pr_nanos),
]


def headlines(report: Report) -> list[Headline]:
    """The headline figures of ``report`` (current and previous period) in display order."""
    prev = report.previous
    return [
        Headline(key, name, get(report.current), None if prev is None else get(prev), unit, section)
        for key, name, unit, section, get in _SPEC
    ]
