"""The usage ledger's storage interface (SQLite today, PostgreSQL later).

The ledger holds one :class:`~relay.model.UsageRecord` per LLM call or tool call, keyed by ``(tenant, key)``,
and the metric data points Claude Code exports (for metrics-only senders, lines of code, commits, PRs).
Writers are idempotent: writing the same record twice changes nothing, so the pipeline may write the ledger
before it commits its spool transaction and simply write again after a crash.

Every write returns the :class:`LedgerChange` list of what actually changed — new records, upgraded records (a
reported cost replacing a computed or missing one, or empty identity fields filled in), retracted records
(metric-derived estimates superseded by per-call records of the same session, or — without session ids — of the
same user, model and export window) — which is the change feed the rules engine consumes. Nothing else may
feed it, so each call is counted once whatever combination of events, spans, metrics and client retries arrives.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from relay.model import UsageRecord
from relay.usage.metrics import MetricSum

__all__ = ["LedgerChange", "LedgerStore"]


@dataclass(frozen=True)
class LedgerChange:
    """One change of the ledger: ``old`` → ``new``. New record: ``old`` None. Retracted: ``new`` None.
    Upgraded: both set (same ``key``); consumers subtract ``old`` and add ``new``."""

    old: UsageRecord | None
    new: UsageRecord | None


class LedgerStore(abc.ABC):
    """Storage of the usage ledger. All times are unix nanoseconds; money is nano-USD (``cost_nanos``)."""

    @abc.abstractmethod
    async def write(self, records: Sequence[UsageRecord]) -> list[LedgerChange]:
        """Insert or upgrade ``records`` (``tenant`` set on each); returns what changed. Idempotent."""

    @abc.abstractmethod
    async def write_metric_points(self, rows: Sequence[tuple]) -> list[LedgerChange]:
        """Store metric data points ``(tenant, name, series, start_ns, time_ns, value, temporality, unit,
        attributes_json)`` (idempotent) and derive usage records from Claude Code's ``cost.usage`` /
        ``token.usage`` for sessions that sent no per-call events; returns the ledger changes."""

    @abc.abstractmethod
    def scan(
        self, start_ns: int, end_ns: int, tenant: str | None = None, batch: int = 10_000
    ) -> AsyncIterator[list[UsageRecord]]:
        """Records with ``start_ns <= time_ns < end_ns`` (all tenants when None), in time order, in batches."""

    async def sum_metric(
        self, name: str, start_ns: int, end_ns: int, *, tenant: str | None = None, by: Sequence[str] = ()
    ) -> list[MetricSum]:
        """Sum of the deltas of metric ``name`` with ``start_ns <= time_ns < end_ns`` grouped by ``by`` (``tenant``,
        ``user``, ``session``, ``model``, ``type``, or any label / point attribute); groups without points are absent.
        Not abstract so that test doubles need not implement it; the default raises ``NotImplementedError``."""
        raise NotImplementedError(f"{type(self).__name__} does not keep metric deltas")
