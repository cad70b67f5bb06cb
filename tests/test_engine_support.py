"""Helpers for the rules-engine tests (no tests here): an in-memory ``LedgerStore``, record builders, rule files.

``MemoryLedger`` behaves like a database ledger for the engine's purposes: writes are idempotent and return the
change feed (new / upgraded / retracted), and ``scan`` pages through *live* data by ``(time_ns, key)`` cursor, one
query per batch, so writes made while a scan is running are seen by its later batches (as with SQL keyset
pagination). ``on_batch`` is awaited after each batch, to interleave writes with a backfill.
"""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path

from relay.alert import Alert
from relay.model import UsageRecord
from relay.usage.store import LedgerChange, LedgerStore

T0 = 1_793_000_000.0  # 2026-10-26T08:53:20Z, unix seconds


class MemoryLedger(LedgerStore):
    """A dict-backed ledger keyed by ``(tenant, key)``."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], UsageRecord] = {}
        self.scans: list[tuple[int, int]] = []
        self.on_batch: Callable[[int], Awaitable[None]] | None = None

    async def write(self, records: Sequence[UsageRecord]) -> list[LedgerChange]:
        """Insert or replace; a record equal to the stored one is no change."""
        out = []
        for r in records:
            k = (r.tenant, r.key)
            old = self.records.get(k)
            if old == r:
                continue
            self.records[k] = r
            out.append(LedgerChange(old, r))
        return out

    async def retract(self, tenant: str, key: str) -> list[LedgerChange]:
        """Remove a record; returns the retraction (empty when absent)."""
        old = self.records.pop((tenant, key), None)
        return [] if old is None else [LedgerChange(old, None)]

    async def write_metric_points(self, rows: Sequence[tuple]) -> list[LedgerChange]:
        return []

    async def scan(
        self, start_ns: int, end_ns: int, tenant: str | None = None, batch: int = 10_000
    ) -> AsyncIterator[list[UsageRecord]]:
        self.scans.append((start_ns, end_ns))
        cursor: tuple[int, str] | None = None
        n = 0
        while True:
            rows = sorted(
                (
                    r
                    for r in self.records.values()
                    if start_ns <= r.time_ns < end_ns
                    and (tenant is None or r.tenant == tenant)
                    and (cursor is None or (r.time_ns, r.key) > cursor)
                ),
                key=lambda r: (r.time_ns, r.key),
            )[:batch]
            if not rows:
                return
            cursor = (rows[-1].time_ns, rows[-1].key)
            yield rows
            n += 1
            if self.on_batch is not None:
                await self.on_batch(n)


def rec(
    key: str,
    t: float,
    *,
    kind: str = "llm",
    tenant: str = "default",
    cost: float = 0.0,
    labels: dict[str, str] | None = None,
    **kw: object,
) -> UsageRecord:
    """A usage record at unix seconds ``t`` costing ``cost`` USD."""
    kw.setdefault("cost_source", "reported" if cost else "none")
    return UsageRecord(
        key=key,
        kind=kind,
        time_ns=round(t * 1e9),
        tenant=tenant,
        cost_nanos=round(cost * 1e9),
        labels=dict(labels or {}),
        **kw,
    )


def new(*records: UsageRecord) -> list[LedgerChange]:
    """Changes that add ``records``."""
    return [LedgerChange(None, r) for r in records]


def upgrade(old: UsageRecord, **changes: object) -> LedgerChange:
    """The change replacing ``old`` by a copy with ``changes`` (same key)."""
    return LedgerChange(old, replace(old, **changes))


def write_rules(path: Path, text: str) -> str:
    """Write a rule file (dedented) and return its path as a string."""
    path.write_text(textwrap.dedent(text))
    return str(path)


class Sink:
    """Collects what the engine sends; ``batches`` keeps each call."""

    def __init__(self) -> None:
        self.batches: list[list[Alert]] = []

    def __call__(self, alerts: list[Alert]) -> None:
        self.batches.append(alerts)

    @property
    def alerts(self) -> list[Alert]:
        """Every alert sent, in order."""
        return [a for b in self.batches for a in b]

    def take(self) -> list[Alert]:
        """The alerts sent since the last take."""
        out = self.alerts
        self.batches.clear()
        return out


def by(alerts: list[Alert], **labels: str) -> list[Alert]:
    """Alerts whose labels include ``labels``."""
    return [a for a in alerts if all(a.labels.get(k) == v for k, v in labels.items())]
