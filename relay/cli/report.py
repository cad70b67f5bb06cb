"""``relay report``: usage from the ledger, as a full period report or as ccusage-like tables.

::

    relay report weekly                          # this ISO week so far (marked "so far"), Markdown
    relay report daily --day today               # today; --day yesterday, --week 2026-W47, --month 2026-11
    relay report weekly --week 2026-W47 --json   # a past week as JSON (--format md|json|csv)
    relay report daily --since -7d               # one row per day of the last 7 days (and today so far)
    relay report monthly --since 2026-01-01 --until today --breakdown model --format csv   # tidy CSV
    relay report session --since -30d            # one row per session, with its Langfuse link
    relay report user --breakdown model          # one row per user (this month so far), per model
    relay report blocks --active                 # each user's running 5-hour block, burn rate and projection
    relay report blocks --recent -t max          # blocks of the last 3 days, % of each user's largest block

**Full report** (``daily|weekly|monthly`` without ``--since``/``--until``/``--breakdown``, md or json): headlines
with the change against the previous period, cost per day, by model, user and team, top sessions with Langfuse
links, errors, tools, budgets. The period is ``--day``/``--week``/``--month`` (also ``today``/``this``,
``yesterday``/``last``), by default the **current one so far**. **Tables** (``session`` and ``user`` always;
``daily|weekly|monthly`` with ``--since``/``--until``/``--breakdown`` or ``--format csv``): see
:mod:`relay.reports.usage_table`; the range defaults to the current period (``session``/``user``: this month).
**Blocks** (``blocks``): ccusage's 5-hour billing blocks, per user, see :mod:`relay.reports.blocks`; blocks started
this month (``--since``/``--until`` by start day; ``--recent``: the last 3 days) plus the active ones; ``--active``,
``--token-limit N|max``, ``--session-length H`` as ccusage's.

Time zone: ``--timezone``, else that of the first configured schedule of that kind, else UTC. The ledger is read
from ``<storage.directory>/relay.db`` through a query-only connection, so this works while the daemon runs.
Langfuse session links need the tenant's Langfuse keys (relay asks ``GET /api/public/projects`` for the project
id). Exit codes as ``relay.cli.main``: 0 success, 1 runtime failure (no ledger), 2 invalid usage or configuration.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from relay.reports.model import AlertEvent, BudgetSpec
from relay.reports.periods import Period, PeriodKind

__all__ = ["add_subparser", "run", "normalize_argv"]

_PERIOD_FLAG = {"weekly": "week", "daily": "day", "monthly": "month"}
_T = TypeVar("_T")
_BLOCK_FLAGS = {
    "--active": "active",
    "--recent": "recent",
    "--token-limit": "token_limit",
    "--session-length": "session_length",
}


def add_subparser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``report`` to relay's sub-commands; returns its parser (``fn`` defaults to :func:`run`)."""
    p = sub.add_parser(
        "report",
        help="usage from the ledger: a period report or daily/weekly/monthly/session/user tables (like ccusage)",
        description="Print Claude Code usage from relay's ledger: the full report of a period (the "
        "current one so far by default) or ccusage-like tables over --since/--until.",
    )
    p.add_argument(
        "period",
        metavar="VIEW",
        choices=["daily", "weekly", "monthly", "session", "user", "blocks"],
        help="daily | weekly | monthly (a period report, or a table with --since/--until/--breakdown) "
        "| session | user (tables) | blocks (5-hour billing blocks per user)",
    )
    p.add_argument("--config", "-c", default=None, help="config file (default: embedded defaults)")
    p.add_argument("--week", help="ISO week, e.g. 2026-W47, this or last (weekly; default: this week so far)")
    p.add_argument("--day", help="date, e.g. 2026-11-16, today or yesterday (daily; default: today so far)")
    p.add_argument("--month", help="month, e.g. 2026-11, this or last (monthly; default: this month so far)")
    p.add_argument("--since", help="first day of a table: YYYY-MM-DD, YYYYMMDD, today, yesterday or -7d")
    p.add_argument("--until", help="last day of a table (inclusive; default today)")
    p.add_argument(
        "--breakdown",
        "-b",
        metavar="BY",
        help="table rows per model, user or team (or any ledger label, e.g. department)",
    )
    p.add_argument("--format", "-f", choices=["md", "json", "csv"], default="md", help="output format (default md)")
    p.add_argument("--json", dest="format", action="store_const", const="json", help="shorthand for --format json")
    p.add_argument("--chart", metavar="PNG", help="also write the chart (PNG) to this file (period reports)")
    p.add_argument("--output", "-o", metavar="FILE", help="write the report to FILE instead of stdout")
    p.add_argument("--tenant", help="tenant (required when several are configured)")
    p.add_argument("--timezone", "--tz", help="IANA time zone of the period boundaries (e.g. Europe/Berlin)")
    p.add_argument(
        "--scope",
        action="append",
        default=[],
        metavar="MATCHER",
        help="narrow to a label scope, e.g. 'team.id=\"platform\"' (repeatable)",
    )
    p.add_argument(
        "--group-by", default="team.id", help="breakdown label of a period report (default team.id; 'none' to omit)"
    )
    p.add_argument("--chart-by", default="model", help="stack the chart by model (default) or a label")
    p.add_argument("--top", type=int, default=5, help="rows per breakdown of a period report (default 5)")
    p.add_argument("--active", "-a", action="store_true", help="blocks: only the active blocks, with projections")
    p.add_argument("--recent", "-r", action="store_true", help="blocks: those of the last 3 days (and active ones)")
    p.add_argument(
        "--token-limit",
        "-t",
        metavar="N|max",
        help="blocks: token limit per block (max: each user's largest completed block); adds %% of limit",
    )
    p.add_argument(
        "--session-length",
        type=float,
        default=None,
        metavar="HOURS",
        help="blocks: block length in hours (default 5)",
    )
    p.set_defaults(fn=run)
    return p


