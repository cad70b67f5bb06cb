"""Benchmark: a weekly usage report over a big SQLite ledger — time to compute and to render.

::

    python bench/report.py                       # 10,000,000 records over 8 weeks (+ a 1,000,000 baseline), ~3-5 min
    python bench/report.py --records 2000000     # smaller
    python bench/report.py --weeks 2             # every record in the report week and the week before
    python bench/report.py --json out.json

The ledger is generated **inside SQLite** (a recursive CTE, deterministic pseudo-random values) straight into
relay's ledger schema (``relay.usage.sqlite_schema``: ``usage_records`` + ``metric_deltas`` and their indexes,
created after the bulk insert), so a 10M-record ledger takes well under a minute. Generated files are cached in
``/tmp`` keyed by their parameters, so reruns skip generation (``--fresh`` regenerates).

Shape of the data: one tenant; records spread evenly over ``--weeks`` ISO weeks (Europe/Berlin) ending with the
report week, in time order (the ledger is appended roughly in time order); 70 % LLM calls (4 models, 3 % failed
with 429/529/500), 30 % tool calls (5 tools, 5 % rejected, 8 % of the rest failed); 64 sessions open at a time,
~200 records per session, a prompt every 10 records; 200 users in 10 teams (``team.id`` label); one metric delta
(lines of code, commits, PRs) per 100 records.

Measured (same process, after generation; the OS page cache is warm): compute = every query of the report
(usage cube and session statistics for the week and the previous week, metric totals, budget status for a
monthly team budget and a weekly tenant budget), then each renderer (Markdown, Slack blocks, JSON, CSV, PNG chart).
Printed: seconds per phase, ledger rows scanned per second (records of the report week and the week before),
RSS, and the ratio to the same report over the baseline ledger.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from relay.reports.chart import render_chart  # noqa: E402
from relay.reports.compute import ReportRequest, compute_report  # noqa: E402
from relay.reports.model import BudgetSpec  # noqa: E402
from relay.reports.periods import Period  # noqa: E402
from relay.reports.render_csv import render_csv, render_json  # noqa: E402
from relay.reports.render_md import render_markdown  # noqa: E402
from relay.reports.render_slack import render_slack  # noqa: E402
from relay.reports.sql import SqliteReportSource, open_readonly  # noqa: E402
from relay.usage.sqlite_schema import SCHEMA  # noqa: E402

TZ = ZoneInfo("Europe/Berlin")
REPORT_WEEK = date(2026, 11, 16)  # 2026-W47
GEN_VERSION = 1
MiB = 1024 * 1024

_TABLES_ONLY = ";\n".join(stmt for stmt in SCHEMA.split(";") if "CREATE TABLE" in stmt) + ";"

_INSERT_RECORDS = """
WITH RECURSIVE seq(i) AS (SELECT :lo UNION ALL SELECT i + 1 FROM seq WHERE i + 1 < :hi),
r AS (SELECT i, (i * 2654435761) % 4294967296 AS h, (i % 64) + 64 * (i / 12800) AS sess FROM seq)
INSERT INTO usage_records (key, kind, time_ns, tenant, session_id, prompt_id, user_id, labels, model,
    input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, cache_creation_5m_tokens, cost_nanos,
    cost_source, duration_ms, success, status_code, error_class, tool_name, decision, source)
SELECT
    'k' || i,
    CASE WHEN h % 10 < 7 THEN 'llm' ELSE 'tool' END,
    :t0 + i * :step,
    'acme',
    's' || sess,
    's' || sess || '-p' || (i / 640),
    'user-' || (sess % 200),
    '{"team.id":"team-' || (sess % 10) || '"}',
    CASE WHEN h % 10 < 7 THEN CASE (h / 10) % 4 WHEN 0 THEN 'claude-opus-4-5' WHEN 1 THEN 'claude-sonnet-4-5'
         WHEN 2 THEN 'claude-haiku-4-5' ELSE 'claude-sonnet-4' END END,
    CASE WHEN h % 10 < 7 AND (h / 40) % 100 >= 3 THEN (h / 7) % 5000 ELSE 0 END,
    CASE WHEN h % 10 < 7 AND (h / 40) % 100 >= 3 THEN (h / 11) % 2000 ELSE 0 END,
    CASE WHEN h % 10 < 7 AND (h / 40) % 100 >= 3 THEN (h / 13) % 60000 ELSE 0 END,
    CASE WHEN h % 10 < 7 AND (h / 40) % 100 >= 3 THEN (h / 17) % 8000 ELSE 0 END,
    CASE WHEN h % 10 < 7 AND (h / 40) % 100 >= 3 THEN (h / 17) % 8000 ELSE 0 END,
    CASE WHEN h % 10 < 7 AND (h / 40) % 100 >= 3 THEN 1000 + (h / 19) % 200000 ELSE 0 END,
    CASE WHEN h % 10 < 7 AND (h / 40) % 100 >= 3 THEN 'reported' ELSE 'none' END,
    (h / 23) % 30000,
    CASE WHEN h % 10 < 7 THEN (h / 40) % 100 >= 3
         ELSE (h / 29) % 100 >= 5 AND (h / 31) % 100 >= 8 END,
    CASE WHEN h % 10 < 7 AND (h / 40) % 100 < 3 THEN CASE (h / 37) % 3 WHEN 0 THEN 429 WHEN 1 THEN 500 END END,
    CASE WHEN h % 10 < 7 AND (h / 40) % 100 < 3 THEN CASE (h / 37) % 3 WHEN 0 THEN 'rate_limit'
         WHEN 1 THEN 'server_error' ELSE 'overloaded' END
         WHEN h % 10 >= 7 AND (h / 29) % 100 < 5 THEN 'rejected'
         WHEN h % 10 >= 7 AND (h / 31) % 100 < 8 THEN 'ShellError' END,
    CASE WHEN h % 10 >= 7 THEN CASE (h / 41) % 5 WHEN 0 THEN 'Bash' WHEN 1 THEN 'Read' WHEN 2 THEN 'Edit'
         WHEN 3 THEN 'Write' ELSE 'Grep' END END,
    CASE WHEN h % 10 >= 7 THEN CASE WHEN (h / 29) % 100 < 5 THEN 'reject' ELSE 'accept' END END,
    'claude_code.event'
