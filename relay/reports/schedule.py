"""The report scheduler: posts each scheduled report exactly once per (schedule, tenant, destination, period),
across restarts and replicas that share the database.

How a run is decided (every tick, at least every ``reports.check_interval`` seconds and at each cron time):

1. For each schedule, the most recent cron firing at or before *now* (croniter, in the schedule's time zone)
   names the period to post: the last complete period before that firing (a Monday 09:00 firing posts the
   previous ISO week).
2. For each tenant and destination, the run ``(schedule, tenant, destination, period start)`` is **claimed** in
   one SQLite transaction *before* anything is sent (table ``report_runs``, status ``claimed``). A run already
   ``posted`` (or ``failed`` permanently), or claimed by someone else less than ``claim_timeout`` ago, is skipped:
   a restarted process or a second replica never posts it again.
3. The report is computed, delivered, and the run marked ``posted`` with what the destination returned (Slack
   ``channel``/``ts``/``file_id``). A retryable delivery error sets status ``retry`` with a backoff
   (``retry_initial`` doubling up to ``retry_max``), keeping the partial delivery state so a retry does not
   re-post a message whose file upload failed; a permanent error sets ``failed``.

**Delivery guarantee.** Exactly once, except inside one window: a process that dies after the destination
accepted the message but before ``posted`` is committed leaves a ``claimed`` run, which is retried after
``claim_timeout`` — the report is then posted twice (at-least-once in that window; Slack has no idempotency key).
A process that dies before posting simply has its claim retried after ``claim_timeout``.

**Missed periods.** When relay was down at a firing, the next tick still finds that firing as the most recent one
and posts its period, marked **late** when more than ``late_after`` seconds have passed since the firing. Only the
**most recent** missed period is posted (older ones are skipped; ``relay report`` prints any past period), as
usage tools do for daily summaries; likewise a run still waiting for a retry is abandoned once the next firing
is due (the newer period is posted instead). Firings before a schedule was first seen by this database (recorded in
``report_schedules``) are never posted, so adding a schedule on a Wednesday does not post last week's report late.

Times are unix seconds (floats) from the injectable ``now``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from croniter import croniter

from relay.component import Component
from relay.notify.base import NotifyError
from relay.reports.config import ReportsConfig, ScheduleConfig
from relay.reports.model import Report
from relay.reports.periods import Period, last_complete
from relay.store.sqlite import SqliteDB

__all__ = ["ReportScheduler", "Deliverer", "ComputeFn", "RunResult", "SCHEMA"]

T = TypeVar("T")

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS report_runs (
    schedule TEXT NOT NULL, tenant TEXT NOT NULL, destination TEXT NOT NULL, period_start_ns INTEGER NOT NULL,
    period TEXT NOT NULL, status TEXT NOT NULL, owner TEXT, attempts INTEGER NOT NULL DEFAULT 0,
    claimed_at REAL, next_at REAL, posted_at REAL, late INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT '{}', error TEXT,
    PRIMARY KEY (schedule, tenant, destination, period_start_ns)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS report_schedules (
    schedule TEXT PRIMARY KEY, first_seen REAL NOT NULL) WITHOUT ROWID;
"""

#: ``compute(schedule, tenant, period, late) -> Report``.
ComputeFn = Callable[[ScheduleConfig, str, Period, bool], Awaitable[Report]]


class Deliverer(Protocol):
    """Where reports go (``relay.reports.deliver.ReceiverDeliverer`` for receivers' Slack and webhook configs)."""

    def destinations(self, schedule: ScheduleConfig) -> list[str]:
        """Stable destination ids of ``schedule`` (e.g. ``team-slack/slack/0``); raises ``KeyError`` for an
        unknown receiver."""
        ...

    async def deliver(
        self, schedule: ScheduleConfig, destination: str, report: Report, state: dict[str, Any]
    ) -> dict[str, Any]:
        """Send ``report`` to ``destination``; ``state`` is the partial state of an earlier failed attempt
        (updated in place as steps complete). Returns the final state. Raises ``NotifyError``."""
        ...


@dataclass(frozen=True)
class RunResult:
    """What a tick did for one run: ``status`` ``posted``, ``retry`` or ``failed``."""

    schedule: str
    tenant: str
    destination: str
    period: str
    status: str
    late: bool
    error: str | None = None


@dataclass(frozen=True)
class _Claim:
    attempts: int
    state: dict[str, Any]


