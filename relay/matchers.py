"""Label matchers, as in Alertmanager and Prometheus: ``name="value"``, ``name!="value"``, ``name=~"regex"``,
``name!~"regex"``. Regexes are fully anchored (``^(?:…)$``). A missing label matches like the empty string, so
``team!="a"`` matches records without ``team`` and ``team=""`` matches only those.

Sources: https://prometheus.io/docs/alerting/latest/configuration/#matcher and
https://prometheus.io/docs/prometheus/latest/querying/basics/#time-series-selectors. Python's ``re`` stands in for
RE2 (same syntax for the usual cases; no backreferences are allowed by RE2 and none should be used here).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = ["Matcher", "parse_matchers", "matches_all"]

_OPS = ("=~", "!~", "!=", "=")
_MATCHER_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.\-]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$", re.DOTALL)


@dataclass(frozen=True)
class Matcher:
    """One matcher. ``op`` is one of ``=``, ``!=``, ``=~``, ``!~``. Raises ``ValueError`` on a bad regex."""

    name: str
    op: str
    value: str
    _re: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise ValueError(f"unknown matcher operator {self.op!r} (use =, !=, =~, !~)")
        if self.op in ("=~", "!~"):
            try:
                object.__setattr__(self, "_re", re.compile(f"^(?:{self.value})$"))
            except re.error as e:
                raise ValueError(f"invalid regex {self.value!r} for {self.name}: {e}") from e

    @classmethod
    def parse(cls, text: str) -> Matcher:
        """Parse ``name op value``; the value may be double-quoted (Go string escapes ``\\"`` and ``\\\\``).
        Raises ``ValueError`` with the reason."""
        m = _MATCHER_RE.match(text)
        if not m:
            raise ValueError(f'bad matcher {text!r}: expected name="value", name!="value", name=~"re" or name!~"re"')
        name, op, raw = m.groups()
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            raw = re.sub(r'\\(["\\])', r"\1", raw[1:-1])
        elif '"' in raw:
            raise ValueError(f"bad matcher {text!r}: unbalanced quotes")
        return cls(name, op, raw)

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` satisfies this matcher (a missing label is the empty string)."""
        v = labels.get(self.name, "")
        if self.op == "=":
            return v == self.value
        if self.op == "!=":
            return v != self.value
        assert self._re is not None
        hit = self._re.match(v) is not None
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.name}{self.op}"{escaped}"'


def parse_matchers(items: Iterable[str] | Mapping[str, str] | None) -> list[Matcher]:
    """Matchers from a list of matcher strings, or from a mapping ``{name: value}`` (equality, like
    Alertmanager's deprecated ``match:``). Raises ``ValueError`` naming the bad item."""
    if items is None:
        return []
    if isinstance(items, Mapping):
        return [Matcher(str(k), "=", str(v)) for k, v in items.items()]
    return [Matcher.parse(s) for s in items]


def matches_all(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    """True when every matcher matches (an empty list matches everything)."""
    return all(m.matches(labels) for m in matchers)