FROM r
"""

_INSERT_METRICS = """
WITH RECURSIVE seq(j) AS (SELECT :lo UNION ALL SELECT j + 1 FROM seq WHERE j + 1 < :hi),
m AS (SELECT j, j * 100 AS i, ((j * 100) % 64) + 64 * ((j * 100) / 12800) AS sess FROM seq)
INSERT INTO metric_deltas (tenant, name, series, start_ns, time_ns, delta, unit, grp, session_id, user_id, model,
    type, labels, attributes)
SELECT 'acme',
    CASE j % 4 WHEN 0 THEN 'claude_code.lines_of_code.count' WHEN 1 THEN 'claude_code.lines_of_code.count'
         WHEN 2 THEN 'claude_code.commit.count' ELSE 'claude_code.pull_request.count' END,
    's' || sess || ':' || (j % 4), :t0 + i * :step - 60000000000, :t0 + i * :step,
    CASE j % 4 WHEN 0 THEN (j * 7) % 300 WHEN 1 THEN (j * 3) % 80 WHEN 2 THEN (j % 3) ELSE (j % 7 = 0) END,
    '', NULL, 's' || sess, 'user-' || (sess % 200), NULL,
    CASE j % 4 WHEN 0 THEN 'added' WHEN 1 THEN 'removed' END,
    '{"team.id":"team-' || (sess % 10) || '"}', '{}'
FROM m
"""


def _rss() -> float:
    return psutil.Process().memory_info().rss / MiB


def generate(records: int, weeks: int, fresh: bool, chunk: int = 1_000_000) -> tuple[Path, float]:
    """The cached ledger file for ``records`` over ``weeks`` weeks ending with the report week; seconds spent
    generating (0 when cached)."""
    path = Path(f"/tmp/relay-bench-report-v{GEN_VERSION}-{records}-{weeks}w.db")
    if path.exists() and not fresh:
        return path, 0.0
    for suffix in ("", "-wal", "-shm", ".tmp"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    tmp = Path(str(path) + ".tmp")
    start = datetime.combine(REPORT_WEEK - timedelta(weeks=weeks - 1), datetime.min.time(), TZ)
    span_ns = weeks * 7 * 86400 * 10**9
    t0 = int(start.timestamp()) * 10**9
    step = span_ns // records
    began = time.perf_counter()
    conn = sqlite3.connect(tmp, isolation_level=None)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-262144")
    conn.executescript(_TABLES_ONLY)
    for lo in range(0, records, chunk):
        hi = min(records, lo + chunk)
        conn.execute("BEGIN")
        conn.execute(_INSERT_RECORDS, {"lo": lo, "hi": hi, "t0": t0, "step": step})
        conn.execute(_INSERT_METRICS, {"lo": lo // 100, "hi": hi // 100, "t0": t0, "step": step})
        conn.execute("COMMIT")
        print(f"  generated {hi:,} / {records:,} records ({time.perf_counter() - began:.0f} s)", flush=True)
    conn.executescript(SCHEMA)  # the indexes, built once over the sorted data
    conn.execute("ANALYZE")
    conn.close()
    os.replace(tmp, path)
    return path, time.perf_counter() - began


class TimedSource(SqliteReportSource):
    """The report's SQL source with the time of every query kept per method."""

    def __init__(self, conn: sqlite3.Connection):
        super().__init__(conn)
        self.times: dict[str, float] = {}

    def _timed(self, name, fn, *args):
        t = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - t

    def usage_cube(self, q):
        return self._timed("usage_cube", super().usage_cube, q)

    def session_stats(self, q, top_n):
        return self._timed("session_stats", super().session_stats, q, top_n)

    def metric_totals(self, q):
        return self._timed("metric_totals", super().metric_totals, q)

    def tool_cube(self, q):
        return self._timed("tool_cube", super().tool_cube, q)

    def error_cube(self, q):
        return self._timed("error_cube", super().error_cube, q)

    def spend(self, *args):
        return self._timed("budgets", super().spend, *args)