class ReportScheduler(Component):
    """Posts scheduled reports (see the module doc for the exactly-once rules).

    ``config``: the ``reports`` section. ``db``: relay's database (``report_runs`` and ``report_schedules`` are
    created by :meth:`open`). ``compute``: builds a report (run off the event loop by the caller's function).
    ``deliver``: a :class:`Deliverer`. ``now``: unix seconds. ``tenants``: the tenant names a schedule without
    ``tenant`` reports on (one post each). ``owner``: this process's id in claims (default: random). ``ready``: awaited
    before a report is computed (the daemon's: the Langfuse project lookups had their first answer, so a report due
    while relay was down and posted at start-up has its session links; bounded by the lookups' own timeout).
    """

    name = "report scheduler"

    def __init__(
        self,
        config: ReportsConfig,
        db: SqliteDB,
        compute: ComputeFn,
        deliver: Deliverer,
        now: Callable[[], float] = time.time,
        *,
        tenants: Sequence[str] = ("default",),
        owner: str | None = None,
        ready: Callable[[], Awaitable[None]] | None = None,
    ):
        self.config = config
        self.db = db
        self.compute = compute
        self.deliverer = deliver
        self.now = now
        self.tenants = list(tenants)
        self.owner = owner or uuid.uuid4().hex[:12]
        self.ready = ready
        self._task: asyncio.Task[None] | None = None
        self._opened = False

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> None:
        """Create the tables (blocking; call at start-up). Raises ``sqlite3.Error``."""
        if not self._opened:
            self.db.apply_schema(SCHEMA)
            self._opened = True

    async def start(self) -> None:
        """Open and start the background loop (ticks at cron times and every ``check_interval``)."""
        self.open()
        if self.config.schedules and self._task is None:
            self._task = asyncio.create_task(self._loop(), name="report-scheduler")

    async def shutdown(self, deadline: float) -> None:
        """Stop the loop (a post in progress is cancelled; its claim is retried after ``claim_timeout``) and close the
        deliverer's connections."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        close = getattr(self.deliverer, "close", None)
        if close is not None:
            await close()

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # a broken tick must not stop future reports
                log.exception("report scheduler tick failed")
            await asyncio.sleep(self.next_wake() - self.now())

    def next_wake(self) -> float:
        """Unix seconds of the next tick: the next cron firing of any schedule, at most ``check_interval`` away."""
        now = self.now()
        wake = now + self.config.check_interval
        for s in self.config.schedules:
            nxt = croniter(s.cron_expr, datetime.fromtimestamp(now, s.tz)).get_next(datetime)
            wake = min(wake, nxt.timestamp() + 0.001)
        return max(wake, now + 0.05)

    # ------------------------------------------------------------------ decisions

    @staticmethod
    def due(schedule: ScheduleConfig, now: float) -> tuple[float, Period]:
        """The most recent firing of ``schedule`` at or before ``now`` (unix seconds) and the period it posts."""
        tz = schedule.tz
        # croniter's get_prev is strictly before its start: start just after now so a firing at now counts.
        start = datetime.fromtimestamp(now, UTC).astimezone(tz) + timedelta(microseconds=1)
        fire: datetime = croniter(schedule.cron_expr, start).get_prev(datetime)
        return fire.timestamp(), last_complete(schedule.period, fire, tz)

    async def tick(self) -> list[RunResult]:
        """Post every run that is due now and not yet posted or claimed; returns what was done."""
        self.open()
        now = self.now()
        results: list[RunResult] = []
        for sched in self.config.schedules:
            first_seen = await self.db.run(_job(self._first_seen, sched.name, now))
            fire, period = self.due(sched, now)
            if fire < first_seen:
                continue
            late = now - fire > sched.late_after
            try:
                destinations = self.deliverer.destinations(sched)
            except KeyError as e:
                log.error("report schedule %s: %s", sched.name, e)
                continue
            for tenant in [sched.tenant] if sched.tenant else self.tenants:
                report: Report | None = None
                for dest in destinations:
                    claim = await self.db.run(_job(self._claim, sched, tenant, dest, period, now))
                    if claim is None:
                        continue
                    state = dict(claim.state)
                    try:
                        if report is None:
                            if self.ready is not None:
                                await self.ready()
                            report = await self.compute(sched, tenant, period, late)
                        state = await self.deliverer.deliver(sched, dest, report, state)
                    except asyncio.CancelledError:
                        raise
                    except Exception as e:
                        retryable = e.retryable if isinstance(e, NotifyError) else True
                        wait = e.retry_after if isinstance(e, NotifyError) and e.retry_after else None
                        backoff = min(self.config.retry_max, self.config.retry_initial * 2 ** (claim.attempts - 1))
                        status, err = ("retry" if retryable else "failed"), (str(e) or type(e).__name__)[:500]
                        log.warning(
                            "report %s for %s to %s (%s) %s: %s",
                            sched.name,
                            tenant,
                            dest,
                            period.label,
                            "will be retried" if retryable else "failed",
                            err,
                        )
                        nxt = now + max(backoff, wait or 0)
                        await self.db.run(_job(self._finish, sched.name, tenant, dest, period, status, state, err, nxt))
                        results.append(RunResult(sched.name, tenant, dest, period.label, status, late, err))
                        continue
                    await self.db.run(
                        _job(self._finish, sched.name, tenant, dest, period, "posted", state, None, None, late=late)
                    )
                    log.info(
                        "report %s for %s posted to %s (%s%s)",
                        sched.name,
                        tenant,
                        dest,
                        period.label,
                        ", late" if late else "",
                    )
                    results.append(RunResult(sched.name, tenant, dest, period.label, "posted", late))
        return results

    # ------------------------------------------------------------------ database jobs (writer thread)

    def _first_seen(self, conn: sqlite3.Connection, schedule: str, now: float) -> float:
        conn.execute("INSERT OR IGNORE INTO report_schedules(schedule, first_seen) VALUES (?, ?)", (schedule, now))
        return conn.execute("SELECT first_seen FROM report_schedules WHERE schedule = ?", (schedule,)).fetchone()[0]

    def _claim(
        self, conn: sqlite3.Connection, sched: ScheduleConfig, tenant: str, dest: str, period: Period, now: float
    ) -> _Claim | None:
        key = (sched.name, tenant, dest, period.start_ns)
        row = conn.execute(
            "SELECT status, claimed_at, next_at, attempts, state FROM report_runs WHERE schedule = ? "
            "AND tenant = ? AND destination = ? AND period_start_ns = ?",
            key,
        ).fetchone()
        if row is None:
            conn.execute(
                "INSERT INTO report_runs(schedule, tenant, destination, period_start_ns, period, status, "
                "owner, attempts, claimed_at) VALUES (?, ?, ?, ?, ?, 'claimed', ?, 1, ?)",
                (*key, period.label, self.owner, now),
            )
            return _Claim(1, {})
        status, claimed_at, next_at, attempts, state = row
        if status in ("posted", "failed"):
            return None
        if status == "claimed" and now - (claimed_at or 0) < self.config.claim_timeout:
            return None
        if status == "retry" and now < (next_at or 0):
            return None
        conn.execute(
            "UPDATE report_runs SET status = 'claimed', owner = ?, attempts = ?, claimed_at = ? "
            "WHERE schedule = ? AND tenant = ? AND destination = ? AND period_start_ns = ?",
            (self.owner, attempts + 1, now, *key),
        )
        return _Claim(attempts + 1, json.loads(state or "{}"))

    def _finish(
        self,
        conn: sqlite3.Connection,
        schedule: str,
        tenant: str,
        dest: str,
        period: Period,
        status: str,
        state: dict[str, Any],
        error: str | None,
        next_at: float | None,
        late: bool = False,
    ) -> None:
        conn.execute(
            "UPDATE report_runs SET status = ?, state = ?, error = ?, next_at = ?, posted_at = ?, late = ? "
            "WHERE schedule = ? AND tenant = ? AND destination = ? AND period_start_ns = ? AND owner = ?",
            (
                status,
                json.dumps(state, sort_keys=True, default=str),
                error,
                next_at,
                self.now() if status == "posted" else None,
                int(late),
                schedule,
                tenant,
                dest,
                period.start_ns,
                self.owner,
            ),
        )

    async def runs(self) -> list[dict[str, Any]]:
        """Every ``report_runs`` row as a dict (for the CLI, the admin API and tests), oldest period first."""

        def read(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            cur = conn.execute("SELECT * FROM report_runs ORDER BY period_start_ns, schedule, tenant, destination")
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=False)) for row in cur.fetchall()]

        self.open()
        return await self.db.run(read)


def _job(fn: Callable[..., T], *args: Any, **kwargs: Any) -> Callable[[sqlite3.Connection], T]:
    """``fn(conn, *args, **kwargs)`` as a writer-thread job (arguments bound now, not when the job runs)."""
    return lambda conn: fn(conn, *args, **kwargs)
