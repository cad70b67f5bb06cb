"""Persistence of alert state in relay's SQLite database, so a restart neither forgets a firing alert nor sends it
again as new (Prometheus restores ``for:`` state the same way, from its ``ALERTS_FOR_STATE`` series).

One row per (rule id, fingerprint): the alert as JSON (``Alert.to_dict()``: labels, annotations, state, active_at,
fired_at, ends_at, value, values, links, rule, window), when it was last sent to the dispatcher (``sent_at``) and
last written (``updated_at``), unix seconds. Pending and firing alerts are kept while active; resolved ones for
``resolved_retention``; a pending alert whose condition cleared is deleted.

Writes are scheduled from the engine's synchronous code as tasks on the event loop, in order (the database's writer
thread runs jobs in submission order); :meth:`AlertStateStore.flush` waits for them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from typing import Any

from relay.alert import Alert, AlertState
from relay.store.sqlite import SqliteDB

__all__ = ["AlertStateStore", "SCHEMA"]

log = logging.getLogger("relay.alerting")

SCHEMA = """
CREATE TABLE IF NOT EXISTS alert_state (
    rule TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    state TEXT NOT NULL,
    alert TEXT NOT NULL,
    sent_at REAL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (rule, fingerprint)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS alert_state_updated ON alert_state(state, updated_at);
"""


class AlertStateStore:
    """Alert state in ``db`` (tables created here, blocking: call at start-up). ``resolved_retention``: seconds a
    resolved alert is kept."""

    def __init__(self, db: SqliteDB, *, resolved_retention: float = 3600.0):
        self.db = db
        self.resolved_retention = resolved_retention
        db.apply_schema(SCHEMA)
        self._tasks: set[asyncio.Future[Any]] = set()
        self.failures = 0

    async def load(self) -> list[tuple[Alert, float | None]]:
        """Every stored alert with its ``sent_at``; rows that cannot be parsed are skipped with a warning."""

        def read(conn: sqlite3.Connection) -> list[tuple[str, float | None]]:
            return conn.execute("SELECT alert, sent_at FROM alert_state ORDER BY updated_at").fetchall()

        out = []
        for text, sent_at in await self.db.run(read):
            try:
                out.append((Alert.from_dict(json.loads(text)), sent_at))
            except (ValueError, KeyError, TypeError) as e:
                log.warning("alert state: skipping unreadable row: %s", e)
        return out

    def save(self, upserts: list[tuple[Alert, float | None]], deletes: list[tuple[str, str]], now: float) -> None:
        """Schedule writing ``upserts`` (``(alert, sent_at)``), deleting ``deletes`` (``(rule, fingerprint)``) and
        pruning resolved alerts older than the retention, as of ``now`` (unix seconds). Runs synchronously when no
        event loop is running."""
        rows = [(a.rule, a.fingerprint, a.state.value, json.dumps(a.to_dict()), sent, now) for a, sent in upserts]
        cutoff = now - self.resolved_retention

        def write(conn: sqlite3.Connection) -> None:
            if rows:
                conn.executemany(
                    "INSERT OR REPLACE INTO alert_state (rule, fingerprint, state, alert, sent_at, "
                    "updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )
            if deletes:
                conn.executemany("DELETE FROM alert_state WHERE rule = ? AND fingerprint = ?", deletes)
            conn.execute(
                "DELETE FROM alert_state WHERE state = ? AND updated_at < ?", (AlertState.RESOLVED.value, cutoff)
            )

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self.db.run_sync(write)
            return
        task = asyncio.ensure_future(self.db.run(write))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.failures += 1
            log.error("alert state: write failed: %s", task.exception())

    async def flush(self) -> None:
        """Wait until every scheduled write is committed."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
