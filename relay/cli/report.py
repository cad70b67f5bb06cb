"""``relay report weekly|daily|monthly``: print a usage report for any past period from the ledger.

::

    relay report weekly                          # the last complete ISO week, Markdown
    relay report weekly --week 2026-W47 --format json
    relay report daily --day 2026-11-16 --format csv
    relay report monthly --month 2026-11 --chart nov.png --tenant acme --scope 'team.id="platform"'

The period defaults to the last complete one in ``--timezone`` (default: the time zone of the first configured
schedule of that kind, else UTC). The ledger is read from ``<storage.directory>/relay.db`` through a query-only
connection, so this works while the daemon runs. Exit codes as ``relay.cli.main``: 0 success, 1 runtime failure
(no ledger), 2 invalid usage or configuration.

The lead wires it into ``relay.cli.main`` with ``add_subparser(sub)``; the parsed namespace's ``fn`` is :func:`run`.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from relay.reports.model import AlertEvent, BudgetSpec

__all__ = ["add_subparser", "run"]

_PERIOD_FLAG = {"weekly": "week", "daily": "day", "monthly": "month"}


def add_subparser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``report`` to relay's sub-commands; returns its parser (``fn`` defaults to :func:`run`)."""
    p = sub.add_parser("report", help="print a usage report (weekly, daily, monthly) from the ledger",
                       description="Print a Claude Code usage report for a past period from relay's ledger.")
    p.add_argument("period", choices=["weekly", "daily", "monthly"], help="report period kind")
    p.add_argument("--config", "-c", default=None, help="config file (default: embedded defaults)")
    p.add_argument("--week", help="ISO week, e.g. 2026-W47 (weekly; default: last complete week)")
    p.add_argument("--day", help="date, e.g. 2026-11-16 (daily; default: yesterday)")
    p.add_argument("--month", help="month, e.g. 2026-11 (monthly; default: last month)")
    p.add_argument("--format", "-f", choices=["md", "json", "csv"], default="md", help="output format (default md)")
    p.add_argument("--chart", metavar="PNG", help="also write the chart (PNG) to this file")
    p.add_argument("--output", "-o", metavar="FILE", help="write the report to FILE instead of stdout")
    p.add_argument("--tenant", help="tenant (required when several are configured)")
    p.add_argument("--timezone", "--tz", help="IANA time zone of the period boundaries (e.g. Europe/Berlin)")
    p.add_argument("--scope", action="append", default=[], metavar="MATCHER",
                   help='narrow to a label scope, e.g. \'team.id="platform"\' (repeatable)')
    p.add_argument("--group-by", default="team.id", help="breakdown label (default team.id; 'none' to omit)")
    p.add_argument("--chart-by", default="model", help="stack the chart by model (default) or a label")
    p.add_argument("--top", type=int, default=5, help="rows per breakdown (default 5)")
    p.set_defaults(fn=run)
    return p


def _fail(msg: str, code: int = 2) -> int:
    print(f"relay report: {msg}", file=sys.stderr)
    return code


def _rule_budgets(cfg: object, config_path: str | None) -> Callable[[str], Sequence[BudgetSpec]] | None:
    """Budgets from the budget rules of the configured rule files (``rules.files``), None without rules. A rule
    file that does not load is reported on stderr and the budget section left out."""
    files = list(getattr(getattr(cfg, "rules", None), "files", []) or [])
    if not files:
        return None
    from relay.alerting.rules.load import RuleSet, RulesError
    from relay.reports.budgets import budget_specs

    try:
        rules = RuleSet.load(files, Path(config_path).parent if config_path else None)
    except RulesError as e:
        print("relay report: rule files not loaded, budgets left out:\n  " + "\n  ".join(e.problems), file=sys.stderr)
        return None
    specs = budget_specs(rules.rules)
    return lambda _tenant: specs


def run(args: argparse.Namespace, *, budgets: Callable[[str], Sequence[BudgetSpec]] | None = None,
        alerts: Callable[[str, float, float], Sequence[AlertEvent]] | None = None,
        now: Callable[[], float] | None = None) -> int:
    """Run ``relay report`` with parsed ``args``; returns the exit code. ``budgets``/``alerts``: optional
    providers (as ``relay.reports.service``; ``alerts`` synchronous here) for the budget and alert sections;
    ``budgets`` defaults to the budget rules of the configured rule files (``rules.files``). ``now``: unix
    seconds (tests)."""
    from relay.config_load import ConfigError, load_config
    from relay.reports.chart import render_chart
    from relay.reports.compute import ReportRequest
    from relay.reports.periods import last_complete, parse_period
    from relay.reports.render_csv import render_csv, render_json
    from relay.reports.render_md import render_markdown
    from relay.reports.service import ReportService

    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        return _fail("invalid configuration:\n  " + "\n  ".join(e.problems))
    kind = args.period
    for k, flag in _PERIOD_FLAG.items():
        if k != kind and getattr(args, flag):
            return _fail(f"--{flag} is for {k} reports; use --{_PERIOD_FLAG[kind]} with {kind}")
    schedules = list(getattr(getattr(cfg, "reports", None), "schedules", []) or [])
    tz_name = args.timezone or next((s.timezone for s in schedules if s.period == kind), "UTC")
    try:
        tz = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        return _fail(f"unknown time zone {tz_name!r}")
    clock = now or (lambda: datetime.now(timezone.utc).timestamp())
    text = getattr(args, _PERIOD_FLAG[kind])
    try:
        period = parse_period(kind, text, tz) if text else last_complete(
            kind, datetime.fromtimestamp(clock(), timezone.utc), tz)
    except ValueError as e:
        return _fail(str(e))
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
    if budgets is None:
        budgets = _rule_budgets(cfg, args.config)
    req = ReportRequest(tenant, period, tuple(args.scope), group_by, args.chart_by, args.top)
    service = ReportService(db_path, budgets=budgets, clock=clock)
    try:
        events = alerts(tenant, period.start_ns / 1e9, period.end_ns / 1e9) if alerts else None
        report = service.compute_sync(req, events)
    except ValueError as e:
        return _fail(str(e))
    except sqlite3.Error as e:
        return _fail(f"cannot read the ledger at {db_path}: {e} (start relay once to create or upgrade it)", 1)
    out = {"md": render_markdown, "json": render_json, "csv": render_csv}[args.format](report)
    if args.output:
        Path(args.output).write_text(out)
    else:
        sys.stdout.write(out)
    if args.chart:
        png = render_chart(report)
        if png is None:
            print(f"relay report: no chart: no usage recorded in {period.label}", file=sys.stderr)
        else:
            Path(args.chart).write_bytes(png)
            print(f"chart written to {args.chart}", file=sys.stderr)
    return 0
