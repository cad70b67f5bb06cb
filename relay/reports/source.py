"""The narrow query interface the report is computed from (:class:`ReportSource`) and its row shapes.

Every method is an aggregate over one tenant's ledger records with ``start_ns <= time_ns < end_ns`` (unix
nanoseconds), narrowed by ``scope`` matchers (Alertmanager matchers over ``UsageRecord.label_set()`` labels):
the implementation pushes the grouping into the store (``relay.reports.sql`` does it in SQLite) and returns
grouped rows, never individual records. Money is nano-USD, tokens are counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from relay.matchers import Matcher

__all__ = [
    "Query",
    "CubeRow",
    "ToolCell",
    "ErrorCell",
    "SessionGroup",
    "TopSession",
    "SessionStats",
    "MetricTotals",
    "ReportSource",
]


@dataclass(frozen=True)
class Query:
    """What to aggregate: ``tenant``; the half-open range ``[start_ns, end_ns)``; ``scope`` matchers;
    ``group_label`` the breakdown label (e.g. ``team.id``; None: no group column); ``chart_label`` the label
    the chart stacks by (``model`` or any label); ``edges`` the bucket start times (ascending, first =
    ``start_ns``) for the per-bucket cube."""

    tenant: str
    start_ns: int
    end_ns: int
    scope: tuple[Matcher, ...] = ()
    group_label: str | None = None
    chart_label: str = "model"
    edges: tuple[int, ...] = ()


@dataclass(frozen=True)
class CubeRow:
    """One group of LLM records (``kind = 'llm'``) by ``bucket`` (index into ``Query.edges``), ``model``, ``user``,
    ``group`` (value of the group label) and ``chart`` (value of the chart label).

    ``n`` records, ``errors`` failed calls, ``no_cost`` successful calls without a cost (``cost_source =
    'none'``), ``no_user`` records without a user, ``derived`` records derived from Claude Code's cost/token metrics
    (one per cost group and export, not per call: not counted as calls); sums in nano-USD and tokens.
    """

    bucket: int | None
    model: str | None
    user: str | None
    group: str | None
    chart: str | None
    n: int
    errors: int
    no_cost: int
    no_user: int
    derived: int
    cost_nanos: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_creation_tokens: int
    #: Cost by source (nano-USD): reported by the agent, computed from relay's price table; successful calls priced
    #: by relay (``cost_source = 'computed'``, metric estimates excluded).
    cost_reported_nanos: int = 0
    cost_computed_nanos: int = 0
    computed: int = 0


@dataclass(frozen=True)
class ToolCell:
    """One group of tool records (``kind = 'tool'``) by ``tool``, ``success``, ``decision`` (``accept`` /
    ``reject`` / None) and ``error_class`` (``rejected`` for a rejected tool); ``n`` records, ``no_user`` without
    a user."""

    tool: str | None
    success: bool
    decision: str | None
    error_class: str | None
    n: int
    no_user: int


@dataclass(frozen=True)
class ErrorCell:
    """Failed LLM calls by ``error_class`` and ``status_code`` (None for 529 overloads)."""

    error_class: str | None
    status_code: int | None
    n: int


@dataclass(frozen=True)
class SessionGroup:
    """Sessions per (``user``, ``group``): ``sessions`` distinct session ids, ``interactions`` distinct prompt
    ids, ``seconds`` summed session lengths (first to last record in range). A session with records of two users
    counts for both."""

    user: str | None
    group: str | None
    sessions: int
    interactions: int
    seconds: float


@dataclass(frozen=True)
class TopSession:
    """A session ranked by cost: nano-USD, distinct prompts, LLM calls, seconds first to last record."""

    session_id: str
    user: str | None
    cost_nanos: int
    interactions: int
    api_calls: int
    seconds: float


@dataclass
class SessionStats:
    """Session aggregates: ``groups`` per (user, group), ``top`` the costliest sessions, ``distinct`` the exact
    number of distinct session ids, ``interactions`` distinct prompt ids."""

    groups: list[SessionGroup] = field(default_factory=list)
    top: list[TopSession] = field(default_factory=list)
    distinct: int = 0
    interactions: int = 0


@dataclass(frozen=True)
class MetricTotals:
    """Claude Code metric totals in range (deltas summed, cumulative series differenced by the store): lines of
    code added/removed, commits, pull requests. A field is None when no point of that metric exists in range
    (not exported), 0 when points exist and sum to 0."""

    lines_added: int | None
    lines_removed: int | None
    commits: int | None
    pull_requests: int | None


class ReportSource(Protocol):
    """Aggregate queries over the ledger (synchronous: run them in a worker thread)."""

    def usage_cube(self, q: Query) -> list[CubeRow]:
        """LLM records of ``q`` grouped (see :class:`CubeRow`)."""
        ...

    def tool_cube(self, q: Query) -> list[ToolCell]:
        """Tool records of ``q`` grouped (see :class:`ToolCell`)."""
        ...

    def error_cube(self, q: Query) -> list[ErrorCell]:
        """Failed LLM calls of ``q`` grouped (see :class:`ErrorCell`)."""
        ...

    def session_stats(self, q: Query, top_n: int) -> SessionStats:
        """Session aggregates of ``q`` with the ``top_n`` costliest sessions."""
        ...

    def metric_totals(self, q: Query) -> MetricTotals:
        """Lines of code, commits and PRs of ``q`` (scope matchers applied to the metric points' labels)."""
        ...

    def spend(self, tenant: str, start_ns: int, end_ns: int, scopes: Sequence[Sequence[Matcher]]) -> list[int]:
        """Cost in nano-USD of ``tenant``'s records in ``[start_ns, end_ns)`` matching each matcher set of
        ``scopes`` (one figure per set, in order; an empty set matches everything), for budgets."""
        ...

    def spend_groups(
        self, tenant: str, start_ns: int, end_ns: int, matchers: Sequence[Matcher], labels: Sequence[str]
    ) -> list[tuple[dict[str, str], int]]:
        """Cost in nano-USD of ``tenant``'s records in range matching ``matchers``, grouped by the values of
        ``labels`` (absent labels left out of the dict), highest spend first."""
        ...
