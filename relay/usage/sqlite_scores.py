"""The ledger's score table and the score outbox on SQLite (relay's database, shared with the spool and ledger).

Tables (applied by :func:`apply_score_schema`):

- ``ledger_scores``: one row per Langfuse score, unique per ``(tenant, id)`` — the scores relay computes
  (``source='relay'``) and the scores apps post through relay (``source='api'``: ``POST /api/public/scores`` and
  ``score-create`` items of ``POST /api/public/ingestion``). Numeric and boolean values in ``value``; categorical
  and text values in ``string_value``. ``user_id`` and ``labels`` (sorted-key JSON) come from the ledger records of
  the scored trace or session, so rules and reports can group scores like usage (``team.id``…).
- ``score_outbox``: scores waiting for delivery to the tenant's Langfuse project; at most one row per
  ``(tenant, score_id)`` (re-enqueueing a pending score replaces its body and bumps ``version``).
- ``score_dead_letters``: scores Langfuse refused permanently, with the status and reason.
- ``score_subjects``: the traces and sessions to (re)score and when (``due_ns``; 0 = nothing to do), with the
  trace's bounds (``start_ns``/``end_ns``, unix ns) as the pipeline saw them.

Scores are upserted by id (Langfuse: https://langfuse.com/docs/scores/custom —
"id" is the idempotency key), so writing a score again updates it and never duplicates it.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from relay.store.sqlite import SqliteDB, chunks, marks

__all__ = [
    "SCORE_SCHEMA",
    "LedgerScore",
    "apply_score_schema",
    "put_scores",
    "read_scores",
    "ScoreRow",
    "score_dead_letters",
    "requeue_score_dead_letters",
]

SCORE_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger_scores (
    tenant TEXT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL, data_type TEXT NOT NULL,
    value REAL, string_value TEXT, trace_id TEXT, session_id TEXT, observation_id TEXT,
    user_id TEXT, labels TEXT NOT NULL DEFAULT '{}', source TEXT NOT NULL, comment TEXT,
    time_ns INTEGER NOT NULL,
    PRIMARY KEY (tenant, id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ledger_scores_name_time ON ledger_scores(name, time_ns);
CREATE TABLE IF NOT EXISTS score_outbox (
    id INTEGER PRIMARY KEY, tenant TEXT NOT NULL, score_id TEXT NOT NULL, body TEXT NOT NULL,
    version INTEGER NOT NULL DEFAULT 1, attempts INTEGER NOT NULL DEFAULT 0, failures_500 INTEGER NOT NULL DEFAULT 0,
    next_ns INTEGER NOT NULL DEFAULT 0, created_ns INTEGER NOT NULL, last_error TEXT,
    UNIQUE (tenant, score_id));
CREATE INDEX IF NOT EXISTS score_outbox_due ON score_outbox(tenant, next_ns);
CREATE TABLE IF NOT EXISTS score_dead_letters (
    id INTEGER PRIMARY KEY, tenant TEXT NOT NULL, score_id TEXT NOT NULL, body TEXT NOT NULL,
    status INTEGER, reason TEXT NOT NULL, failed_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS score_subjects (
    tenant TEXT NOT NULL, kind TEXT NOT NULL, subject_id TEXT NOT NULL, session_id TEXT,
    start_ns INTEGER, end_ns INTEGER, last_ns INTEGER NOT NULL, due_ns INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, kind, subject_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS score_subjects_due ON score_subjects(due_ns) WHERE due_ns > 0;
CREATE INDEX IF NOT EXISTS score_subjects_session ON score_subjects(tenant, session_id);
CREATE INDEX IF NOT EXISTS usage_records_trace ON usage_records(tenant, trace_id);
"""


@dataclass(frozen=True)
class LedgerScore:
    """One score for the ledger and for Langfuse.

    ``body`` is the Langfuse ``POST /api/public/scores`` object (https://api.reference.langfuse.com, "Scores":
    ``id``, ``name``, ``value``, ``dataType``, ``traceId``/``sessionId``/``observationId``, ``comment``,
    ``metadata``, ``environment``); ``source`` is ``relay`` (computed) or ``api`` (posted by an app);
    ``time_ns`` unix ns; ``deliver`` False keeps it out of the outbox (ledger only).
    """

    tenant: str
    body: dict[str, Any]
    source: str
    time_ns: int
    deliver: bool = True

    @property
    def id(self) -> str:
        """The score's id (the upsert key in Langfuse and in ``ledger_scores``)."""
        return str(self.body["id"])


@dataclass(frozen=True)
class ScoreRow:
    """A ``ledger_scores`` row as read back: ``value`` is the number (None for categorical/text scores),
    ``string_value`` the label or text; ``labels`` include ``user`` when known."""

    tenant: str
    id: str
    name: str
    data_type: str
    value: float | None
    string_value: str | None
    trace_id: str | None
    session_id: str | None
    user_id: str | None
    labels: dict[str, str]
    source: str
    time_ns: int