def normalize_argv(argv: Sequence[str]) -> list[str]:
    """``--since -7d`` → ``--since=-7d`` (argparse would take ``-7d`` for an option), also for ``--until``."""
    out: list[str] = []
    it = iter(argv)
    for a in it:
        if a in ("--since", "--until"):
            nxt = next(it, None)
            out.append(a if nxt is None else f"{a}={nxt}")
        else:
            out.append(a)
    return out


def _fail(msg: str, code: int = 2) -> int:
    print(f"relay report: {msg}", file=sys.stderr)
    return code


def _rule_budgets(cfg: object, config_path: str | None) -> Callable[[str], Sequence[BudgetSpec]] | None:
    """Budgets from the budget rules of the configured rule files (``rules.files``), None without rules. A rule
    file that does not load is reported on stderr and the budget section left out."""
    files = list(getattr(getattr(cfg, "rules", None), "files", []) or [])
    if not files:
        return None
    from relay.alerting.rules.load import RulesError, RuleSet
    from relay.reports.budgets import budget_specs

    try:
        rules = RuleSet.load(files, Path(config_path).parent if config_path else None)
    except RulesError as e:
        print("relay report: rule files not loaded, budgets left out:\n  " + "\n  ".join(e.problems), file=sys.stderr)
        return None
    specs = budget_specs(rules.rules)
    return lambda _tenant: specs


def _current_or_named(kind: PeriodKind, text: str | None, now: datetime, tz: ZoneInfo) -> Period:
    """The period a full report covers: named by ``text`` (``2026-W47``, ``today``/``this``/``current``,
    ``yesterday``/``last``/``previous``) or, without one, the period running at ``now``."""
    from relay.reports.periods import parse_period, period_containing

    t = (text or "").strip().lower()
    if t in ("", "today", "this", "current"):
        return period_containing(kind, now, tz)
    if t in ("yesterday", "last", "previous"):
        return period_containing(kind, now, tz).previous()
    return parse_period(kind, text or "", tz)


def _langfuse_session_url(cfg: object, tenant: str) -> Callable[[str, str], str | None] | None:
    """Langfuse session links for ``tenant``: asks its project (``GET /api/public/projects`` with its keys, over the
    exporter's outbound TLS ``exporters.langfuse.tls``) for the project id. None (and a line on stderr) when export
    is off or Langfuse cannot be asked."""
    import asyncio
    from urllib.parse import quote

    from relay.cli.common import langfuse_session, tls_hint

    t = next((x for x in cfg.resolved_tenants() if x.name == tenant), None)  # type: ignore[attr-defined]
    if t is None or not t.langfuse.enabled:
        return None
    lf = t.langfuse

    async def ask() -> str | None:
        auth = {"Authorization": lf.authorization()}
        async with langfuse_session(cfg.exporters.langfuse.tls, 5.0) as http:  # type: ignore[attr-defined]
            async with http.get(f"{lf.base_url}/api/public/projects", headers=auth) as r:
                if r.status != 200:
                    raise RuntimeError(f"HTTP {r.status} from GET {lf.base_url}/api/public/projects")
                data = (await r.json(content_type=None)).get("data") or []
                return data[0]["id"] if data else None

    try:
        pid = asyncio.run(ask())
    except Exception as e:
        print(f"relay report: Langfuse links left out ({type(e).__name__}: {e}){tls_hint(e)}", file=sys.stderr)
        return None
    if pid is None:
        return None
    return lambda _tenant, sid: f"{lf.base_url}/project/{quote(pid, safe='')}/sessions/{quote(sid, safe='')}"


