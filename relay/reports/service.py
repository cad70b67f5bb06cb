"""Wiring of the reports into the daemon: compute reports off the event loop, build the scheduler.

Report queries read the ledger through their **own** SQLite connection in a worker thread
(``relay.reports.sql.open_readonly``), never through the daemon's writer thread: a weekly report over millions of
records takes seconds, and the OTLP acknowledgement path waits on the writer thread's queue.

Inputs from other components are plain callables, so the reports package depends on none of them:

- ``budgets(tenant) -> Sequence[BudgetSpec]``: the budget rules in force (from the rules engine);
- ``alerts(tenant, start_s, end_s) -> Awaitable[Sequence[AlertEvent]]``: alert lifecycles overlapping the period
  (from the alert state / Jira issue store); unix seconds;
- ``session_url(tenant, session_id) -> str | None``: ``LangfuseLinks.session_url``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from relay.notify.config import ReceiverConfig
from relay.reports.compute import ReportRequest, compute_report
from relay.reports.config import ReportsConfig, ScheduleConfig
from relay.reports.deliver import ReceiverDeliverer
from relay.reports.model import AlertEvent, BudgetSpec, Report
from relay.reports.periods import Period
from relay.reports.schedule import ReportScheduler
from relay.reports.sql import SqliteReportSource, open_readonly
from relay.store.sqlite import SqliteDB

__all__ = ["ReportService", "build_scheduler", "BudgetsFn", "AlertsFn", "SessionUrlFn"]

BudgetsFn = Callable[[str], Sequence[BudgetSpec]]
AlertsFn = Callable[[str, float, float], Awaitable[Sequence[AlertEvent]]]
SessionUrlFn = Callable[[str, str], "str | None"]


class ReportService:
    """Computes reports from the ledger database file at ``db_path`` (relay's ``<data dir>/relay.db``).

    ``budgets``/``alerts``/``session_url``: see the module doc (None: that section is left out / no links).
    ``clock``: unix seconds (stamps ``generated_at``; bounds budgets of a period still running).
    """

    def __init__(
        self,
        db_path: str | Path,
        *,
        budgets: BudgetsFn | None = None,
        alerts: AlertsFn | None = None,
        session_url: SessionUrlFn | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.db_path = Path(db_path)
        self.budgets = budgets
        self.alerts = alerts
        self.session_url = session_url
        self.clock = clock

    def compute_sync(self, req: ReportRequest, alerts: Sequence[AlertEvent] | None = None) -> Report:
        """Compute ``req`` on a fresh read connection (blocking: call from a worker thread or the CLI).
        Raises ``sqlite3.Error`` (e.g. no ledger yet) and ``ValueError`` (bad scope matchers)."""
        conn = open_readonly(self.db_path)
        try:
            budgets = self.budgets(req.tenant) if self.budgets is not None else None
            return compute_report(
                SqliteReportSource(conn),
                req,
                budgets=budgets,
                alerts=alerts,
                session_url=self.session_url,
                now=datetime.fromtimestamp(self.clock(), UTC),
            )
        finally:
            conn.close()

    async def compute(self, schedule: ScheduleConfig, tenant: str, period: Period, late: bool) -> Report:
        """The scheduler's ``compute``: the report of ``schedule`` for ``tenant`` and ``period``, in a thread."""
        req = ReportRequest(
            tenant, period, tuple(schedule.matchers), schedule.group_by, schedule.chart_by, schedule.top_n, late
        )
        alerts = None
        if self.alerts is not None:
            alerts = await self.alerts(tenant, period.start_ns / 1e9, period.end_ns / 1e9)
        return await asyncio.to_thread(self.compute_sync, req, alerts)


def build_scheduler(
    config: ReportsConfig,
    db: SqliteDB,
    receivers: Sequence[ReceiverConfig],
    tenants: Sequence[str],
    *,
    budgets: BudgetsFn | None = None,
    alerts: AlertsFn | None = None,
    session_url: SessionUrlFn | None = None,
    ready: Callable[[], Awaitable[None]] | None = None,
    now: Callable[[], float] = time.time,
) -> tuple[ReportScheduler, ReceiverDeliverer]:
    """The daemon's report scheduler over ``db`` (relay's shared database) delivering to ``receivers``
    (``alerting.receivers``); ``ready`` is awaited before each report is computed (``ReportScheduler``).
    ``await scheduler.start()`` / ``await scheduler.shutdown(deadline)``; the scheduler closes the deliverer at
    shutdown."""
    service = ReportService(db.path, budgets=budgets, alerts=alerts, session_url=session_url, clock=now)
    deliverer = ReceiverDeliverer(receivers, clock=now)
    return ReportScheduler(config, db, service.compute, deliverer, now, tenants=tenants, ready=ready), deliverer
