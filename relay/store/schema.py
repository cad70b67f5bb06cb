"""The SQLite schema of relay's state: inbound and outbound spools, dead letters, quarantine, dedup keys,
exported observation ids, trace metadata, the usage ledger and metric points (see ``relay.spool``).

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
    tenant TEXT NOT NULL, payload BLOB NOT NULL, spans INTEGER NOT NULL, created_ns INTEGER NOT NULL);
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
CREATE TABLE IF NOT EXISTS usage_records (
    tenant TEXT NOT NULL, key TEXT NOT NULL, kind TEXT NOT NULL, time_ns INTEGER NOT NULL,
    session_id TEXT, trace_id TEXT, user_id TEXT, model TEXT, tool_name TEXT,
    cost_micros INTEGER NOT NULL DEFAULT 0, cost_source TEXT NOT NULL, success INTEGER NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (tenant, key)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS usage_time ON usage_records(tenant, time_ns);
CREATE TABLE IF NOT EXISTS metric_points (
    tenant TEXT NOT NULL, name TEXT NOT NULL, series TEXT NOT NULL, start_ns INTEGER NOT NULL,
    time_ns INTEGER NOT NULL, value REAL NOT NULL, temporality INTEGER NOT NULL, unit TEXT NOT NULL,
    attributes TEXT NOT NULL,
    PRIMARY KEY (tenant, name, series, start_ns, time_ns)) WITHOUT ROWID;
"""