def run(
    args: argparse.Namespace,
    *,
    budgets: Callable[[str], Sequence[BudgetSpec]] | None = None,
    alerts: Callable[[str, float, float], Sequence[AlertEvent]] | None = None,
    now: Callable[[], float] | None = None,
) -> int:
    """Run ``relay report`` with parsed ``args``; returns the exit code. ``budgets``/``alerts``: optional
    providers (as ``relay.reports.service``; ``alerts`` synchronous here) for the budget and alert sections;
    ``budgets`` defaults to the budget rules of the configured rule files (``rules.files``). ``now``: unix
    seconds (tests)."""
    from relay.config_load import ConfigError, load_config
    from relay.reports.chart import render_chart
    from relay.reports.compute import ReportRequest
    from relay.reports.render_csv import render_json
    from relay.reports.render_md import render_markdown
    from relay.reports.service import ReportService

    try:
        cfg = load_config(args.config, need_receivers=False)
    except ConfigError as e:
        return _fail("invalid configuration:\n  " + "\n  ".join(e.problems))
    kind = args.period
    if kind != "blocks":
        used = [f for f, v in _BLOCK_FLAGS.items() if getattr(args, v) not in (None, False)]
        if used:
            return _fail(f"{used[0]} is for blocks")
    for k, flag in _PERIOD_FLAG.items():
        if k != kind and getattr(args, flag):
            if kind in _PERIOD_FLAG:
                return _fail(f"--{flag} is for {k} reports; use --{_PERIOD_FLAG[kind]} with {kind}")
            return _fail(f"--{flag} is for {k} reports; use --since/--until with {kind}")
    table = (
        kind in ("session", "user", "blocks")
        or bool(args.since or args.until or args.breakdown)
        or args.format == "csv"
    )
    if table and args.chart:
        return _fail("--chart is for period reports (without --since/--until/--breakdown, md or json)")
    if table and kind in _PERIOD_FLAG and getattr(args, _PERIOD_FLAG[kind]) and (args.since or args.until):
        return _fail(f"use either --{_PERIOD_FLAG[kind]} or --since/--until")
    schedules = list(getattr(getattr(cfg, "reports", None), "schedules", []) or [])
    tz_name = args.timezone or next((s.timezone for s in schedules if s.period == kind), "UTC")
    try:
        tz = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        return _fail(f"unknown time zone {tz_name!r}")
    clock = now or (lambda: datetime.now(UTC).timestamp())
    now_dt = datetime.fromtimestamp(clock(), UTC)
    tenants = [t.name for t in cfg.resolved_tenants()]
    tenant = args.tenant
    if tenant is None:
        if len(tenants) != 1:
            return _fail(f"several tenants are configured; choose one with --tenant ({', '.join(tenants)})")
        tenant = tenants[0]
    group_by = None if args.group_by in ("", "none") else args.group_by
    if args.top < 1:
        return _fail("--top must be at least 1")
    db_path = Path(cfg.storage.directory) / "relay.db"
    if not db_path.exists():
        return _fail(f"no ledger at {db_path} (has relay run with storage.directory {cfg.storage.directory!r}?)", 1)
    if kind == "blocks":
        return _run_blocks(args, tenant, tz, now_dt, db_path)
    if table:
        return _run_table(args, cfg, tenant, tz, now_dt, db_path)
    text = getattr(args, _PERIOD_FLAG[kind])
    try:
        period = _current_or_named(kind, text, now_dt, tz)
    except ValueError as e:
        return _fail(str(e))
    if budgets is None:
        budgets = _rule_budgets(cfg, args.config)
    req = ReportRequest(tenant, period, tuple(args.scope), group_by, args.chart_by, args.top)
    service = ReportService(db_path, budgets=budgets, clock=clock, session_url=_langfuse_session_url(cfg, tenant))
    try:
        events = alerts(tenant, period.start_ns / 1e9, period.end_ns / 1e9) if alerts else None
        report = service.compute_sync(req, events)
    except ValueError as e:
        return _fail(str(e))
    except sqlite3.Error as e:
        return _fail(f"cannot read the ledger at {db_path}: {e} (start relay once to create or upgrade it)", 1)
    out = {"md": render_markdown, "json": render_json}[args.format](report)
    _write(args, out)
    if args.chart:
        png = render_chart(report)
        if png is None:
            print(f"relay report: no chart: no usage recorded in {period.label}", file=sys.stderr)
        else:
            Path(args.chart).write_bytes(png)
            print(f"chart written to {args.chart}", file=sys.stderr)
    return 0


