"""Scores as records of the rules engine's feed (``relay.usage.score_record.ScoreRecord``: a ``UsageRecord`` of
kind ``score`` carrying the score's value), so ``kind: score`` rules aggregate scores with the same windows,
grouping and alert life cycle as usage. Usage rules ignore these records.

:class:`ScoredLedger` wraps the usage ledger for the rules engine: its ``scan`` also yields the score table's
records, so score rules are backfilled at start and on reload like the others.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from relay.model import UsageRecord
from relay.store.sqlite import SqliteDB
from relay.usage.metrics import MetricSum
from relay.usage.score_record import SCORE_KIND, ScoreRecord
from relay.usage.sqlite_scores import ScoreRow, apply_score_schema, read_scores
from relay.usage.store import LedgerChange, LedgerStore

__all__ = ["ScoreRecord", "score_record", "score_changes", "ScoredLedger"]


def score_record(row: ScoreRow) -> ScoreRecord:
    """The engine record of a ``ledger_scores`` row (key ``score:<id>``)."""
    return ScoreRecord(
        key=f"score:{row.id}",
        kind=SCORE_KIND,
        time_ns=row.time_ns,
        tenant=row.tenant,
        session_id=row.session_id,
        trace_id=row.trace_id,
        user=row.user_id,
        labels=dict(row.labels),
        value=row.value,
        string_value=row.string_value,
        score=row.name,
        score_source=row.source,
    )


def score_changes(changes: Sequence[tuple[ScoreRow | None, ScoreRow]]) -> list[LedgerChange]:
    """``put_scores`` changes as ledger changes for ``RuleEngine.observe``."""
    return [LedgerChange(None if old is None else score_record(old), score_record(new)) for old, new in changes]


class ScoredLedger(LedgerStore):
    """``ledger`` plus the score table of ``db`` for the rules engine: :meth:`scan` yields usage records, then score
    records of the same range; everything else is the ledger's."""

    def __init__(self, ledger: LedgerStore, db: SqliteDB):
        self._ledger = ledger
        self._db = db
        apply_score_schema(db)  # the engine may scan before the scorer starts

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ledger, name)

    async def write(self, records: Sequence[UsageRecord]) -> list[LedgerChange]:
        """The ledger's ``write``."""
        return await self._ledger.write(records)

    async def write_metric_points(self, rows: Sequence[tuple]) -> list[LedgerChange]:
        """The ledger's ``write_metric_points``."""
        return await self._ledger.write_metric_points(rows)

    async def sum_metric(
        self, name: str, start_ns: int, end_ns: int, *, tenant: str | None = None, by: Sequence[str] = ()
    ) -> list[MetricSum]:
        """The ledger's ``sum_metric``."""
        return await self._ledger.sum_metric(name, start_ns, end_ns, tenant=tenant, by=by)

    async def scan(
        self, start_ns: int, end_ns: int, tenant: str | None = None, batch: int = 10_000
    ) -> AsyncIterator[list[UsageRecord]]:
        """Usage records of ``[start_ns, end_ns)``, then that range's score records (one batch per ``batch``)."""
        async for records in self._ledger.scan(start_ns, end_ns, tenant, batch):
            yield records
        rows = await self._db.run(lambda c: read_scores(c, start_ns, end_ns, tenant))
        for i in range(0, len(rows), batch):
            yield [score_record(r) for r in rows[i : i + batch]]
