"""The notification log: what was last notified to each integration for each alert group, so that a restart
neither forgets a firing alert nor notifies it again (Alertmanager ``nflog/``;
https://prometheus.io/docs/alerting/latest/alertmanager/).

One entry per (integration, group key): the fingerprints of the firing and of the resolved alerts of the last
notification, when it was sent (unix seconds), its sequence number and when the entry expires. Entries are
written by the dispatcher inside the same SQLite job that enqueues the notification in the outbox (see
``relay.alerting.dispatch.dispatcher``), so the log and the outbox never disagree, even after ``kill -9``.

:func:`needs_update` is Alertmanager's ``DedupStage.needsUpdate`` (``notify/notify.go``).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Set
from dataclasses import dataclass

from relay.store.sqlite import SqliteDB

__all__ = ["NflogEntry", "NotificationLog", "needs_update", "SCHEMA"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS nflog (
    integration TEXT NOT NULL, group_key TEXT NOT NULL, firing TEXT NOT NULL, resolved TEXT NOT NULL,
    sent_at REAL NOT NULL, seq INTEGER NOT NULL, expires_at REAL NOT NULL,
    PRIMARY KEY (integration, group_key)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS nflog_expiry ON nflog(expires_at);
"""


@dataclass(frozen=True)
class NflogEntry:
    """The last notification of a group to an integration. ``firing``/``resolved`` are alert fingerprints;
    ``sent_at`` and ``expires_at`` unix seconds; ``seq`` the :class:`~relay.alert.Notification` seq."""

    integration: str
    group_key: str
    firing: frozenset[str]
    resolved: frozenset[str]
    sent_at: float
    seq: int
    expires_at: float


def needs_update(
    entry: NflogEntry | None,
    firing: Set[str],
    resolved: Set[str],
    *,
    send_resolved: bool,
    repeat_interval: float,
    now: float,
) -> bool:
    """Whether a group with these ``firing`` and ``resolved`` fingerprints must be notified again.

    Alertmanager's rules: never notified → only if something fires; a firing alert not in the last
    notification → yes; nothing fires any more → yes if the last notification had firing alerts (so the log is
    cleared even without ``send_resolved``); with ``send_resolved``, a resolved alert not in the last
    notification → yes; otherwise only once ``repeat_interval`` seconds have passed since the last one.
    """
    if entry is None:
        return bool(firing)
    if not firing <= entry.firing:
        return True
    if not firing:
        return bool(entry.firing)
    if send_resolved and not resolved <= entry.resolved:
        return True
    return entry.sent_at <= now - repeat_interval


class NotificationLog:
    """The persisted notification log with an in-memory copy. Blocking constructor (creates the table, loads
    the unexpired entries; call at start-up). ``retention`` (seconds) is the least time an entry is kept."""

    def __init__(self, db: SqliteDB, now: Callable[[], float] = time.time, *, retention: float = 120 * 3600.0):
        self.db = db
        self._now = now
        self.retention = retention
        db.apply_schema(SCHEMA)
        cutoff = now()
        self._entries: dict[tuple[str, str], NflogEntry] = {
            (e.integration, e.group_key): e for e in db.run_sync(_load) if e.expires_at > cutoff
        }

    def get(self, integration: str, group_key: str) -> NflogEntry | None:
        """The unexpired entry of this (integration, group key), or None."""
        e = self._entries.get((integration, group_key))
        if e is not None and e.expires_at <= self._now():
            return None
        return e

    def entry(
        self, integration: str, group_key: str, firing: Set[str], resolved: Set[str], seq: int, repeat_interval: float
    ) -> NflogEntry:
        """A new entry sent now; it expires after ``max(retention, 2 × repeat_interval)``."""
        now = self._now()
        return NflogEntry(
            integration,
            group_key,
            frozenset(firing),
            frozenset(resolved),
            now,
            seq,
            now + max(self.retention, 2 * repeat_interval),
        )

    @staticmethod
    def write(conn: sqlite3.Connection, entry: NflogEntry) -> None:
        """Store ``entry`` inside the caller's SQLite job (on the writer thread). Call :meth:`committed` after
        the job's commit to update the in-memory copy."""
        conn.execute(
            "INSERT OR REPLACE INTO nflog (integration, group_key, firing, resolved, sent_at, seq, expires_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                entry.integration,
                entry.group_key,
                json.dumps(sorted(entry.firing)),
                json.dumps(sorted(entry.resolved)),
                entry.sent_at,
                entry.seq,
                entry.expires_at,
            ),
        )

    def committed(self, entry: NflogEntry) -> None:
        """Make a written entry visible to :meth:`get`."""
        self._entries[(entry.integration, entry.group_key)] = entry

    async def prune(self) -> int:
        """Delete expired entries; returns how many were deleted."""
        now = self._now()

        def job(conn: sqlite3.Connection) -> int:
            return conn.execute("DELETE FROM nflog WHERE expires_at <= ?", (now,)).rowcount

        n = await self.db.run(job)
        for k in [k for k, e in self._entries.items() if e.expires_at <= now]:
            del self._entries[k]
        return n


def _load(conn: sqlite3.Connection) -> list[NflogEntry]:
    rows = conn.execute(
        "SELECT integration, group_key, firing, resolved, sent_at, seq, expires_at FROM nflog"
    ).fetchall()
    return [
        NflogEntry(r[0], r[1], frozenset(json.loads(r[2])), frozenset(json.loads(r[3])), r[4], r[5], r[6]) for r in rows
    ]
