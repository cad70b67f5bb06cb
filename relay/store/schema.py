"""The SQLite schema of the spool's state: inbound and outbound spools, dead letters, quarantine, dedup keys,
exported observation ids, trace metadata, item outcome totals, and the (request, trace) pairs already closed of
requests still in the inbound spool (see ``relay.spool``). The usage ledger's tables (usage records, metric
points) belong to the ledger store, which applies them itself: ``relay.usage.sqlite_schema``.

Every statement is idempotent (``IF NOT EXISTS``); it runs at every open.

``exported_ids`` holds the observation ids of one trace commit per row, packed (``pack_ids``: 8 bytes per id when
every id is 16 hexadecimal digits — a span id — else the ids as text, one per line). It replaced ``exported`` (one
row per observation id, hex text, under a composite key and an age index: ~10 index entries and ~250 bytes per
span), which ``migrate`` folds into it in place (issue 12).

``outbound_sent`` holds the send state of outbound batches (the Unix time in ns of the last attempt, by outbound
id): it used to be ``outbound.sent_ns``, and marking a batch rewrote its whole row — the payload, several pages —
before every send. ``migrate`` moves the marks of an older database there.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from itertools import groupby

SCHEMA = """
CREATE TABLE IF NOT EXISTS inbound (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL, signal TEXT NOT NULL, payload BLOB NOT NULL,
    items INTEGER NOT NULL, received_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS request_keys (
    key BLOB PRIMARY KEY, created_ns INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS request_keys_age ON request_keys(created_ns);
CREATE TABLE IF NOT EXISTS outbound (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL, payload BLOB NOT NULL, spans INTEGER NOT NULL, created_ns INTEGER NOT NULL,
    items TEXT NOT NULL DEFAULT '{}');
CREATE INDEX IF NOT EXISTS outbound_tenant ON outbound(tenant, id);
CREATE TABLE IF NOT EXISTS outbound_sent (id INTEGER PRIMARY KEY, sent_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL, payload BLOB NOT NULL, spans INTEGER NOT NULL, created_ns INTEGER NOT NULL,
    failed_ns INTEGER NOT NULL, status INTEGER, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL, signal TEXT NOT NULL, payload BLOB NOT NULL, items INTEGER NOT NULL,
    received_ns INTEGER NOT NULL, failed_ns INTEGER NOT NULL, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS exported_ids (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL, trace_id TEXT NOT NULL, created_ns INTEGER NOT NULL, obs_ids BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS exported_ids_trace ON exported_ids(tenant, trace_id);
CREATE INDEX IF NOT EXISTS exported_ids_age ON exported_ids(created_ns);
CREATE TABLE IF NOT EXISTS trace_meta (
    tenant TEXT NOT NULL, trace_id TEXT NOT NULL, info TEXT NOT NULL, updated_ns INTEGER NOT NULL,
    PRIMARY KEY (tenant, trace_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS trace_meta_age ON trace_meta(updated_ns);
CREATE TABLE IF NOT EXISTS outcomes (
    tenant TEXT NOT NULL, signal TEXT NOT NULL, outcome TEXT NOT NULL, reason TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (tenant, signal, outcome, reason)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inbound_closed (
    seq INTEGER NOT NULL, gkey TEXT NOT NULL, PRIMARY KEY (seq, gkey)) WITHOUT ROWID;
"""

#: Columns added after a table was first released: ``(table, column, declaration)``; ``migrate`` adds the missing
#: ones to databases created by an older relay.
COLUMNS = [
    ("outbound", "items", "TEXT NOT NULL DEFAULT '{}'"),
]


_HEX = frozenset("0123456789abcdef")


def pack_ids(ids: Sequence[str]) -> bytes | str:
    """The ``exported_ids.obs_ids`` value of observation ids: 8 bytes each when all are 16 lowercase hexadecimal
    digits (OTLP span ids as hex, https://opentelemetry.io/docs/specs/otel/trace/api/#retrieving-the-traceid-and-spanid),
    else the ids as text separated by newlines (ids never contain one: they are span ids or derived hashes)."""
    if all(len(i) == 16 and _HEX.issuperset(i) for i in ids):
        return b"".join(bytes.fromhex(i) for i in ids)
    return "\n".join(ids)


def unpack_ids(value: bytes | str) -> list[str]:
    """The observation ids of an ``exported_ids.obs_ids`` value (``pack_ids``)."""
    if isinstance(value, bytes):
        return [value[i : i + 8].hex() for i in range(0, len(value), 8)]
    return value.split("\n") if value else []


def _migrate_exported(conn: sqlite3.Connection) -> None:
    """Fold the old ``exported`` table (one row per observation id) into ``exported_ids`` (one row per trace commit:
    the ids of a trace with the same ``created_ns``), then drop it — in the caller's transaction, so a crash leaves
    one layout or the other. Streams in the old table's key order (one trace in memory at a time)."""
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='exported'").fetchone():
        return
    rows: Iterable[tuple[str, str, int, str]] = conn.execute(
        "SELECT tenant, trace_id, created_ns, obs_id FROM exported"  # primary key order: (tenant, trace_id, obs_id)
    )

    def commits() -> Iterator[tuple[str, str, int, bytes | str]]:
        for (tenant, trace_id), trace_rows in groupby(rows, key=lambda r: (r[0], r[1])):
            by_time: dict[int, list[str]] = {}
            for _, _, created_ns, obs_id in trace_rows:
                by_time.setdefault(created_ns, []).append(obs_id)
            for created_ns, ids in sorted(by_time.items()):
                yield tenant, trace_id, created_ns, pack_ids(ids)

    conn.executemany("INSERT INTO exported_ids(tenant, trace_id, created_ns, obs_ids) VALUES (?,?,?,?)", commits())
    conn.execute("DROP TABLE exported")  # its age index goes with it


def _migrate_sent(conn: sqlite3.Connection) -> None:
    """Move ``outbound.sent_ns`` marks of an older database to ``outbound_sent`` (the column stays, unused and NULL:
    dropping it would rewrite every spooled payload)."""
    if "sent_ns" not in {row[1] for row in conn.execute("PRAGMA table_info(outbound)")}:
        return
    conn.execute(
        "INSERT OR REPLACE INTO outbound_sent(id, sent_ns) SELECT id, sent_ns FROM outbound WHERE sent_ns IS NOT NULL"
    )
    conn.execute("UPDATE outbound SET sent_ns = NULL WHERE sent_ns IS NOT NULL")


def migrate(conn: sqlite3.Connection) -> None:
    """Upgrade a database of an older relay in place (idempotent): add the ``COLUMNS`` it lacks (``ALTER TABLE … ADD
    COLUMN``), fold ``exported`` into ``exported_ids``, move ``outbound.sent_ns`` to ``outbound_sent``."""
    for table, column, decl in COLUMNS:
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
    _migrate_exported(conn)
    _migrate_sent(conn)
