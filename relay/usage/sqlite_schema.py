"""SQLite tables of the usage ledger (applied by ``SqliteLedgerStore`` at start-up) and the upgrade from the
issue-2 layout (``usage_records`` holding a JSON ``record`` column, written by the spool).

Tables:

- ``usage_records``: one row per LLM or tool call, unique per ``(tenant, key)``. Every number and every common
  dimension is a real column, so reports aggregate with plain SQL (``SUM(cost_nanos) … GROUP BY user_id``);
  ``labels`` is sorted-key JSON (``json_extract(labels, '$."team.id"')``). A rowid table: rows are appended roughly
  in time order, so a time-range read through ``(tenant, time_ns)`` touches neighbouring pages.
- ``metric_points``: raw Sum/Gauge data points as received, the idempotency key of metric ingestion.
- ``metric_deltas``: every Sum point as a delta (``relay.usage.metrics``) with its ledger identity (user, session,
  model, ``type``, labels) as columns; ``grp`` is the cost group of ``cost.usage``/``token.usage`` points.
- ``ledger_call_sessions``: sessions that have per-call records (events or spans); their metric-derived records
  are retracted and no new ones are derived.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import fields

from relay.model import UsageRecord

__all__ = ["SCHEMA", "RECORD_COLUMNS", "migrate_v1", "migrate_nanos"]

#: ``usage_records`` columns in ``UsageRecord`` field order (``user`` is stored as ``user_id``).
RECORD_COLUMNS = tuple("user_id" if f.name == "user" else f.name for f in fields(UsageRecord))

SCHEMA = """
CREATE TABLE IF NOT EXISTS usage_records (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL, kind TEXT NOT NULL, time_ns INTEGER NOT NULL, tenant TEXT NOT NULL,
    session_id TEXT, trace_id TEXT, prompt_id TEXT, user_id TEXT, labels TEXT NOT NULL DEFAULT '{}',
    agent TEXT, model TEXT,
    input_tokens INTEGER NOT NULL DEFAULT 0, output_tokens INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens INTEGER NOT NULL DEFAULT 0, cache_creation_tokens INTEGER NOT NULL DEFAULT 0,
    cache_creation_5m_tokens INTEGER NOT NULL DEFAULT 0, cache_creation_1h_tokens INTEGER NOT NULL DEFAULT 0,
    cost_nanos INTEGER NOT NULL DEFAULT 0, cost_source TEXT NOT NULL DEFAULT 'none',
    duration_ms REAL, ttft_ms REAL, success INTEGER NOT NULL DEFAULT 1, status_code INTEGER,
    error_class TEXT, error TEXT, tool_name TEXT, decision TEXT, decision_source TEXT, source TEXT NOT NULL DEFAULT '',
    UNIQUE (tenant, key));
CREATE INDEX IF NOT EXISTS usage_records_tenant_time ON usage_records(tenant, time_ns);
CREATE INDEX IF NOT EXISTS usage_records_time ON usage_records(time_ns);
CREATE INDEX IF NOT EXISTS usage_records_session ON usage_records(tenant, session_id);
CREATE TABLE IF NOT EXISTS metric_points (
    tenant TEXT NOT NULL, name TEXT NOT NULL, series TEXT NOT NULL, start_ns INTEGER NOT NULL,
    time_ns INTEGER NOT NULL, value REAL NOT NULL, temporality INTEGER NOT NULL, unit TEXT NOT NULL,
    attributes TEXT NOT NULL,
    PRIMARY KEY (tenant, name, series, start_ns, time_ns)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS metric_deltas (
    tenant TEXT NOT NULL, name TEXT NOT NULL, series TEXT NOT NULL, start_ns INTEGER NOT NULL,
    time_ns INTEGER NOT NULL, delta REAL NOT NULL, unit TEXT NOT NULL, grp TEXT,
    session_id TEXT, user_id TEXT, model TEXT, type TEXT, labels TEXT NOT NULL, attributes TEXT NOT NULL,
    PRIMARY KEY (tenant, name, series, start_ns, time_ns)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS metric_deltas_name_time ON metric_deltas(name, time_ns);
CREATE INDEX IF NOT EXISTS metric_deltas_group ON metric_deltas(tenant, grp, time_ns) WHERE grp IS NOT NULL;
CREATE INDEX IF NOT EXISTS metric_deltas_unsessioned ON metric_deltas(tenant, model, time_ns)
    WHERE grp IS NOT NULL AND session_id IS NULL;
CREATE TABLE IF NOT EXISTS ledger_call_sessions (
    tenant TEXT NOT NULL, session_id TEXT NOT NULL, first_ns INTEGER NOT NULL,
    PRIMARY KEY (tenant, session_id)) WITHOUT ROWID;
"""


def migrate_nanos(conn: sqlite3.Connection) -> bool:
    """Upgrade ``usage_records`` from whole micro-USD (``cost_micros``) to nano-USD (``cost_nanos`` = micros × 1000)
    in the caller's transaction; True when it did. Costs stored before keep their micro-dollar rounding."""
    cols = {r[1] for r in conn.execute("PRAGMA table_info(usage_records)")}
    if "cost_micros" not in cols:
        return False
    conn.execute("ALTER TABLE usage_records RENAME COLUMN cost_micros TO cost_nanos")
    conn.execute("UPDATE usage_records SET cost_nanos = cost_nanos * 1000")
    return True


def migrate_v1(conn: sqlite3.Connection) -> list[UsageRecord]:
    """Run BEFORE ``SCHEMA``, in the job that re-inserts the result: if ``usage_records`` has the issue-2 layout,
    drop it and return its records (decoded from the JSON ``record`` column); the caller creates ``SCHEMA`` and
    writes them back in the same transaction, so a crash leaves either layout intact. Returns [] otherwise."""
    cols = {r[1] for r in conn.execute("PRAGMA table_info(usage_records)")}
    if not cols or "input_tokens" in cols or "record" not in cols:
        return []
    known = {f.name for f in fields(UsageRecord)}
    records = []
    for tenant, blob in conn.execute("SELECT tenant, record FROM usage_records"):
        raw = json.loads(blob)
        if "cost_micros" in raw:  # issue-2 records kept whole micro-USD
            raw["cost_nanos"] = int(raw.pop("cost_micros") or 0) * 1000
        d = {k: v for k, v in raw.items() if k in known}
        d["tenant"] = tenant
        records.append(UsageRecord(**d))
    conn.execute("DROP TABLE usage_records")  # its indexes go with it
    return records
