"""The report's queries over the SQLite ledger (``relay.usage.sqlite_schema``: ``usage_records``,
``metric_deltas``), all grouped in SQL.

Every query reads one tenant's time range through the ``usage_records_tenant_time`` index ``(tenant, time_ns)``
and returns grouped rows; nothing reads individual records into Python. Label matchers (Alertmanager syntax) are
translated to SQL: built-in labels (``UsageRecord.label_set``) map to columns, any other label to
``json_extract(labels, '$."<name>"')``; a missing label compares as ``''``; regex matchers call ``relay_re``, a
SQL function registered on the connection (Python ``re``, fully anchored, as ``relay.matchers``).

Report queries run for seconds on a big ledger: run them on their **own connection** (:func:`open_readonly`) in a
worker thread, never on the daemon's writer thread, whose queue the OTLP acknowledgement path waits on. WAL mode
lets that connection read a consistent snapshot while the writer commits.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from relay.matchers import Matcher
from relay.reports.source import (
    CubeRow,
    ErrorCell,
    MetricTotals,
    Query,
    SessionGroup,
    SessionStats,
    ToolCell,
    TopSession,
)

__all__ = ["SqliteReportSource", "open_readonly", "label_expr", "scope_sql", "LABEL_NAME_RE", "METRIC_SOURCE"]

#: A label name usable in a query (Prometheus label names plus ``.`` and ``-``, as ``relay.matchers``).
LABEL_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
#: ``usage_records.source`` of records derived from Claude Code's cost/token metrics (one per cost group and
#: export, not one per call: excluded from call counts).
METRIC_SOURCE = "claude_code.metric"

_BUILTIN = {
    "tenant": "tenant",
    "kind": "kind",
    "user": "user_id",
    "session": "session_id",
    "trace": "trace_id",
    "prompt": "prompt_id",
    "agent": "agent",
    "model": "model",
    "tool": "tool_name",
    "success": "CASE WHEN success THEN 'true' ELSE 'false' END",
    "status_code": "CAST(status_code AS TEXT)",
    "error_class": "error_class",
    "decision": "decision",
    "decision_source": "decision_source",
    "source": "source",
    "cost_source": "cost_source",
}
#: Built-in labels that exist on ``metric_deltas`` (the others are absent there, i.e. ``''``).
_METRIC_BUILTIN = {"tenant": "tenant", "user": "user_id", "session": "session_id", "model": "model"}

#: SQLite 3.38+ has ``->>``, about a third faster than ``json_extract`` on the ledger's label JSON.
_ARROW = sqlite3.sqlite_version_info >= (3, 38, 0)

LOC_METRIC = "claude_code.lines_of_code.count"
COMMIT_METRIC = "claude_code.commit.count"
PR_METRIC = "claude_code.pull_request.count"


def label_expr(name: str, table: str = "usage_records") -> str:
    """The SQL expression of label ``name`` on ``usage_records`` (or ``metric_deltas``). Raises ``ValueError``
    for a name that is not a valid label name (names are inlined into SQL)."""
    if not LABEL_NAME_RE.match(name):
        raise ValueError(f"invalid label name {name!r}")
    builtin = _BUILTIN if table == "usage_records" else _METRIC_BUILTIN
    if name in builtin:
        return builtin[name]
    if table != "usage_records" and name in _BUILTIN:
        return "NULL"
    return f"labels ->> '$.\"{name}\"'" if _ARROW else f"json_extract(labels, '$.\"{name}\"')"


def scope_sql(matchers: tuple[Matcher, ...] | list[Matcher], table: str = "usage_records") -> tuple[str, list[Any]]:
    """``AND …`` conditions (and parameters) for ``matchers``; ``('', [])`` when there are none."""
    parts: list[str] = []
    params: list[Any] = []
    for m in matchers:
        e = f"COALESCE({label_expr(m.name, table)}, '')"
        if m.op == "=":
            parts.append(f"{e} = ?")
        elif m.op == "!=":
            parts.append(f"{e} != ?")
        elif m.op == "=~":
            parts.append(f"relay_re(?, {e})")
        else:
            parts.append(f"NOT relay_re(?, {e})")
        params.append(m.value)
    return "".join(f" AND {p}" for p in parts), params


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(f"^(?:{pattern})$")


def _relay_re(pattern: str, value: str) -> int:
    return 1 if _compiled(pattern).match(value or "") else 0


def open_readonly(path: str | Path) -> sqlite3.Connection:
    """A query-only connection to the ledger database at ``path`` (for a worker thread; WAL readers do not block
    the writer). Raises ``sqlite3.OperationalError`` when the file cannot be opened."""
    conn = sqlite3.connect(str(path), check_same_thread=False)
    conn.execute("PRAGMA query_only=1")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


def _bucket_expr(edges: tuple[int, ...], end_ns: int) -> str:
    """Bucket index of ``time_ns``: integer arithmetic when every bucket has the same length (hours; days without a
    DST change), else a CASE over the edges (a 23- or 25-hour day)."""
    if len(edges) <= 1:
        return "0"
    bounds = [*edges, end_ns]
    lengths = {b - a for a, b in zip(bounds, bounds[1:], strict=False)}
    if len(lengths) == 1:
        return f"((time_ns - {int(edges[0])}) / {lengths.pop()})"
    whens = " ".join(f"WHEN time_ns < {int(e)} THEN {i}" for i, e in enumerate(edges[1:]))
    return f"CASE {whens} ELSE {len(edges) - 1} END"


class SqliteReportSource:
    """:class:`~relay.reports.source.ReportSource` over a sqlite3 connection to the ledger (``usage_records``,
    ``metric_deltas``). Registers ``relay_re`` on ``conn``. Not thread-safe: one instance per thread."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        conn.create_function("relay_re", 2, _relay_re, deterministic=True)

    def _where(self, q: Query) -> tuple[str, list[Any]]:
        extra, params = scope_sql(q.scope)
        return f"tenant = ? AND time_ns >= ? AND time_ns < ?{extra}", [q.tenant, q.start_ns, q.end_ns, *params]

    def usage_cube(self, q: Query) -> list[CubeRow]:
        """See :meth:`ReportSource.usage_cube`. One range scan, one sort of the period's LLM records."""
        where, params = self._where(q)
        grp = label_expr(q.group_label) if q.group_label else "NULL"
        if q.chart_label == "model":
            chart_col, chart_key = "NULL", ""
        elif q.chart_label == q.group_label:
            chart_col, chart_key = "NULL", ""
        else:
            chart_col, chart_key = label_expr(q.chart_label), ", 6"
        sql = f"""
            SELECT user_id, model, {_bucket_expr(q.edges, q.end_ns)}, {grp}, {chart_col} AS chart, COUNT(*),
                   SUM(NOT success), SUM(success AND cost_source = 'none' AND source != '{METRIC_SOURCE}'),
                   SUM(user_id IS NULL), SUM(source = '{METRIC_SOURCE}'), SUM(cost_nanos), SUM(input_tokens),
                   SUM(output_tokens), SUM(cache_read_tokens), SUM(cache_creation_tokens),
                   SUM(CASE WHEN cost_source = 'reported' THEN cost_nanos ELSE 0 END),
                   SUM(CASE WHEN cost_source = 'computed' THEN cost_nanos ELSE 0 END),
                   SUM(success AND cost_source = 'computed' AND source != '{METRIC_SOURCE}')
            FROM usage_records WHERE {where} AND kind = 'llm'
            GROUP BY 1, 2, 3, 4{chart_key}"""
        out = []
        for (
            user,
            model,
            bucket,
            group,
            chart_v,
            n,
            errors,
            no_cost,
            no_user,
            derived,
            cost,
            inp,
            outp,
            cr,
            cc,
            rep,
            comp,
            n_comp,
        ) in self.conn.execute(sql, params):
            group = None if group is None else str(group)
            chart = model if q.chart_label == "model" else group if q.chart_label == q.group_label else chart_v
            out.append(
                CubeRow(
                    bucket,
                    model,
                    user,
                    group,
                    None if chart is None else str(chart),
                    n,
                    errors or 0,
                    no_cost or 0,
                    no_user or 0,
                    derived or 0,
                    cost or 0,
                    inp or 0,
                    outp or 0,
                    cr or 0,
                    cc or 0,
                    rep or 0,
                    comp or 0,
                    n_comp or 0,
                )
            )
        return out

    def tool_cube(self, q: Query) -> list[ToolCell]:
        """See :meth:`ReportSource.tool_cube`. One range scan, one sort of the period's tool records."""
        where, params = self._where(q)
        sql = f"""SELECT tool_name, success, decision, error_class, COUNT(*), SUM(user_id IS NULL)
                  FROM usage_records WHERE {where} AND kind = 'tool' GROUP BY 1, 2, 3, 4"""
        return [
            ToolCell(tool, bool(ok), decision, eclass, n, no_user or 0)
            for tool, ok, decision, eclass, n, no_user in self.conn.execute(sql, params)
        ]

    def error_cube(self, q: Query) -> list[ErrorCell]:
        """See :meth:`ReportSource.error_cube`."""
        where, params = self._where(q)
        sql = f"""SELECT error_class, status_code, COUNT(*) FROM usage_records
                  WHERE {where} AND kind = 'llm' AND NOT success GROUP BY 1, 2"""
        return [ErrorCell(eclass, status, n) for eclass, status, n in self.conn.execute(sql, params)]

    def session_stats(self, q: Query, top_n: int) -> SessionStats:
        """See :meth:`ReportSource.session_stats`. One range scan (the per-session table is materialised once)."""
        where, params = self._where(q)
        grp = label_expr(q.group_label) if q.group_label else "NULL"
        sql = f"""
            WITH s AS MATERIALIZED (
                SELECT session_id AS sid, user_id AS u, {grp} AS g, SUM(cost_nanos) AS c,
                       COUNT(DISTINCT prompt_id) AS p,
                       SUM(kind = 'llm' AND source != '{METRIC_SOURCE}') AS calls,
                       MAX(time_ns) - MIN(time_ns) AS span
                FROM usage_records WHERE {where}
                GROUP BY session_id, user_id, g)
            SELECT 0, u, g, COUNT(sid), SUM(p), SUM(CASE WHEN sid IS NOT NULL THEN span ELSE 0 END), NULL, NULL
            FROM s GROUP BY u, g
            UNION ALL
            SELECT 2, NULL, NULL, COUNT(DISTINCT sid), SUM(p), NULL, NULL, NULL FROM s
            UNION ALL
            SELECT * FROM (SELECT 1, u, g, sid, p, span, c, calls FROM s WHERE sid IS NOT NULL
                           ORDER BY c DESC, sid LIMIT ?)"""
        stats = SessionStats()
        for tag, u, g, a, p, span, c, calls in self.conn.execute(sql, [*params, top_n]):
            if tag == 0:
                stats.groups.append(SessionGroup(u, None if g is None else str(g), a or 0, p or 0, (span or 0) / 1e9))
            elif tag == 2:
                stats.distinct, stats.interactions = a or 0, p or 0
            else:
                stats.top.append(TopSession(a, u, c or 0, p or 0, calls or 0, (span or 0) / 1e9))
        return stats

    def metric_totals(self, q: Query) -> MetricTotals:
        """See :meth:`ReportSource.metric_totals`: sums of ``metric_deltas`` in range. Claude Code exports a
        series only when it changed, so once any ``claude_code.*`` point exists in range a metric without points
        is 0; with no point at all every figure is None (metrics not exported)."""
        extra, params = scope_sql(q.scope, "metric_deltas")
        sql = f"""
            SELECT name, type, SUM(delta), COUNT(*) FROM metric_deltas
            WHERE name >= 'claude_code.' AND name < 'claude_code/' AND time_ns >= ? AND time_ns < ?
              AND tenant = ?{extra}
            GROUP BY name, type"""
        sums: dict[tuple[str, str | None], float] = {}
        for name, typ, value, _n in self.conn.execute(sql, [q.start_ns, q.end_ns, q.tenant, *params]):
            sums[(name, typ)] = value or 0.0
        if not sums:
            return MetricTotals(None, None, None, None)

        def total(name: str, typ: str | None = None) -> int:
            return int(round(sum(v for (n, t), v in sums.items() if n == name and (typ is None or t == typ))))

        return MetricTotals(
            total(LOC_METRIC, "added"), total(LOC_METRIC, "removed"), total(COMMIT_METRIC), total(PR_METRIC)
        )

    def spend(self, tenant: str, start_ns: int, end_ns: int, scopes: Sequence[Sequence[Matcher]]) -> list[int]:
        """See :meth:`ReportSource.spend`: one range scan, one conditional sum per matcher set (no sort)."""
        if not scopes:
            return []
        cols, params = [], []
        for ms in scopes:
            cond, p = scope_sql(list(ms))
            cols.append(f"SUM(CASE WHEN 1{cond} THEN cost_nanos ELSE 0 END)")
            params += p
        sql = f"SELECT {', '.join(cols)} FROM usage_records WHERE tenant = ? AND time_ns >= ? AND time_ns < ?"
        row = self.conn.execute(sql, [*params, tenant, start_ns, end_ns]).fetchone()
        return [v or 0 for v in row]

    def spend_groups(
        self, tenant: str, start_ns: int, end_ns: int, matchers: Sequence[Matcher], labels: Sequence[str]
    ) -> list[tuple[dict[str, str], int]]:
        """See :meth:`ReportSource.spend_groups`: one range scan, one sort by the label values."""
        cond, params = scope_sql(list(matchers))
        exprs = [label_expr(n) for n in labels]
        keys = ", ".join(str(i + 1) for i in range(len(exprs)))
        sql = (
            f"SELECT {', '.join(exprs)}, SUM(cost_nanos) AS c FROM usage_records "
            f"WHERE tenant = ? AND time_ns >= ? AND time_ns < ?{cond} GROUP BY {keys} ORDER BY c DESC"
        )
        out = []
        for row in self.conn.execute(sql, [tenant, start_ns, end_ns, *params]):
            vals = {n: str(v) for n, v in zip(labels, row[:-1], strict=False) if v is not None and v != ""}
            out.append((vals, row[-1] or 0))
        return out
