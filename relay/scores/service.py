"""The scorer: turns the usage ledger into Langfuse scores when an interaction ends and when a session goes quiet.

Flow: the pipeline reports every trace it closes (:meth:`Scorer.trace_closed`, cheap, on the event loop) → the
scorer records the trace (and its Claude Code session) in ``score_subjects`` with a due time — the trace now, the
session ``scores.session_idle`` after its last interaction — → a task computes the due subjects' figures from the
ledger (``relay.scores.figures``), and writes the scores to the ledger's score table and the score outbox in one
transaction (``relay.usage.sqlite_scores``) → :class:`~relay.scores.outbox.ScoreSender` delivers them.

A trace closed again (late records) or a session resumed (``claude --continue``) is simply scored again: score ids
are deterministic (``relay.scores.catalog.score_id``), so Langfuse updates the scores in place.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from relay.model import UsageRecord
from relay.scores.catalog import BUILTINS, GENAI_SCORES, INTERACTION_SCORES, SESSION_SCORES, figure_value, score_id
from relay.scores.config import ScoresConfig
from relay.scores.figures import Figures, figures_of, outcome_of
from relay.store.sqlite import SqliteDB, chunks, marks
from relay.usage.sqlite_records import SELECT, record_of
from relay.usage.sqlite_schema import RECORD_COLUMNS
from relay.usage.sqlite_scores import LedgerScore, apply_score_schema, put_scores
from relay.usage.store import LedgerStore

__all__ = ["Scorer", "ClosedTrace", "CLAUDE_CODE_METRICS"]

log = logging.getLogger(__name__)

#: Session figures read from Claude Code's metrics: figure → (metric name, ``type`` attribute or None for all).
CLAUDE_CODE_METRICS = {
    "lines_added": ("claude_code.lines_of_code.count", "added"),
    "lines_removed": ("claude_code.lines_of_code.count", "removed"),
    "commits": ("claude_code.commit.count", None),
    "pull_requests": ("claude_code.pull_request.count", None),
}
_HOUR_NS = 3600 * 10**9
_TRACE = RECORD_COLUMNS.index("trace_id")
#: How long scored traces and sessions are remembered (ns).
SUBJECT_RETENTION = 31 * 24 * _HOUR_NS


@dataclass(frozen=True)
class ClosedTrace:
    """A trace the pipeline committed: bounds of its observations (unix ns) and whether it is Claude Code's."""

    tenant: str
    trace_id: str
    session_id: str | None
    start_ns: int | None
    end_ns: int | None
    claude_code: bool


