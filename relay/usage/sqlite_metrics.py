"""Metric points in the SQLite ledger: idempotent storage, deltas, and the records derived from Claude Code's
cost/token metrics (rules in ``relay.usage.metrics``). Functions here run on the database's writer thread inside
one job of ``SqliteLedgerStore``."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any, Protocol

from relay.model import UsageRecord
from relay.usage.metrics import (
    COST_METRIC,
    CUMULATIVE,
    DELTA,
    TOKEN_METRIC,
    MetricPoint,
    MetricSum,
    cost_group,
    derive_record,
    derived_key,
)
from relay.usage.sqlite_records import put_record, select_record
from relay.usage.store import LedgerChange


class LedgerCallbacks(Protocol):
    """What metric ingestion needs from the ledger store (``SqliteLedgerStore`` implements it): whether per-call
    records already count a metric-derived record, and pricing a record without a cost."""

    def covered_by_calls(self, conn: sqlite3.Connection, record: UsageRecord, start_ns: int) -> bool:
        """True when per-call records already count ``record`` (export window ``(start_ns, record.time_ns]``)."""

    def price(self, r: UsageRecord) -> UsageRecord:
        """``r`` with a computed cost when it has none and its model is priced."""


__all__ = ["LedgerCallbacks", "ingest_points", "backfill_deltas", "sum_metric", "GROUP_COLUMNS"]

#: ``sum_metric`` grouping keys stored as columns; any other key is looked up in labels, then attributes.
GROUP_COLUMNS = {"tenant": "tenant", "user": "user_id", "session": "session_id", "model": "model", "type": "type"}

_STREAM = "tenant=? AND name=? AND series=? AND start_ns=?"


def _diff(prev: float | None, value: float, monotonic: bool) -> float:
    """Delta of a cumulative value after ``prev``: the whole value at a stream start or a monotonic reset."""
    if prev is None or (monotonic and value < prev):
        return value
    return value - prev


def _neighbour(conn: sqlite3.Connection, p: MetricPoint, later: bool) -> tuple[int, float] | None:
    """``(time_ns, value)`` of the stored point of ``p``'s stream just before (or after) it."""
    op, order = (">", "ASC") if later else ("<", "DESC")
    return conn.execute(
        f"SELECT time_ns, value FROM metric_points WHERE {_STREAM} AND time_ns {op} ? ORDER BY time_ns {order} LIMIT 1",
        (p.tenant, p.name, p.series, p.start_ns, p.time_ns),
    ).fetchone()


def _str(v: Any) -> str | None:
    return None if v is None or v == "" else str(v)


def ingest_points(
    conn: sqlite3.Connection, store: LedgerCallbacks, points: Sequence[MetricPoint], store_raw: bool
) -> list[LedgerChange]:
    """Store ``points`` (skipping ones already stored when ``store_raw``; all of them are taken as new otherwise,
    for a backfill), keep Sums as deltas, and re-derive the usage records of every cost group and export time they
    touch. Returns the resulting ledger changes in time order."""
    touched: set[tuple[str, str, int]] = set()
    for p in sorted(points, key=lambda p: (p.time_ns, p.start_ns)):
        if store_raw:
            cur = conn.execute("INSERT OR IGNORE INTO metric_points VALUES (?,?,?,?,?,?,?,?,?)", tuple(p[:9]))
            if cur.rowcount == 0:
                continue  # the same point again: nothing to add
        if p.temporality not in (DELTA, CUMULATIVE):
            continue
        attrs = json.loads(p.attributes)
        grp = cost_group(attrs) if p.name in (COST_METRIC, TOKEN_METRIC) else None
        delta = p.value
        if p.temporality == CUMULATIVE:
            prev = _neighbour(conn, p, later=False)
            delta = _diff(prev[1] if prev else None, p.value, p.monotonic)
            nxt = _neighbour(conn, p, later=True)
            if nxt is not None:  # a late point: the next one of its stream now counts from it
                conn.execute(
                    f"UPDATE metric_deltas SET delta=? WHERE {_STREAM} AND time_ns=?",
                    (_diff(p.value, nxt[1], p.monotonic), p.tenant, p.name, p.series, p.start_ns, nxt[0]),
                )
                if grp:
                    touched.add((p.tenant, grp, nxt[0]))
        conn.execute(
            "INSERT OR REPLACE INTO metric_deltas(tenant, name, series, start_ns, time_ns, delta, unit, grp, session_id,"
            " user_id, model, type, labels, attributes) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                p.tenant,
                p.name,
                p.series,
                p.start_ns,
                p.time_ns,
                delta,
                p.unit,
                grp,
                _str(attrs.get("session.id")),
                p.user,
                _str(attrs.get("model")),
                _str(attrs.get("type")),
                json.dumps(dict(p.labels or {}), sort_keys=True, separators=(",", ":")),
                p.attributes,
            ),
        )
        if grp:
            touched.add((p.tenant, grp, p.time_ns))
    changes = []
    for tenant, grp, time_ns in sorted(touched, key=lambda t: (t[2], t[0], t[1])):
        change = _rederive(conn, store, tenant, grp, time_ns)
        if change is not None:
            changes.append(change)
    return changes