def apply_score_schema(db: SqliteDB) -> None:
    """Create the score tables (blocking; call at start-up after the ledger's schema). Raises ``sqlite3.Error``."""
    db.apply_schema(SCORE_SCHEMA)


def _identity(
    conn: sqlite3.Connection, tenant: str, trace_id: str | None, session_id: str | None
) -> tuple[str | None, str]:
    """(user, labels JSON) of a ledger record of the scored trace (else session), for grouping scores by label."""
    for col, val in (("trace_id", trace_id), ("session_id", session_id)):
        if val:
            row = conn.execute(
                f"SELECT user_id, labels FROM usage_records WHERE tenant=? AND {col}=? LIMIT 1", (tenant, val)
            ).fetchone()
            if row:
                return row[0], row[1] or "{}"
    return None, "{}"


_ROW = (
    "SELECT tenant, id, name, data_type, value, string_value, trace_id, session_id, user_id, labels, source, "
    "time_ns FROM ledger_scores"
)


def _row(r: Sequence[Any], labels_cache: dict[str, dict[str, str]] | None = None) -> ScoreRow:
    raw = r[9] or "{}"
    if labels_cache is None:
        labels = json.loads(raw)
    else:  # parsed once per label set; each row still gets its own dict
        parsed = labels_cache.get(raw)
        if parsed is None:
            parsed = labels_cache[raw] = json.loads(raw)
        labels = dict(parsed)
    return ScoreRow(
        tenant=r[0],
        id=r[1],
        name=r[2],
        data_type=r[3],
        value=r[4],
        string_value=r[5],
        trace_id=r[6],
        session_id=r[7],
        user_id=r[8],
        labels=labels,
        source=r[10],
        time_ns=r[11],
    )


_UPSERT = (
    "INSERT INTO ledger_scores(tenant, id, name, data_type, value, string_value, trace_id, session_id, "
    "observation_id, user_id, labels, source, comment, time_ns) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
    "ON CONFLICT(tenant, id) DO UPDATE SET name=excluded.name, data_type=excluded.data_type, "
    "value=excluded.value, string_value=excluded.string_value, trace_id=excluded.trace_id, "
    "session_id=excluded.session_id, observation_id=excluded.observation_id, user_id=excluded.user_id, "
    "labels=excluded.labels, source=excluded.source, comment=excluded.comment, time_ns=excluded.time_ns"
)
_OUTBOX = (
    "INSERT INTO score_outbox(tenant, score_id, body, created_ns) VALUES (?,?,?,?) "
    "ON CONFLICT(tenant, score_id) DO UPDATE SET body=excluded.body, version=version+1, attempts=0, "
    "failures_500=0, next_ns=0, last_error=NULL WHERE body != excluded.body OR next_ns > 0"
)
#: The ``_UPSERT`` values that ``_ROW`` reads back, by position in the upsert (observation_id and comment are not read).
_read_back = itemgetter(0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 13)
#: Positions of the text columns given as they come (trace, session, observation, user, source, comment).
_TEXT = (6, 7, 8, 9, 11, 12)


def _values(
    conn: sqlite3.Connection, s: LedgerScore, identities: dict[tuple, tuple[str | None, str]], before: Any
) -> tuple:
    """The ``_UPSERT`` parameters of score ``s`` (``before``: its stored ``_ROW`` or None, which keeps its time)."""
    b = s.body
    value = b.get("value")
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    who = (s.tenant, b.get("traceId"), b.get("sessionId"))
    if who not in identities:  # one lookup per scored trace or session (the ledger does not change meanwhile)
        identities[who] = _identity(conn, *who)
    user, labels = identities[who]
    return (
        s.tenant,
        s.id,
        str(b.get("name")),
        str(b.get("dataType") or ("NUMERIC" if numeric else "CATEGORICAL")),
        float(value) + 0.0 if numeric and value is not None else None,  # + 0.0: SQLite stores -0.0 as 0
        None if numeric or value is None else str(value),
        b.get("traceId"),
        b.get("sessionId"),
        b.get("observationId"),
        user,
        labels,
        s.source,
        b.get("comment"),
        s.time_ns if before is None else before[11],
    )


def _stored_as_given(v: tuple) -> bool:
    """True when SQLite stores the upsert values ``v`` exactly as given, so the row read back equals them: text
    columns hold ``str``/None (a number given for a TEXT column would be stored as text), the value a finite
    float (NaN is stored as NULL), the time an ``int``."""
    value = v[4]
    for i in _TEXT:
        if v[i] is not None and type(v[i]) is not str:
            return False
    return (value is None or (type(value) is float and math.isfinite(value))) and type(v[13]) is int