class Scorer:
    """Computes and queues scores. ``environments`` maps tenant → Langfuse environment (or None);
    ``deliver(tenant)`` says whether the tenant exports to Langfuse (else scores stay in the ledger);
    ``on_queued`` is called after scores were queued (wakes the sender); ``on_changes`` with the ``(old, new)``
    ``ledger_scores`` rows that changed (``relay.usage.sqlite_scores.put_scores``; the rules engine's feed)."""

    def __init__(
        self,
        db: SqliteDB,
        ledger: LedgerStore,
        config: ScoresConfig,
        *,
        environments: dict[str, str | None],
        deliver: Callable[[str], bool],
        on_queued: Callable[[set[str]], None] | None = None,
        clock: Callable[[], int] = time.time_ns,
        on_changes: Callable[[list], None] | None = None,
    ):
        self.db = db
        self.ledger = ledger
        self.config = config
        self.environments = environments
        self.deliver = deliver
        self.on_queued = on_queued
        self.clock = clock
        self.on_changes = on_changes
        self._changes: list = []
        self._closed: list[ClosedTrace] = []
        self._pruned = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        apply_score_schema(db)

    # ------------------------------------------------------------------ feed

    def trace_closed(self, trace: ClosedTrace) -> None:
        """The pipeline committed ``trace`` (its records are in the ledger). Cheap; never raises."""
        self._closed.append(trace)
        self._wake.set()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the scoring task."""
        self._task = asyncio.create_task(self._run(), name="relay-scorer")

    async def stop(self) -> None:
        """Record the traces reported so far and stop (due scores are computed at the next start)."""
        self._stopping = True
        self._wake.set()
        if self._task:
            await self._task
        await self._flush_closed()

    async def catch_up(self) -> int:
        """Mark traces that have ledger records but were never recorded as closed (relay was killed between the
        pipeline's commit and the scorer's write) — records from an hour plus ``session_idle`` before the latest
        mark; with no mark at all, the ledger's last week (Claude Code's traces only when ``scores.genai_traces``
        is off). Their bounds come from the records (call start = end − duration). Returns the traces marked."""
        now, idle = self.clock(), round(self.config.session_idle * 1e9)

        def find(conn: sqlite3.Connection) -> list[ClosedTrace]:
            latest = conn.execute("SELECT MAX(last_ns) FROM score_subjects").fetchone()[0]
            if latest is not None:
                since = latest - _HOUR_NS - idle
            else:  # nothing scored yet (new database, or scores just turned on): the last week of the ledger
                newest = conn.execute("SELECT MAX(time_ns) FROM usage_records").fetchone()[0]
                since = (newest or now) - 7 * 24 * _HOUR_NS
            rows = conn.execute(
                "SELECT tenant, trace_id, MAX(session_id), MIN(time_ns - CAST(COALESCE(duration_ms, 0) * 1000000 AS "
                "INTEGER)), MAX(time_ns), MAX(source LIKE 'claude_code%') FROM usage_records r WHERE time_ns >= ? "
                "AND trace_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM score_subjects s WHERE s.tenant = r.tenant "
                "AND s.kind = 'trace' AND s.subject_id = r.trace_id) GROUP BY tenant, trace_id"
                + ("" if self.config.genai_traces else " HAVING MAX(source LIKE 'claude_code%')"),
                (since,),
            ).fetchall()
            found = [ClosedTrace(t, tr, sess, start, end, bool(cc)) for t, tr, sess, start, end, cc in rows]
            _mark(conn, found, now, idle)
            return found

        found = await self.db.run(find)
        if found:
            log.info("scores: %d traces found in the ledger without scores; scoring them", len(found))
        return len(found)

    async def _run(self) -> None:
        try:
            await self.catch_up()
        except Exception:
            log.exception("scores: catching up on unscored traces failed")
        while not self._stopping:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scoring failed; retrying")
            try:
                await asyncio.wait_for(self._wake.wait(), self.config.check_interval)
            except TimeoutError:
                pass
            self._wake.clear()

    async def step(self) -> int:
        """Record closed traces, then score every due subject; returns the number of scores queued. Once an hour,
        forget scored subjects older than ``SUBJECT_RETENTION`` (a session resumed later is scored from its ledger
        records alone)."""
        await self._flush_closed()
        now = self.clock()
        if now - self._pruned >= _HOUR_NS:
            self._pruned = now
            cut = now - SUBJECT_RETENTION
            await self.db.run(
                lambda c: c.execute("DELETE FROM score_subjects WHERE due_ns = 0 AND last_ns < ?", (cut,))
            )
        due = await self.db.run(
            lambda c: c.execute(
                "SELECT tenant, kind, subject_id, session_id, start_ns, end_ns, due_ns FROM score_subjects "
                "WHERE due_ns > 0 AND due_ns <= ? ORDER BY due_ns LIMIT 200",
                (now,),
            ).fetchall()
        )
        tenants: set[str] = set()
        # the ledger records of every due trace in ONE database job, and every result committed in one more: a
        # round trip to the writer thread per trace was a bottleneck at thousands of traces per second
        traces = await self._records_of_traces([(t, subject) for t, kind, subject, *_ in due if kind == "trace"])
        items: list[tuple[list[LedgerScore], tuple]] = []
        for tenant, kind, subject, _session, start, end, due_ns in due:
            if kind == "trace":
                scores = self._trace_scores_of(tenant, subject, start, end, traces.get((tenant, subject), []))
            else:
                scores = await self._session_scores(tenant, subject)
            items.append((scores, (tenant, kind, subject, due_ns)))
            if scores:
                tenants.add(tenant)
            await asyncio.sleep(0)
        queued = 0
        if items:
            queued, changes = await self.db.run(functools.partial(self._commit_all, items=items))
            self._changes.extend(changes)
        if tenants and self.on_queued:
            self.on_queued(tenants)
        if self._changes:
            changes, self._changes = self._changes, []
            if self.on_changes is not None:
                try:
                    self.on_changes(changes)
                except Exception:  # the rules engine must not stop scoring
                    log.exception("scores: on_changes failed")
        return queued

    @staticmethod
    def _commit_all(conn: sqlite3.Connection, items: list[tuple[list[LedgerScore], tuple]]) -> tuple[int, list]:
        """Store each subject's scores and mark it scored; (scores stored, ledger changes) of all of them — one
        ``put_scores`` for all subjects and one executemany for the marks."""
        total, changes = put_scores(conn, [score for scores, _ in items for score in scores])
        conn.executemany(
            "UPDATE score_subjects SET due_ns=0 WHERE tenant=? AND kind=? AND subject_id=? AND due_ns=?",
            [subject for _, subject in items],
        )
        return total, changes

    async def _flush_closed(self) -> None:
        if not self._closed:
            return
        closed, self._closed = self._closed, []
        now, idle = self.clock(), round(self.config.session_idle * 1e9)
        await self.db.run(lambda c: _mark(c, closed, now, idle))

    # ------------------------------------------------------------------ computing

    async def _records(self, tenant: str, column: str, value: str) -> list[UsageRecord]:
        rows = await self.db.run(
            lambda c: c.execute(SELECT + f" WHERE tenant=? AND {column}=?", (tenant, value)).fetchall()
        )
        return sorted((record_of(r) for r in rows), key=lambda r: (r.time_ns, r.key))

    async def _records_of_traces(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], list[UsageRecord]]:
        """The ledger records of many ``(tenant, trace_id)`` in one database job, each list sorted as ``_records``."""
        if not keys:
            return {}

        by_tenant: dict[str, list[str]] = {}
        for tenant, trace_id in dict.fromkeys(keys):
            by_tenant.setdefault(tenant, []).append(trace_id)

        def read(c: sqlite3.Connection) -> dict[tuple[str, str], list]:
            out: dict[tuple[str, str], list] = {k: [] for k in keys}
            for tenant, traces in by_tenant.items():
                for part in chunks(traces):
                    sql = SELECT + f" WHERE tenant=? AND trace_id IN ({marks(part)})"
                    for row in c.execute(sql, (tenant, *part)):
                        out[(tenant, row[_TRACE])].append(row)
            return out

        rows = await self.db.run(read)
        return {k: sorted((record_of(r) for r in rs), key=lambda r: (r.time_ns, r.key)) for k, rs in rows.items()}

    def _trace_scores_of(
        self, tenant: str, trace_id: str, start: int | None, end: int | None, records: list[UsageRecord]
    ) -> list[LedgerScore]:
        if not records:
            return []
        figures = figures_of(records)
        if start is not None and end is not None:
            figures["duration_s"] = max(0, end - start) / 1e9
        claude = all(r.source.startswith("claude_code") for r in records)
        names = INTERACTION_SCORES if claude else GENAI_SCORES
        out = [self._score(tenant, "trace", trace_id, n, figure_value(n, figures)) for n in names]
        out += [
            self._custom(tenant, "trace", trace_id, c, figures) for c in self.config.custom if c.level == "interaction"
        ]
        return [s for s in out if s is not None]

    async def session_figures(self, tenant: str, session: str) -> tuple[Figures, str | None, list[UsageRecord]]:
        """(figures, outcome, records) of a Claude Code session from the ledger (None outcome: no records)."""
        records = await self._records(tenant, "session_id", session)
        traces = await self.db.run(
            lambda c: c.execute(
                "SELECT subject_id, start_ns, end_ns FROM score_subjects WHERE tenant=? AND kind='trace' AND session_id=?",
                (tenant, session),
            ).fetchall()
        )
        figures = figures_of(records)
        trace_ids = {t for t, _, _ in traces} | {r.trace_id for r in records if r.trace_id}
        figures["interactions"] = len(trace_ids)
        figures["duration_s"] = sum(max(0, e - s) for _, s, e in traces if s is not None and e is not None) / 1e9
        ends = {t: e for t, _, e in traces if e is not None}
        for r in records:
            if r.trace_id:
                ends[r.trace_id] = max(ends.get(r.trace_id, 0), r.time_ns)
        last_trace = max(ends, key=lambda t: ends[t]) if ends else None
        outcome = outcome_of(records, last_trace) if records else None
        times = [r.time_ns for r in records] + [s for _, s, _ in traces if s is not None]
        if times:
            figures.update(await self._metric_figures(tenant, session, min(times) - _HOUR_NS, self.clock() + _HOUR_NS))
        return figures, outcome, records

    async def _metric_figures(self, tenant: str, session: str, start: int, end: int) -> Figures:
        out: Figures = {}
        for fig, (metric, typ) in CLAUDE_CODE_METRICS.items():
            try:
                sums = await self.ledger.sum_metric(metric, start, end, tenant=tenant, by=("session", "type"))
            except NotImplementedError:
                return {}
            vals = [
                s.value
                for s in sums
                if s.group.get("session") == session and (typ is None or s.group.get("type") == typ)
            ]
            if vals:
                out[fig] = float(sum(vals))
        if "lines_added" in out or "lines_removed" in out:
            out["lines_changed"] = out.get("lines_added", 0.0) + out.get("lines_removed", 0.0)
        return out

    async def _session_scores(self, tenant: str, session: str) -> list[LedgerScore]:
        figures, outcome, records = await self.session_figures(tenant, session)
        if not records:
            return []
        out = [self._score(tenant, "session", session, n, figure_value(n, figures)) for n in SESSION_SCORES]
        if outcome is not None:
            out.append(self._score(tenant, "session", session, "outcome", outcome))
        out += [
            self._custom(tenant, "session", session, c, figures) for c in self.config.custom if c.level == "session"
        ]
        return [s for s in out if s is not None]

    def _custom(self, tenant: str, kind: str, subject: str, c: Any, figures: Figures) -> LedgerScore | None:
        v = c.value(figures)
        return None if v is None else self._score(tenant, kind, subject, c.name, v, c.data_type)

    def _score(
        self, tenant: str, kind: str, subject: str, name: str, value: float | str | None, data_type: str | None = None
    ) -> LedgerScore | None:
        if value is None:
            return None
        body: dict[str, Any] = {
            "id": score_id(tenant, kind, subject, name),
            "name": name,
            "value": value,
            "dataType": data_type or BUILTINS[name].data_type,
            "source": "API",
            ("traceId" if kind == "trace" else "sessionId"): subject,
            "metadata": {"producer": "relay", "level": "interaction" if kind == "trace" else "session"},
        }
        env = self.environments.get(tenant)
        if env:
            body["environment"] = env
        return LedgerScore(tenant, body, "relay", self.clock(), deliver=self.deliver(tenant))


def _mark(conn: sqlite3.Connection, closed: Sequence[ClosedTrace], now: int, idle_ns: int) -> None:
    """Record closed traces (bounds merged) as due now, and their Claude Code sessions as due after ``idle_ns``."""
    conn.executemany(
        "INSERT INTO score_subjects(tenant, kind, subject_id, session_id, start_ns, end_ns, last_ns, due_ns) "
        "VALUES (?, 'trace', ?, ?, ?, ?, ?, ?) ON CONFLICT(tenant, kind, subject_id) DO UPDATE SET "
        "session_id=COALESCE(excluded.session_id, session_id), "
        "start_ns=MIN(COALESCE(start_ns, excluded.start_ns), COALESCE(excluded.start_ns, start_ns)), "
        "end_ns=MAX(COALESCE(end_ns, excluded.end_ns), COALESCE(excluded.end_ns, end_ns)), "
        "last_ns=excluded.last_ns, due_ns=excluded.due_ns",
        [(t.tenant, t.trace_id, t.session_id, t.start_ns, t.end_ns, now, now) for t in closed],
    )
    conn.executemany(
        "INSERT INTO score_subjects(tenant, kind, subject_id, session_id, last_ns, due_ns) "
        "VALUES (?, 'session', ?, ?, ?, ?) ON CONFLICT(tenant, kind, subject_id) DO UPDATE SET "
        "last_ns=excluded.last_ns, due_ns=excluded.due_ns",
        [(t.tenant, t.session_id, t.session_id, now, now + idle_ns) for t in closed if t.session_id and t.claude_code],
    )
