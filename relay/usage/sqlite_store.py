"""The usage ledger on SQLite: ``SqliteLedgerStore`` (the embedded default; PostgreSQL implements the same
``LedgerStore`` later). Tables and the upgrade from issue 2's layout: ``relay.usage.sqlite_schema``; metric
points: ``relay.usage.sqlite_metrics``.

Write rules (each ``write`` is one job on the database's writer thread, so what changed is decided race-free):

- a record whose ``(tenant, key)`` is new is inserted → ``LedgerChange(None, new)``;
- a record with no cost (``cost_source="none"``) but tokens and a known model is priced with the price table first
  (``cost_source="computed"``);
- an existing record is replaced only by one with a better cost source — ``reported`` > ``computed`` > ``none`` —
  (e.g. a beta span first, its ``api_request`` event later) → ``LedgerChange(old, new)``; worse: ignored; equal:
  only its empty identity fields (session, trace, prompt, user, agent, model) are filled in from the new copy
  (``LedgerChange(old, filled)``), so an early record written before its conversation id was known gets it. Writing
  the same records again therefore changes nothing;
- the first per-call record (any source but metrics) of a ``(tenant, session)`` retracts that session's
  metric-derived records → ``LedgerChange(old, None)`` each, and later metric points of it derive nothing;
- metric-derived records WITHOUT a session id (Claude Code with ``OTEL_METRICS_INCLUDE_SESSION_ID=false``) are
  matched to per-call records by (tenant, user — the installation id or configured identity —, model, export time
  window): an LLM call inside a record's window retracts it, and a window that already holds calls derives nothing,
  whichever arrives first. Each call is thus counted once, from its per-call record.

Units: times unix ns, money nano-USD, durations ms.
"""

from __future__ import annotations

import functools
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import Any

from relay.model import UsageRecord
from relay.store.sqlite import SqliteDB, chunks, execute_script, marks
from relay.usage.metrics import SOURCE_METRIC, MetricPoint, MetricSum, derived_key
from relay.usage.pricing import Pricing
from relay.usage.sqlite_metrics import backfill_deltas, ingest_points, sum_metric
from relay.usage.sqlite_records import (
    SELECT,
    put_record,
    put_records,
    read_records,
    record_of,
    select_record,
)
from relay.usage.sqlite_schema import RECORD_COLUMNS, SCHEMA, migrate_nanos, migrate_v1
from relay.usage.store import LedgerChange, LedgerStore

__all__ = ["SqliteLedgerStore", "COST_RANK"]

#: Slack (ns) around a metric export window when matching it to per-call records without a session id: event
#: timestamps have millisecond precision and the counter is bumped a moment after the call's event.
UNSESSIONED_SLACK_NS = 2_000_000_000

#: Cost sources by preference; a record replaces a stored one only with a higher rank.
COST_RANK = {"none": 0, "computed": 1, "reported": 2}

_COLS = ", ".join(RECORD_COLUMNS)
_TIME = RECORD_COLUMNS.index("time_ns")


#: Identity fields a later copy of a record may fill in when the stored one lacks them (e.g. an early record of a
#: call written before the span that carries its conversation id arrived).
FILL_FIELDS = ("session_id", "trace_id", "prompt_id", "user", "agent", "model")


def _fill_gaps(old: UsageRecord, new: UsageRecord) -> UsageRecord:
    """``old`` with its empty ``FILL_FIELDS`` taken from ``new`` (same key, same cost rank); ``old`` itself when
    nothing changes, so writing the same record again stays a no-op."""
    fill = {
        f: getattr(new, f) for f in FILL_FIELDS if getattr(old, f) in (None, "") and getattr(new, f) not in (None, "")
    }
    return replace(old, **fill) if fill else old