def _from_ledger(db_path: Path, compute: Callable[[sqlite3.Connection], _T]) -> tuple[_T | None, int]:
    """``(compute(conn), 0)`` on a query-only connection to the ledger (``relay_re`` registered for regex scopes),
    or ``(None, exit code)`` after printing why: 2 for a ``ValueError`` (bad arguments), 1 for an unreadable
    ledger."""
    from relay.reports.sql import SqliteReportSource, open_readonly

    conn = open_readonly(db_path)
    try:
        SqliteReportSource(conn)  # registers relay_re for regex scopes
        return compute(conn), 0
    except ValueError as e:
        return None, _fail(str(e))
    except sqlite3.Error as e:
        return None, _fail(f"cannot read the ledger at {db_path}: {e} (start relay once to create or upgrade it)", 1)
    finally:
        conn.close()


def _write(args: argparse.Namespace, out: str) -> None:
    if args.output:
        Path(args.output).write_text(out)
    else:
        sys.stdout.write(out)


def _run_table(args: argparse.Namespace, cfg: object, tenant: str, tz: ZoneInfo, now: datetime, db_path: Path) -> int:
    """A ccusage-like table (``relay.reports.usage_table``) over ``--since``..``--until``."""
    from relay.matchers import parse_matchers
    from relay.reports.usage_table import (
        BREAKDOWN_ALIASES,
        compute_table,
        parse_day,
        render_table_csv,
        render_table_json,
        render_table_md,
    )

    kind = args.period
    today = now.astimezone(tz).date()
    try:
        until = parse_day(args.until, today) if args.until else today
        if args.since:
            since = parse_day(args.since, today)
        else:
            flag = _PERIOD_FLAG.get(kind)
            named = getattr(args, flag) if flag else None
            p = _current_or_named(kind if flag else "monthly", named, now, tz)
            since = p.first_day
            if named:
                until = (p.end.astimezone(tz) - timedelta(seconds=1)).date()
        scope = parse_matchers(list(args.scope))
    except ValueError as e:
        return _fail(str(e))
    breakdown = BREAKDOWN_ALIASES.get(args.breakdown, args.breakdown) if args.breakdown else None
    session_url = _langfuse_session_url(cfg, tenant) if kind == "session" and args.format != "csv" else None
    t, failed = _from_ledger(
        db_path,
        lambda conn: compute_table(
            conn, kind, tenant, tz, since, until, now, breakdown=breakdown, scope=scope, session_url=session_url
        ),
    )
    if t is None:
        return failed
    _write(args, {"md": render_table_md, "json": render_table_json, "csv": render_table_csv}[args.format](t))
    return 0


def _run_blocks(args: argparse.Namespace, tenant: str, tz: ZoneInfo, now: datetime, db_path: Path) -> int:
    """5-hour billing blocks per user (``relay.reports.blocks``): blocks started on ``--since``..``--until``
    (default this month; with ``--recent`` the last 3 days), plus the active ones."""
    from relay.matchers import parse_matchers
    from relay.reports.blocks import (
        DEFAULT_SESSION_HOURS,
        RECENT_DAYS,
        compute_blocks,
        parse_token_limit,
        render_blocks_csv,
        render_blocks_json,
        render_blocks_md,
    )
    from relay.reports.usage_table import parse_day

    if args.breakdown not in (None, "user"):
        return _fail("blocks are always per user; narrow to one with --scope 'user=\"alice\"'")
    today = now.astimezone(tz).date()
    try:
        until = parse_day(args.until, today) if args.until else today
        if args.since:
            since = parse_day(args.since, today)
        elif args.recent:
            since = (now - timedelta(days=RECENT_DAYS)).astimezone(tz).date()
        else:
            since = today.replace(day=1)
        scope = parse_matchers(list(args.scope))
        limit = parse_token_limit(args.token_limit)
    except ValueError as e:
        return _fail(str(e))
    hours = DEFAULT_SESSION_HOURS if args.session_length is None else args.session_length
    r, failed = _from_ledger(
        db_path,
        lambda conn: compute_blocks(
            conn,
            tenant,
            tz,
            since,
            until,
            now,
            session_hours=hours,
            scope=scope,
            active_only=args.active,
            recent=args.recent,
            token_limit=limit,
        ),
    )
    if r is None:
        return failed
    _write(args, {"md": render_blocks_md, "json": render_blocks_json, "csv": render_blocks_csv}[args.format](r))
    return 0