def put_scores(
    conn: sqlite3.Connection, scores: list[LedgerScore]
) -> tuple[int, list[tuple[ScoreRow | None, ScoreRow]]]:
    """Upsert ``scores`` into ``ledger_scores`` and (``deliver``) into ``score_outbox``, in the caller's
    transaction. Returns the number of outbox rows written and the ``(old, new)`` rows that changed (old None: a
    new score) — the rules engine's feed. A pending outbox row of the same id gets the new body.

    Batched: the stored rows of all ids are read with ``id IN (…)`` queries, each scored trace's or session's
    identity is looked up once, the rows after the upsert are known without reading them back (``_stored_as_given``;
    otherwise they are read back), and each table gets one ``executemany``."""
    now = time.time_ns()
    current: dict[tuple[str, str], Any] = {}
    by_tenant: dict[str, list[str]] = {}
    for s in scores:
        by_tenant.setdefault(s.tenant, []).append(s.id)
    for tenant, ids in by_tenant.items():
        ids = list(dict.fromkeys(ids))
        for part in chunks(ids):
            sql = _ROW + f" WHERE tenant=? AND id IN ({marks(part)})"
            for row in conn.execute(sql, (tenant, *part)):
                current[(row[0], row[1])] = tuple(row)
    identities: dict[tuple, tuple[str | None, str]] = {}
    labels_cache: dict[str, dict[str, str]] = {}
    upserts: list[tuple] = []
    outbox: list[tuple] = []
    changes: list[tuple[ScoreRow | None, ScoreRow]] = []
    for s in scores:
        key = (s.tenant, s.id)
        before = current.get(key)
        v = _values(conn, s, identities, before)
        if _stored_as_given(v):
            upserts.append(v)
            after = _read_back(v)
        else:  # read back what SQLite made of it, after the upserts so far
            conn.executemany(_UPSERT, upserts)
            upserts = []
            conn.execute(_UPSERT, v)
            after = tuple(conn.execute(_ROW + " WHERE tenant=? AND id=?", key).fetchone())
        current[key] = after
        if before is None or before != after:
            changes.append((None if before is None else _row(before, labels_cache), _row(after, labels_cache)))
        if s.deliver:
            outbox.append((s.tenant, s.id, json.dumps(s.body, sort_keys=True, separators=(",", ":")), now))
    conn.executemany(_UPSERT, upserts)
    conn.executemany(_OUTBOX, outbox)
    return len(outbox), changes


def read_scores(
    conn: sqlite3.Connection, start_ns: int, end_ns: int, tenant: str | None = None, name: str | None = None
) -> list[ScoreRow]:
    """``ledger_scores`` rows with ``start_ns <= time_ns < end_ns`` (optionally one tenant / score name), in time
    order."""
    sql = _ROW + " WHERE time_ns >= ? AND time_ns < ?"
    args: list[Any] = [start_ns, end_ns]
    if tenant is not None:
        sql += " AND tenant = ?"
        args.append(tenant)
    if name is not None:
        sql += " AND name = ?"
        args.append(name)
    return [_row(r) for r in conn.execute(sql + " ORDER BY time_ns", args)]


def score_dead_letters(conn: sqlite3.Connection, tenant: str | None = None) -> list[tuple]:
    """Dead-lettered scores ``(id, tenant, score name, status, reason, failed_ns)``, oldest first ([] when the score
    tables do not exist yet)."""
    sql = "SELECT id, tenant, body, status, reason, failed_ns FROM score_dead_letters"
    args: tuple = ()
    if tenant is not None:
        sql, args = sql + " WHERE tenant=?", (tenant,)
    try:
        rows = conn.execute(sql + " ORDER BY id", args).fetchall()
    except sqlite3.OperationalError:
        return []
    return [(i, t, json.loads(b).get("name"), st, r, f) for i, t, b, st, r, f in rows]


def requeue_score_dead_letters(
    conn: sqlite3.Connection, tenant: str | None = None, ids: Sequence[int] | None = None
) -> int:
    """Move dead-lettered scores (optionally one tenant / these ids) back to the score outbox; returns how many. A
    score of the same id already queued keeps its (newer) body."""
    rows = [r for r in score_dead_letters(conn, tenant) if not ids or r[0] in ids]
    now = time.time_ns()
    for row_id, *_ in rows:
        t, sid, body = conn.execute(
            "SELECT tenant, score_id, body FROM score_dead_letters WHERE id=?", (row_id,)
        ).fetchone()
        conn.execute(
            "INSERT OR IGNORE INTO score_outbox(tenant, score_id, body, created_ns) VALUES (?,?,?,?)",
            (t, sid, body, now),
        )
        conn.execute("DELETE FROM score_dead_letters WHERE id=?", (row_id,))
    return len(rows)
