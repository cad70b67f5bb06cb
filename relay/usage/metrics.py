"""Metric data points in the ledger: their shape, cumulative → delta conversion, and the usage records derived from
Claude Code's ``cost.usage`` / ``token.usage`` metrics for senders that export metrics only.

Claude Code's metrics (https://code.claude.com/docs/en/monitoring-usage "Metrics"; observed in Claude Code's
exports, ``tests/fixtures/claude-code/``) are monotonic Sums with values in ``asDouble``,
DELTA temporality by default (each export holds the series that changed; ``start`` = previous export time) or
CUMULATIVE (every series repeated with a fixed start). The ledger keeps every Sum point as a **delta**:

- DELTA points as they are;
- CUMULATIVE points as the difference to the previous point of the same series and start time; the first point
  of a (series, start) stream, a new start time, or a value below the previous one (a reset of a monotonic
  counter) counts in full. A point arriving late (between two stored ones) takes its share from the next point, so
  the sum over a stream is its last value whatever the arrival order.

Derived usage records (``source="claude_code.metric"``, ``cost_source="reported"``): one per **cost group and
export time**, a cost group being the attribute set of a ``cost.usage`` series (session, model, query source,
agent, effort… and resource attributes), i.e. a ``token.usage`` series without its ``type``. The record holds the
group's cost delta (USD → nano-USD, rounded on its decimal form) and token deltas (``type`` input / output /
cacheRead / cacheCreation; the
metrics have no 5m/1h split, so cache writes count as 5m). A group whose deltas are all zero has no record (a
CUMULATIVE export repeats unchanged series). Gauges are stored raw, without a delta.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from relay.model import UsageRecord, usd_to_nanos

__all__ = [
    "MetricPoint",
    "MetricSum",
    "COST_METRIC",
    "TOKEN_METRIC",
    "SOURCE_METRIC",
    "DELTA",
    "CUMULATIVE",
    "TOKEN_TYPES",
    "cost_group",
    "derived_key",
    "derive_record",
]

#: Claude Code's cost counter (USD) and token counter (tokens, attribute ``type``).
COST_METRIC = "claude_code.cost.usage"
TOKEN_METRIC = "claude_code.token.usage"
#: ``UsageRecord.source`` of records derived from metrics.
SOURCE_METRIC = "claude_code.metric"
#: OTLP ``AggregationTemporality`` values.
DELTA, CUMULATIVE = 1, 2
#: ``token.usage`` ``type`` → ``UsageRecord`` token field.
TOKEN_TYPES = {
    "input": "input_tokens",
    "output": "output_tokens",
    "cacheRead": "cache_read_tokens",
    "cacheCreation": "cache_creation_tokens",
}
_MAIN_SOURCES = {"main", "sdk", "repl_main_thread"}


class MetricPoint(NamedTuple):
    """One Sum or Gauge data point as the pipeline hands it to the ledger.

    ``series`` identifies the time series (a hash of ``attributes``); times are unix ns; ``value`` as sent
    (cumulative or delta); ``temporality`` the OTLP enum (1 delta, 2 cumulative, 0 gauge); ``attributes`` the merged
    resource and point attributes as sorted-key JSON. ``user`` and ``labels`` are the ledger identity of the point
    (same rules as usage records, ``relay.usage.labels``); ``monotonic`` is the Sum's ``is_monotonic``. The first
    nine fields are the row shape of ``LedgerStore.write_metric_points``; plain 9-tuples are accepted.
    """

    tenant: str
    name: str
    series: str
    start_ns: int
    time_ns: int
    value: float
    temporality: int
    unit: str
    attributes: str
    user: str | None = None
    labels: Mapping[str, str] | None = None
    monotonic: bool = True


class MetricSum(NamedTuple):
    """One group of ``LedgerStore.sum_metric``: the grouping values (None when absent) and the summed deltas."""

    group: dict[str, str | None]
    value: float


def cost_group(attributes: Mapping[str, Any]) -> str:
    """The cost group of a ``cost.usage`` / ``token.usage`` point: a hash of its attributes without ``type``."""
    blob = json.dumps({k: v for k, v in attributes.items() if k != "type"}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def derived_key(group: str, time_ns: int) -> str:
    """The ledger key of the record derived from a cost group's deltas at one export time."""
    return f"metric:{group}:{time_ns}"


def derive_record(
    tenant: str, group: str, time_ns: int, deltas: Iterable[tuple[str, str | None, float, str | None, str, str]]
) -> UsageRecord | None:
    """The usage record of one cost group at ``time_ns`` from its delta rows ``(name, type, delta, user,
    labels_json, attributes_json)``; None when every delta is zero. The cost is ``reported`` when a ``cost.usage``
    point is present, else ``none`` (the store prices it then)."""
    cost: float | None = None
    tokens = dict.fromkeys(TOKEN_TYPES.values(), 0.0)
    user = labels = attrs = None
    for name, typ, delta, u, lab, att in deltas:
        if name == COST_METRIC:
            cost = (cost or 0.0) + delta
        elif typ in TOKEN_TYPES:
            tokens[TOKEN_TYPES[typ]] += delta
        else:
            continue
        user, labels, attrs = user or u, labels or lab, attrs or att
    if attrs is None or (not cost and not any(tokens.values())):
        return None
    a = json.loads(attrs)
    ints: dict[str, Any] = {k: max(0, round(v)) for k, v in tokens.items()}
    qs = _s(a.get("query_source"))
    return UsageRecord(
        key=derived_key(group, time_ns),
        kind="llm",
        time_ns=time_ns,
        tenant=tenant,
        session_id=_s(a.get("session.id")),
        user=user,
        labels=json.loads(labels or "{}"),
        agent=_s(a.get("agent.name")) or (qs if qs and qs not in _MAIN_SOURCES else None),
        model=_s(a.get("model")),
        **ints,
        cache_creation_5m_tokens=ints["cache_creation_tokens"],
        cost_nanos=usd_to_nanos(cost or 0.0),
        cost_source="reported" if cost is not None else "none",
        source=SOURCE_METRIC,
    )


def _s(v: Any) -> str | None:
    return None if v is None or v == "" else str(v)
