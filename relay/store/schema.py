"""The SQLite schema of the spool's state: inbound and outbound spools, dead letters, quarantine, dedup keys,
exported observation ids, trace metadata, item outcome totals, and the (request, trace) pairs already closed of
requests still in the inbound spool (see ``relay.spool``). The usage ledger's tables (usage records, metric
points) belong to the ledger store, which applies them itself: ``relay.usage.sqlite_schema``.

Every statement is idempotent (``IF NOT EXISTS``); it runs at every open.
"""

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
    items TEXT NOT NULL DEFAULT '{}', sent_ns INTEGER);
CREATE INDEX IF NOT EXISTS outbound_tenant ON outbound(tenant, id);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL, payload BLOB NOT NULL, spans INTEGER NOT NULL, created_ns INTEGER NOT NULL,
    failed_ns INTEGER NOT NULL, status INTEGER, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL, signal TEXT NOT NULL, payload BLOB NOT NULL, items INTEGER NOT NULL,
    received_ns INTEGER NOT NULL, failed_ns INTEGER NOT NULL, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS exported (
    tenant TEXT NOT NULL, trace_id TEXT NOT NULL, obs_id TEXT NOT NULL, created_ns INTEGER NOT NULL,
    PRIMARY KEY (tenant, trace_id, obs_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS exported_age ON exported(created_ns);
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
    ("outbound", "sent_ns", "INTEGER"),
]


def migrate(conn) -> None:
    """Add the ``COLUMNS`` an older database lacks (``ALTER TABLE … ADD COLUMN``); idempotent."""
    for table, column, decl in COLUMNS:
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