def _rederive(
    conn: sqlite3.Connection, store: LedgerCallbacks, tenant: str, grp: str, time_ns: int
) -> LedgerChange | None:
    """Bring the derived record of one cost group at one export time in line with its stored deltas."""
    old = select_record(conn, tenant, derived_key(grp, time_ns))
    rows = conn.execute(
        "SELECT name, type, delta, user_id, labels, attributes FROM metric_deltas "
        "WHERE tenant=? AND grp=? AND time_ns=?",
        (tenant, grp, time_ns),
    ).fetchall()
    new = derive_record(tenant, grp, time_ns, rows)
    if new is not None:
        start = conn.execute(
            "SELECT MIN(start_ns) FROM metric_deltas WHERE tenant=? AND grp=? AND time_ns=?", (tenant, grp, time_ns)
        ).fetchone()[0]
        if store.covered_by_calls(conn, new, time_ns if start is None else start):
            new = None  # counted from its per-call records
    if new is not None:
        new = store.price(new)
    if old == new:
        return None
    put_record(conn, old, new)
    return LedgerChange(old, new)


def backfill_deltas(conn: sqlite3.Connection, store: LedgerCallbacks) -> list[LedgerChange]:
    """Upgrade from issue 2 (raw points only): when no delta is stored yet but Sum points are, derive deltas and
    records from all stored points. Returns the changes (the rules engine reads them through ``scan``)."""
    if conn.execute("SELECT 1 FROM metric_deltas LIMIT 1").fetchone():
        return []
    if not conn.execute("SELECT 1 FROM metric_points WHERE temporality IN (1, 2) LIMIT 1").fetchone():
        return []
    rows = conn.execute("SELECT * FROM metric_points ORDER BY time_ns").fetchall()
    return ingest_points(conn, store, [MetricPoint(*r) for r in rows], store_raw=False)


def sum_metric(
    conn: sqlite3.Connection, name: str, start_ns: int, end_ns: int, tenant: str | None, by: Sequence[str]
) -> list[MetricSum]:
    """See ``SqliteLedgerStore.sum_metric``."""
    exprs: list[str] = []
    params: list[Any] = []
    for key in by:
        if key in GROUP_COLUMNS:
            exprs.append(GROUP_COLUMNS[key])
        else:
            path = '$."' + key.replace('"', '\\"') + '"'
            exprs.append("COALESCE(json_extract(labels, ?), json_extract(attributes, ?))")
            params += [path, path]
    sql = f"SELECT {', '.join([*exprs, 'SUM(delta)'])} FROM metric_deltas WHERE name=? AND time_ns>=? AND time_ns<?"
    params += [name, start_ns, end_ns]
    if tenant is not None:
        sql += " AND tenant=?"
        params.append(tenant)
    if by:
        sql += (
            " GROUP BY "
            + ", ".join(str(i + 1) for i in range(len(by)))
            + " ORDER BY "
            + ", ".join(str(i + 1) for i in range(len(by)))
        )
    out = []
    for row in conn.execute(sql, params):
        if row[-1] is None:
            continue
        out.append(MetricSum({k: _str(v) for k, v in zip(by, row, strict=False)}, float(row[-1])))
    return out
