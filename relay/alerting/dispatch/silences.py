"""Silences: matcher sets that mute alerts between ``starts_at`` and ``ends_at`` (Alertmanager semantics,
https://prometheus.io/docs/alerting/latest/alertmanager/#silences and
``silence/silence.go``).

A silence is **pending** before ``starts_at``, **active** until ``ends_at``, then **expired**; its state is computed
from the clock at every check, so an expired silence stops muting by itself. Expiring an active silence sets
``ends_at`` to now; expiring a pending one sets both ends to now. A silence whose matchers or running start change
is replaced (old one expired, new id), otherwise updated in place — as Alertmanager does. Expired silences are
kept for ``retention`` seconds (Alertmanager ``--data.retention``, 120 h), then garbage-collected.

Persistence: the ``silences`` table in relay's SQLite database; every change is durable when its coroutine
returns. Reads (``is_silenced``, ``list``) are served from memory. Times are unix seconds.
"""

from __future__ import annotations

import builtins
import enum
import json
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace

from prometheus_client import CollectorRegistry, Gauge

from relay.matchers import Matcher
from relay.store.sqlite import SqliteDB

__all__ = ["SilenceState", "Silence", "SilenceError", "Silences", "SCHEMA"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS silences (
    id TEXT PRIMARY KEY, matchers TEXT NOT NULL, starts_at REAL NOT NULL, ends_at REAL NOT NULL,
    created_by TEXT NOT NULL, comment TEXT NOT NULL, updated_at REAL NOT NULL) WITHOUT ROWID;
"""


class SilenceState(str, enum.Enum):
    """Alertmanager's silence states."""

    PENDING = "pending"
    ACTIVE = "active"
    EXPIRED = "expired"


class SilenceError(ValueError):
    """An invalid silence (no matchers, matches everything, bad times, already expired…); the message is fit
    for an API error body."""


@dataclass(frozen=True)
class Silence:
    """One silence. ``matchers`` all have to match an alert's labels for it to be muted; times are unix
    seconds; ``id`` is a UUID string."""

    id: str
    matchers: tuple[Matcher, ...]
    starts_at: float
    ends_at: float
    created_by: str
    comment: str
    updated_at: float

    def state(self, now: float) -> SilenceState:
        """pending / active / expired at ``now``."""
        if now < self.starts_at:
            return SilenceState.PENDING
        if now < self.ends_at:
            return SilenceState.ACTIVE
        return SilenceState.EXPIRED

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether every matcher matches ``labels``."""
        return all(m.matches(labels) for m in self.matchers)


class Silences:
    """The silence store. Blocking constructor (creates the table and loads every silence; call at start-up).

    ``db`` is relay's shared :class:`SqliteDB`; ``now`` returns unix seconds (injectable for tests);
    ``retention`` is how long expired silences are kept, seconds. With a ``registry``, the gauge
    ``alertmanager_silences{state}`` counts silences by state (Alertmanager's metric).
    """

    def __init__(
        self,
        db: SqliteDB,
        now: Callable[[], float] = time.time,
        *,
        retention: float = 120 * 3600.0,
        registry: CollectorRegistry | None = None,
    ):
        self.db = db
        self._now = now
        self.retention = retention
        db.apply_schema(SCHEMA)
        self._by_id: dict[str, Silence] = {s.id: s for s in db.run_sync(_load)}
        if registry is not None:
            gauge = Gauge("alertmanager_silences", "How many silences by state.", ["state"], registry=registry)
            for st in SilenceState:
                gauge.labels(st.value).set_function(self._counter(st))

    def _counter(self, state: SilenceState) -> Callable[[], int]:
        return lambda: len(self.list([state]))

    # ------------------------------------------------------------------ reads

    def now(self) -> float:
        """The store's clock (unix seconds)."""
        return self._now()

    def get(self, silence_id: str) -> Silence | None:
        """The silence with this id, or None."""
        return self._by_id.get(silence_id)

    def list(self, states: Iterable[SilenceState] | None = None) -> list[Silence]:
        """Silences in the given states (all when None): active ones first (soonest end first), then pending
        (soonest start first), then expired (most recently ended first) — amtool's order."""
        now = self._now()
        wanted = set(states) if states is not None else set(SilenceState)
        order = {SilenceState.ACTIVE: 0, SilenceState.PENDING: 1, SilenceState.EXPIRED: 2}

        def key(s: Silence) -> tuple[int, float]:
            st = s.state(now)
            return order[st], (
                s.ends_at if st is SilenceState.ACTIVE else s.starts_at if st is SilenceState.PENDING else -s.ends_at
            )

        return sorted((s for s in self._by_id.values() if s.state(now) in wanted), key=key)

    def is_silenced(self, labels: Mapping[str, str]) -> builtins.list[str]:
        """Ids of the active silences that mute an alert with ``labels`` (empty: not silenced)."""
        now = self._now()
        return [s.id for s in self._by_id.values() if s.state(now) is SilenceState.ACTIVE and s.matches(labels)]

    # ------------------------------------------------------------------ writes

    async def create(
        self,
        matchers: Iterable[Matcher],
        starts_at: float,
        ends_at: float,
        created_by: str,
        comment: str,
        *,
        silence_id: str | None = None,
    ) -> str:
        """Create a silence, or change the one with ``silence_id``; returns the id of the stored silence (a new
        one when the change could not be made in place). A start in the past becomes now.

        Raises :class:`SilenceError` when there is no matcher, when every matcher matches the empty string (the
        silence would mute everything), when ``ends_at`` is not after ``starts_at`` or is in the past; raises
        ``KeyError`` when ``silence_id`` is unknown.
        """
        now = self._now()
        ms = tuple(matchers)
        if not ms:
            raise SilenceError("a silence needs at least one matcher")
        if all(m.matches({}) for m in ms):
            raise SilenceError(
                "at least one matcher must not match the empty string (the silence would mute every alert)"
            )
        if ends_at <= starts_at:
            raise SilenceError("start time must be before end time")
        if ends_at <= now:
            raise SilenceError("end time can't be in the past")
        old = None
        if silence_id is not None:
            old = self._by_id.get(silence_id)
            if old is None:
                raise KeyError(silence_id)
        if old is not None and _can_update(old, ms, starts_at, ends_at, now):
            new = replace(
                old, starts_at=starts_at, ends_at=ends_at, created_by=created_by, comment=comment, updated_at=now
            )
            await self.db.run(lambda c: _save(c, new))
            self._by_id[new.id] = new
            return new.id
        new = Silence(str(uuid.uuid4()), ms, max(starts_at, now), ends_at, created_by, comment, now)
        expired = _expired(old, now) if old is not None and old.state(now) is not SilenceState.EXPIRED else None

        def job(conn: sqlite3.Connection) -> None:
            if expired is not None:
                _save(conn, expired)
            _save(conn, new)

        await self.db.run(job)
        if expired is not None:
            self._by_id[expired.id] = expired
        self._by_id[new.id] = new
        return new.id

    async def expire(self, silence_id: str) -> None:
        """Expire a silence now. Raises ``KeyError`` when unknown, :class:`SilenceError` when already expired."""
        old = self._by_id.get(silence_id)
        if old is None:
            raise KeyError(silence_id)
        now = self._now()
        if old.state(now) is SilenceState.EXPIRED:
            raise SilenceError(f"silence {silence_id} already expired")
        new = _expired(old, now)
        await self.db.run(lambda c: _save(c, new))
        self._by_id[silence_id] = new

    async def gc(self) -> int:
        """Delete silences that expired more than ``retention`` seconds ago; returns how many."""
        cutoff = self._now() - self.retention
        gone = [s.id for s in self._by_id.values() if s.ends_at < cutoff]
        if not gone:
            return 0

        def job(conn: sqlite3.Connection) -> None:
            conn.executemany("DELETE FROM silences WHERE id = ?", [(i,) for i in gone])

        await self.db.run(job)
        for i in gone:
            self._by_id.pop(i, None)
        return len(gone)


def _expired(s: Silence, now: float) -> Silence:
    if s.state(now) is SilenceState.PENDING:
        return replace(s, starts_at=now, ends_at=now, updated_at=now)
    return replace(s, ends_at=now, updated_at=now)


def _can_update(old: Silence, matchers: tuple[Matcher, ...], starts_at: float, ends_at: float, now: float) -> bool:
    """Alertmanager's ``canUpdate``: same matchers; an active silence keeps its start and may not end in the past;
    a pending one may not start in the past; an expired one is never updated."""
    if _key(old.matchers) != _key(matchers):
        return False
    st = old.state(now)
    if st is SilenceState.ACTIVE:
        return starts_at == old.starts_at and ends_at >= now
    if st is SilenceState.PENDING:
        return starts_at >= now
    return False


def _key(ms: Iterable[Matcher]) -> list[tuple[str, str, str]]:
    return sorted((m.name, m.op, m.value) for m in ms)


def _save(conn: sqlite3.Connection, s: Silence) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO silences (id, matchers, starts_at, ends_at, created_by, comment, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            s.id,
            json.dumps([[m.name, m.op, m.value] for m in s.matchers]),
            s.starts_at,
            s.ends_at,
            s.created_by,
            s.comment,
            s.updated_at,
        ),
    )


def _load(conn: sqlite3.Connection) -> list[Silence]:
    rows = conn.execute(
        "SELECT id, matchers, starts_at, ends_at, created_by, comment, updated_at FROM silences"
    ).fetchall()
    return [Silence(r[0], tuple(Matcher(*m) for m in json.loads(r[1])), r[2], r[3], r[4], r[5], r[6]) for r in rows]