def measure(path: Path) -> dict:
    """Compute and render the W47 report over ``path``; seconds per phase, rows scanned, RSS."""
    period = Period("weekly", REPORT_WEEK, TZ)
    conn = open_readonly(path)
    scanned = conn.execute(
        "SELECT COUNT(*) FROM usage_records WHERE tenant = 'acme' AND time_ns >= ? AND time_ns < ?",
        (period.previous().start_ns, period.end_ns),
    ).fetchone()[0]
    total = conn.execute("SELECT MAX(id) FROM usage_records").fetchone()[0]
    source = TimedSource(conn)
    budgets = [
        BudgetSpec("team-3 monthly", 5000.0, "month", ('team.id="team-3"',), "Europe/Berlin"),
        BudgetSpec("tenant weekly", 20000.0, "week", (), "Europe/Berlin"),
    ]
    rss0 = _rss()
    t = time.perf_counter()
    report = compute_report(
        source, ReportRequest("acme", period), budgets=budgets, alerts=[], now=datetime(2026, 12, 1, tzinfo=UTC)
    )
    compute_s = time.perf_counter() - t
    phases = {"compute": compute_s, **{f"  {k}": v for k, v in source.times.items()}}
    outputs = {}
    for name, fn in (
        ("render markdown", render_markdown),
        ("render slack blocks", render_slack),
        ("render json", render_json),
        ("render csv", render_csv),
        ("render chart (png)", render_chart),
    ):
        t = time.perf_counter()
        outputs[name] = fn(report)
        phases[name] = time.perf_counter() - t
    conn.close()
    render_s = sum(v for k, v in phases.items() if k.startswith("render"))
    return {
        "ledger_records": total,
        "scanned_records": scanned,
        "week_records": report.current.records,
        "phases_s": phases,
        "compute_s": compute_s,
        "render_s": render_s,
        "total_s": compute_s + render_s,
        "rows_per_s": scanned / compute_s if compute_s else float("nan"),
        "rss_before_mib": rss0,
        "rss_after_mib": _rss(),
        "cost_usd": report.current.cost_nanos / 1e9,
        "png_bytes": len(outputs["render chart (png)"] or b""),
        "slack_blocks": len(outputs["render slack blocks"]["blocks"]),
    }


def _print(label: str, m: dict, gen_s: float) -> None:
    print(
        f"\n== {label}: {m['ledger_records']:,} records in the ledger, {m['week_records']:,} in the report week, "
        f"{m['scanned_records']:,} scanned (week + previous week)"
        + (f"; generated in {gen_s:.1f} s" if gen_s else "; cached ledger file")
    )
    for k, v in m["phases_s"].items():
        print(f"  {k:<24} {v:8.3f} s")
    print(f"  {'total':<24} {m['total_s']:8.3f} s   ({m['rows_per_s']:,.0f} rows/s scanned in compute)")
    print(
        f"  RSS {m['rss_before_mib']:.0f} → {m['rss_after_mib']:.0f} MiB; report cost ${m['cost_usd']:,.2f}; "
        f"{m['slack_blocks']} Slack blocks; chart {m['png_bytes']:,} bytes"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; prints a table (and writes JSON with ``--json``)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=10_000_000, help="records in the big ledger (default 10M)")
    p.add_argument("--baseline", type=int, default=1_000_000, help="records in the baseline ledger (0: none)")
    p.add_argument("--weeks", type=int, default=8, help="weeks the records are spread over (default 8, min 2)")
    p.add_argument("--fresh", action="store_true", help="regenerate the cached ledger files")
    p.add_argument("--json", help="also write the figures as JSON to this file")
    a = p.parse_args(argv)
    if a.weeks < 2:
        p.error("--weeks must be at least 2 (the report compares with the previous week)")
    print(
        f"relay report benchmark: weekly report 2026-W47 (Europe/Berlin); {psutil.cpu_count()} CPUs; "
        f"SQLite {sqlite3.sqlite_version}"
    )
    results: dict = {}
    for label, n in (("baseline", a.baseline), ("ledger", a.records)):
        if n <= 0:
            continue
        print(f"ledger of {n:,} records over {a.weeks} weeks:")
        path, gen_s = generate(n, a.weeks, a.fresh)
        m = measure(path)
        m["generate_s"] = gen_s
        results[label] = m
        _print(f"{label} ({n:,})", m, gen_s)
    if "baseline" in results and "ledger" in results:
        b, big = results["baseline"], results["ledger"]
        ratio = big["compute_s"] / b["compute_s"]
        rows = big["scanned_records"] / b["scanned_records"]
        print(
            f"\nratio {a.records:,} / {a.baseline:,}: compute ×{ratio:.1f} for ×{rows:.1f} rows scanned "
            f"(1.0 per row = linear); total ×{big['total_s'] / b['total_s']:.1f}"
        )
        results["ratio_compute"] = ratio
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
