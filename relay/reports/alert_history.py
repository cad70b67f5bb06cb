"""Alert history: one row per firing episode of an alert (fingerprint + when it fired), with its resolution time
and the Jira issue the outbox recorded for its group. The weekly report's "alerts of the week" reads it; the rules
engine's own state keeps only active and recently resolved alerts.

Rows are written from the alert feed (the same ``list[Alert]`` the dispatcher gets), asynchronously through the
shared SQLite writer; a lost write at a crash only affects the report's alert counts, never notifications.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Sequence
from typing import Any

from relay.alert import Alert, AlertState
from relay.reports.model import AlertEvent
from relay.store.sqlite import SqliteDB

__all__ = ["AlertHistory", "SCHEMA"]

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS alert_history (
    fingerprint TEXT NOT NULL, fired_at REAL NOT NULL, tenant TEXT NOT NULL, alertname TEXT NOT NULL,
    severity TEXT NOT NULL, labels TEXT NOT NULL, resolved_at REAL,
    PRIMARY KEY (fingerprint, fired_at)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS alert_history_tenant ON alert_history(tenant, fired_at);
"""


class AlertHistory:
    """Firing episodes in ``alert_history``. ``record(alerts)`` is the sink (sync, cheap); ``events(tenant,
    start_s, end_s)`` lists the episodes overlapping a period as report ``AlertEvent``s, with the Jira issue of
    the alert's group when a Jira integration recorded one (``receiver_state`` of the outbox)."""

    def __init__(self, db: SqliteDB):
        self.db = db
        db.apply_schema(SCHEMA)
        self._pending: set[asyncio.Future[Any]] = set()

    def record(self, alerts: Sequence[Alert]) -> None:
        """Write firing and resolved alerts (others are ignored). Call from the event loop."""
        rows = [a for a in alerts if a.state in (AlertState.FIRING, AlertState.RESOLVED) and a.fired_at]
        if not rows:
            return

        def write(conn: sqlite3.Connection) -> None:
            for a in rows:
                conn.execute(
                    "INSERT INTO alert_history(fingerprint, fired_at, tenant, alertname, severity, labels, resolved_at) "
                    "VALUES (?,?,?,?,?,?,?) ON CONFLICT(fingerprint, fired_at) DO UPDATE SET "
                    "resolved_at=excluded.resolved_at, labels=excluded.labels",
                    (
                        a.fingerprint,
                        a.fired_at,
                        a.labels.get("tenant", ""),
                        a.name,
                        a.severity,
                        json.dumps(a.labels, sort_keys=True),
                        a.ends_at if a.state is AlertState.RESOLVED else None,
                    ),
                )

        fut = asyncio.ensure_future(self.db.run(write))
        self._pending.add(fut)
        fut.add_done_callback(self._done)

    def _done(self, fut: asyncio.Future[Any]) -> None:
        self._pending.discard(fut)
        if not fut.cancelled() and fut.exception() is not None:
            log.warning("alert history write failed: %s", fut.exception())

    async def flush(self) -> None:
        """Wait for queued writes."""
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def events(self, tenant: str, start_s: float, end_s: float) -> list[AlertEvent]:
        """Episodes of ``tenant`` that fired before ``end_s`` and were not resolved before ``start_s``."""

        def read(conn: sqlite3.Connection) -> list[AlertEvent]:
            rows = conn.execute(
                "SELECT fingerprint, fired_at, alertname, severity, labels, resolved_at FROM alert_history "
                "WHERE tenant=? AND fired_at < ? AND (resolved_at IS NULL OR resolved_at >= ?) ORDER BY fired_at",
                (tenant, end_s, start_s),
            ).fetchall()
            jira = _jira_issues(conn)
            out = []
            for fp, fired, name, sev, labels, resolved in rows:
                issue = jira.get(fp)
                out.append(
                    AlertEvent(
                        alertname=name,
                        fingerprint=fp,
                        fired_at=fired,
                        labels=json.loads(labels),
                        severity=sev,
                        resolved_at=resolved,
                        jira_key=issue[0] if issue else None,
                        jira_opened_at=issue[1] if issue else None,
                        jira_resolved_at=issue[2] if issue else None,
                    )
                )
            return out

        return await self.db.run(read)


def _jira_issues(conn: sqlite3.Connection) -> dict[str, tuple[str, float | None, float | None]]:
    """fingerprint → (issue key, created_at, resolved_at) from Jira integrations' saved state, when the outbox
    table exists (the Jira notifier keeps ``issue``, ``created_at``, ``firing`` fingerprints and ``action``)."""
    try:
        rows = conn.execute(
            "SELECT integration, state FROM receiver_state WHERE integration LIKE '%/jira/%'"
        ).fetchall()
    except sqlite3.OperationalError:
        return {}
    out: dict[str, tuple[str, float | None, float | None]] = {}
    for _integration, state in rows:
        try:
            st = json.loads(state)
        except (TypeError, ValueError):
            continue
        key = st.get("issue")
        if not key:
            continue
        resolved = st.get("resolved_at") if st.get("action") == "resolved" else None
        for fp in st.get("firing") or []:
            out[fp] = (key, st.get("created_at"), resolved)
    return out