class SqliteLedgerStore(LedgerStore):
    """The ledger in relay's SQLite database (``db``, shared with the spool); ``pricing`` computes costs the agents
    did not report. Construction applies the schema and upgrades older layouts (blocking; call at start-up);
    raises ``sqlite3.Error`` when the database cannot be used."""

    def __init__(self, db: SqliteDB, pricing: Pricing | None = None):
        self.db = db
        self.pricing = pricing or Pricing.load()
        db.run_sync(self._upgrade)
        db.apply_schema(SCHEMA)
        db.run_sync(lambda conn: backfill_deltas(conn, self))

    def _upgrade(self, conn: sqlite3.Connection) -> None:
        migrate_nanos(conn)
        old = migrate_v1(conn)
        if old:
            execute_script(conn, SCHEMA)
            self._write(conn, [self.price(r) for r in old])

    # ------------------------------------------------------------------ records

    def price(self, r: UsageRecord) -> UsageRecord:
        """``r`` with a computed cost when it has none, has tokens and its model is in the price table."""
        if r.cost_source != "none" or not (
            r.input_tokens or r.output_tokens or r.cache_read_tokens or r.cache_creation_tokens
        ):
            return r
        nanos = self.pricing.cost_nanos(r)
        return r if nanos is None else replace(r, cost_nanos=nanos, cost_source="computed")

    async def write(self, records: Sequence[UsageRecord]) -> list[LedgerChange]:
        """Insert or upgrade ``records`` (``tenant`` set on each) and retract metric estimates of their sessions;
        returns exactly the changes made, in order. Idempotent. Raises ``sqlite3.Error``."""
        if not records:
            return []
        priced = [self.price(r) for r in records]
        return await self.db.run(lambda conn: self._write(conn, priced))

    def _write(self, conn: sqlite3.Connection, records: Sequence[UsageRecord]) -> list[LedgerChange]:
        # The stored copies of the batch's keys are read with a few ``key IN (…)`` queries, the records are decided
        # in order against that map (a key written twice in the batch sees its first write), and the results are
        # stored with one executemany per kind of statement — the same changes and rows as one SELECT and one write
        # per record, in a fraction of the statements (issue 12).
        stored = read_records(conn, {(r.tenant, r.key) for r in records})
        changes: list[LedgerChange] = []
        final: dict[tuple[str, str], UsageRecord] = {}  # key → its row after this write, in first-write order
        for r in records:
            k = (r.tenant, r.key)
            old = final.get(k)
            if old is None:
                old = stored.get(k)
            if old is None or COST_RANK.get(r.cost_source, 0) > COST_RANK.get(old.cost_source, 0):
                final[k] = r
                changes.append(LedgerChange(old, r))
            elif COST_RANK.get(r.cost_source, 0) == COST_RANK.get(old.cost_source, 0):
                filled = _fill_gaps(old, r)
                if filled != old:
                    final[k] = filled
                    changes.append(LedgerChange(old, filled))
        put_records(conn, [(stored.get(k), new) for k, new in final.items()])
        sessions = {(r.tenant, r.session_id) for r in records if r.session_id and r.source != SOURCE_METRIC}
        changes.extend(self._supersede(conn, sorted(sessions)))
        calls = [r for r in records if r.kind == "llm" and r.source != SOURCE_METRIC]
        if calls:
            changes.extend(self._supersede_unsessioned(conn, calls))
        return changes

    def _supersede_unsessioned(self, conn: sqlite3.Connection, calls: Sequence[UsageRecord]) -> list[LedgerChange]:
        """Retract metric-derived records WITHOUT a session id (Claude Code with
        ``OTEL_METRICS_INCLUDE_SESSION_ID=false``) that describe the same spend as per-call ``calls``: same tenant,
        user (the installation or configured identity) and model, and an export window ``(start, time]`` (widened
        by ``UNSESSIONED_SLACK_NS``) that contains the call's time. A tenant without any such metric delta (the
        common case: one indexed probe) skips the per-call lookups."""
        out: list[LedgerChange] = []
        seen: set[str] = set()
        unsessioned: dict[str, bool] = {}
        for r in calls:
            has = unsessioned.get(r.tenant)
            if has is None:
                has = unsessioned[r.tenant] = (
                    conn.execute(
                        "SELECT 1 FROM metric_deltas WHERE tenant=? AND grp IS NOT NULL AND session_id IS NULL LIMIT 1",
                        (r.tenant,),
                    ).fetchone()
                    is not None
                )
            if not has:
                continue
            rows = conn.execute(
                "SELECT DISTINCT grp, time_ns FROM metric_deltas WHERE tenant=? AND grp IS NOT NULL"
                " AND session_id IS NULL AND user_id IS ? AND model IS ? AND time_ns >= ? AND start_ns <= ?",
                (r.tenant, r.user, r.model, r.time_ns - UNSESSIONED_SLACK_NS, r.time_ns + UNSESSIONED_SLACK_NS),
            ).fetchall()
            for grp, t in rows:
                key = derived_key(grp, t)
                if key in seen:
                    continue
                seen.add(key)
                old = select_record(conn, r.tenant, key)
                if old is not None and old.source == SOURCE_METRIC:
                    put_record(conn, old, None)
                    out.append(LedgerChange(old, None))
        return out

    def covered_by_calls(self, conn: sqlite3.Connection, record: UsageRecord, start_ns: int) -> bool:
        """True when a metric-derived ``record`` (export window ``(start_ns, record.time_ns]``) is already counted by
        per-call records: by its session (``has_call_records``), or — without a session id — by an LLM call of the
        same tenant, user and model inside the window widened by ``UNSESSIONED_SLACK_NS``."""
        if record.session_id:
            return self.has_call_records(conn, record.tenant, record.session_id)
        return (
            conn.execute(
                "SELECT 1 FROM usage_records WHERE tenant=? AND time_ns >= ? AND time_ns <= ? AND kind='llm'"
                " AND source != ?"
                " AND user_id IS ? AND model IS ? LIMIT 1",
                (
                    record.tenant,
                    start_ns - UNSESSIONED_SLACK_NS,
                    record.time_ns + UNSESSIONED_SLACK_NS,
                    SOURCE_METRIC,
                    record.user,
                    record.model,
                ),
            ).fetchone()
            is not None
        )

    def _supersede(self, conn: sqlite3.Connection, sessions: Sequence[tuple[str, str]]) -> list[LedgerChange]:
        """Register sessions with per-call records; retract the metric-derived records of newly registered ones
        (session by session in ``sessions`` order, each session's records by time then key). Batched: the known
        sessions and the new ones' metric-derived records are read with ``IN (…)`` queries."""
        now = time.time_ns()
        by_tenant: dict[str, list[str]] = {}
        for tenant, session in sessions:
            by_tenant.setdefault(tenant, []).append(session)
        known: set[tuple[str, str]] = set()
        for tenant, ids in by_tenant.items():
            for part in chunks(ids):
                sql = f"SELECT session_id FROM ledger_call_sessions WHERE tenant=? AND session_id IN ({marks(part)})"
                known.update((tenant, r[0]) for r in conn.execute(sql, (tenant, *part)))
        new = [s for s in sessions if s not in known]
        if not new:
            return []
        conn.executemany(
            "INSERT OR IGNORE INTO ledger_call_sessions(tenant, session_id, first_ns) VALUES (?,?,?)",
            [(tenant, session, now) for tenant, session in new],
        )
        derived: dict[tuple[str, str], list[UsageRecord]] = {}
        new_by_tenant: dict[str, list[str]] = {}
        for tenant, session in new:
            new_by_tenant.setdefault(tenant, []).append(session)
        for tenant, ids in new_by_tenant.items():
            for part in chunks(ids):
                rows = conn.execute(
                    SELECT + f" WHERE tenant=? AND session_id IN ({marks(part)}) AND source=?",
                    (tenant, *part, SOURCE_METRIC),
                ).fetchall()  # no ORDER BY: keeps the session index
                for rec in map(record_of, rows):
                    derived.setdefault((tenant, rec.session_id or ""), []).append(rec)
        out: list[LedgerChange] = []
        for key in new:
            for old in sorted(derived.get(key, ()), key=lambda r: (r.time_ns, r.key)):
                out.append(LedgerChange(old, None))
        put_records(conn, [(c.old, None) for c in out])
        return out

    def has_call_records(self, conn: sqlite3.Connection, tenant: str, session: str | None) -> bool:
        """True when ``session`` of ``tenant`` has per-call records (its metrics then derive nothing)."""
        if not session:
            return False
        return (
            conn.execute(
                "SELECT 1 FROM ledger_call_sessions WHERE tenant=? AND session_id=?", (tenant, session)
            ).fetchone()
            is not None
        )

    async def get(self, tenant: str, key: str) -> UsageRecord | None:
        """The stored record ``(tenant, key)``, or None."""
        return await self.db.run(lambda conn: select_record(conn, tenant, key))

    async def scan(
        self, start_ns: int, end_ns: int, tenant: str | None = None, batch: int = 10_000
    ) -> AsyncIterator[list[UsageRecord]]:
        """Records with ``start_ns <= time_ns < end_ns`` (all tenants when None) in ``(time_ns, insertion)`` order,
        ``batch`` at a time, read by keyset pagination on the time index (each batch one short read job, so
        writes are not held up). Label JSON is parsed once per distinct label set."""
        # the lower bound moves to the last time read (an index range start), ties broken by id
        where = "time_ns >= ? AND time_ns < ? AND (time_ns > ? OR id > ?)"
        if tenant is not None:
            where += " AND tenant = ?"
        sql = f"SELECT {_COLS}, id FROM usage_records WHERE {where} ORDER BY time_ns, id LIMIT ?"
        tail = (tenant, batch) if tenant is not None else (batch,)
        cache: dict[str, dict[str, str]] = {}
        last_time, last_id = start_ns, -1
        while True:
            args = (last_time, end_ns, last_time, last_id, *tail)
            rows = await self.db.run(functools.partial(_fetch_all, sql, args))
            if not rows:
                return
            yield [record_of(r[:-1], cache) for r in rows]
            if len(rows) < batch:
                return
            last_time, last_id = rows[-1][_TIME], rows[-1][-1]

    # ------------------------------------------------------------------ metric points

    async def write_metric_points(self, rows: Sequence[tuple]) -> list[LedgerChange]:
        """Store metric data points (``MetricPoint`` or plain 9-tuples ``(tenant, name, series, start_ns, time_ns,
        value, temporality, unit, attributes_json)``), idempotently; keep Sums as deltas; derive, update or remove
        the usage records of Claude Code's cost/token metrics for sessions without per-call records (see
        ``relay.usage.metrics``). Returns the ledger changes. Raises ``sqlite3.Error``."""
        if not rows:
            return []
        points = [r if isinstance(r, MetricPoint) else MetricPoint(*r) for r in rows]
        return await self.db.run(lambda conn: ingest_points(conn, self, points, store_raw=True))

    async def sum_metric(
        self, name: str, start_ns: int, end_ns: int, *, tenant: str | None = None, by: Sequence[str] = ()
    ) -> list[MetricSum]:
        """Sum of the deltas of metric ``name`` with ``start_ns <= time_ns < end_ns`` (optionally one tenant),
        grouped by ``by`` keys: ``tenant``, ``user``, ``session``, ``model``, ``type`` (columns), or any other key,
        looked up in the point's ledger labels then its attributes (e.g. ``team.id``, ``query_source``). E.g. lines
        added per user: ``sum_metric("claude_code.lines_of_code.count", s, e, by=("user", "type"))``."""
        return await self.db.run(lambda conn: sum_metric(conn, name, start_ns, end_ns, tenant, by))


def _fetch_all(sql: str, args: tuple[Any, ...], conn: sqlite3.Connection) -> list[Any]:
    """``sql`` with ``args`` on ``conn`` (a writer-thread job), every row."""
    return conn.execute(sql, args).fetchall()
