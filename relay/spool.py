"""relay's durable queues: the inbound spool (accepted requests) and the outbound spool (Langfuse export batches).

Data flow (one way): receivers ``append`` accepted requests → the pipeline reads them (``read_inbound``), writes
usage records and metric points to the usage ledger (``relay.usage``, idempotent), and in ONE transaction
(``commit_traces``) writes the export batch, the exported observation ids and the trace's metadata → when every record of an inbound request has been handled, the pipeline deletes it
(``done_inbound``) → the exporter reads batches (``read_outbound``) and deletes them on a 2xx (``ack_outbound``)
or moves them to the dead-letter store (``dead_letter``) on a permanent refusal.

Guarantees: an ``append`` that returned is durable (see ``relay.store.sqlite``); a crash at any point
re-delivers unfinished inbound requests to the pipeline, and observation ids already exported are skipped
(``exported`` table), so nothing acknowledged is lost and nothing is exported twice.

Tenancy: every row carries its tenant; outbound rows are read per tenant, so a tenant's data only ever goes to
its own exporter (with that tenant's Langfuse keys).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from relay.model import Signal, UsageRecord
from relay.store.schema import SCHEMA
from relay.store.sqlite import SqliteDB

__all__ = ["Spool", "SpoolFull", "InboundItem", "OutboundBatch", "DeadLetter", "TraceCommit", "SCHEMA"]


class SpoolFull(Exception):
    """The spool is at its configured size; the caller should answer 503 with ``Retry-After: retry_after``."""

    def __init__(self, retry_after: float, reason: str):
        super().__init__(reason)
        self.retry_after = retry_after
        self.reason = reason


@dataclass(frozen=True)
class InboundItem:
    """An accepted request: ``payload`` is a serialized protobuf ``Export<Signal>ServiceRequest``."""

    seq: int
    tenant: str
    signal: Signal
    payload: bytes
    items: int
    received_ns: int


@dataclass(frozen=True)
class OutboundBatch:
    """A serialized ``ExportTraceServiceRequest`` for one tenant's Langfuse project, in export order (``id``)."""

    id: int
    tenant: str
    payload: bytes
    spans: int
    created_ns: int


@dataclass(frozen=True)
class DeadLetter:
    """A batch the destination refused permanently, with the HTTP status and reason."""

    id: int
    tenant: str
    spans: int
    created_ns: int
    failed_ns: int
    status: int | None
    reason: str


@dataclass
class TraceCommit:
    """What the pipeline writes for one closed trace, atomically.

    ``payload`` is a serialized ``ExportTraceServiceRequest`` (None when export is off for the tenant or nothing
    new was produced); ``obs_ids`` the observation ids it contains; ``info`` the trace's ``TraceInfo`` as a dict.
    ``usage`` are the trace's usage records: the pipeline writes them to the ledger before the commit; the spool
    does not store them.
    """

    tenant: str
    trace_id: str
    payload: bytes | None
    spans: int
    obs_ids: list[str]
    info: dict
    usage: list[UsageRecord]
    #: (first start, last end) of the trace's observations in this commit, unix ns (None: no observation).
    bounds: tuple[int, int] | None = None


def _read_sizes(conn: sqlite3.Connection) -> tuple[int, int, dict[str, int], dict[str, int]]:
    """(inbound bytes, outbound bytes, outbound spans per tenant, spooled bytes per tenant) as stored."""
    ib = conn.execute("SELECT COALESCE(SUM(LENGTH(payload)),0) FROM inbound").fetchone()[0]
    ob = conn.execute("SELECT COALESCE(SUM(LENGTH(payload)),0) FROM outbound").fetchone()[0]
    per = dict(conn.execute("SELECT tenant, SUM(spans) FROM outbound GROUP BY tenant").fetchall())
    by_tenant: dict[str, int] = defaultdict(int)
    for table in ("inbound", "outbound"):
        for tenant, size in conn.execute(f"SELECT tenant, SUM(LENGTH(payload)) FROM {table} GROUP BY tenant"):
            by_tenant[tenant] += size or 0
    return ib, ob, per, dict(by_tenant)


class Spool:
    """The durable queues and the small tables that make the pipeline idempotent. Open with ``Spool.open``."""

    def __init__(self, db: SqliteDB, max_size: int, dedup_retention: float):
        self.db = db
        self.max_size = max_size
        self.dedup_retention = dedup_retention
        self.inbound_bytes = 0
        self.outbound_bytes = 0
        self.outbound_spans: dict[str, int] = defaultdict(int)
        #: Bytes spooled per tenant (inbound + outbound), and each tenant's share (``tenants[].max_spool_size``);
        #: a tenant without an entry is only bounded by ``max_size``.
        self.tenant_bytes: dict[str, int] = defaultdict(int)
        self.tenant_limits: dict[str, int] = {}
        self.inbound_event = asyncio.Event()
        self._outbound_events: dict[str, asyncio.Event] = defaultdict(asyncio.Event)

    @classmethod
    def open(cls, directory: Path, *, fsync: bool = False, max_size: int = 2**31, dedup_retention: float = 86400.0) -> Spool:
        """Open (creating if needed) ``<directory>/relay.db``. Blocking; call before the event loop serves."""
        db = SqliteDB(Path(directory) / "relay.db", schema=SCHEMA, fsync=fsync)
        db.open()
        spool = cls(db, max_size, dedup_retention)

        spool._apply_sizes(db.run_sync(_read_sizes))
        return spool

    def _apply_sizes(self, sizes: tuple[int, int, dict[str, int], dict[str, int]]) -> None:
        self.inbound_bytes, self.outbound_bytes, per, by_tenant = sizes
        self.outbound_spans.clear()
        self.outbound_spans.update(per)
        self.tenant_bytes.clear()
        self.tenant_bytes.update(by_tenant)

    async def resync(self) -> None:
        """Re-read the spool's sizes from the database. The counters are kept in memory for speed; another
        process (``relay replay``) may have changed the tables, so the daemon calls this periodically. A write
        finishing around the read can leave them off until the next call (they are metrics and a soft bound)."""
        self._apply_sizes(await self.db.run(_read_sizes))

    def close(self) -> None:
        """Close the database (after finishing queued writes)."""
        self.db.close()

    @property
    def size(self) -> int:
        """Bytes spooled: inbound requests not yet processed + outbound batches not yet exported."""
        return self.inbound_bytes + self.outbound_bytes

    # ------------------------------------------------------------------ inbound

    async def append(self, tenant: str, signal: Signal, payload: bytes, items: int, dedup_key: bytes | None) -> bool:
        """Durably store an accepted request. Returns False (and stores nothing) when ``dedup_key`` was seen
        within the retention; raises ``SpoolFull`` when the spool is at ``max_size`` or the tenant's data is at
        its share (``tenant_limits``), so one tenant whose destination is down cannot starve the others."""
        if self.size + len(payload) > self.max_size:
            raise SpoolFull(5.0, f"spool full ({self.size} of {self.max_size} bytes); retry later")
        limit = self.tenant_limits.get(tenant)
        if limit is not None and self.tenant_bytes[tenant] + len(payload) > limit:
            raise SpoolFull(5.0, f"this tenant's share of the spool is full ({self.tenant_bytes[tenant]} of {limit} "
                                 f"bytes, its data is not being exported); retry later")
        now = time.time_ns()

        def write(conn: sqlite3.Connection) -> bool:
            if dedup_key is not None:
                cur = conn.execute("INSERT OR IGNORE INTO request_keys(key, created_ns) VALUES (?, ?)", (dedup_key, now))
                if cur.rowcount == 0:
                    return False
            conn.execute(
                "INSERT INTO inbound(tenant, signal, payload, items, received_ns) VALUES (?,?,?,?,?)",
                (tenant, signal.value, payload, items, now),
            )
            return True

        stored = await self.db.run(write)
        if stored:
            self.inbound_bytes += len(payload)
            self.tenant_bytes[tenant] += len(payload)
            self.inbound_event.set()
        return stored

    async def read_inbound(self, after_seq: int, limit: int = 64, max_bytes: int | None = None) -> list[InboundItem]:
        """Inbound requests with ``seq > after_seq`` in order, at most ``limit``, and no more than ``max_bytes`` of
        payload (but always at least one request when any is pending)."""

        def read(conn: sqlite3.Connection) -> list[InboundItem]:
            out: list[InboundItem] = []
            size = 0
            for r in conn.execute(
                "SELECT seq, tenant, signal, payload, items, received_ns FROM inbound WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ):
                out.append(InboundItem(r[0], r[1], Signal(r[2]), r[3], r[4], r[5]))
                size += len(r[3])
                if max_bytes is not None and size >= max_bytes:
                    break
            return out

        return await self.db.run(read)

    async def done_inbound(self, seqs: Iterable[int]) -> None:
        """Delete fully handled inbound requests."""
        seqs = list(seqs)
        if not seqs:
            return

        def delete(conn: sqlite3.Connection) -> dict[str, int]:
            freed: dict[str, int] = defaultdict(int)
            for s in seqs:
                row = conn.execute("DELETE FROM inbound WHERE seq = ? RETURNING tenant, LENGTH(payload)", (s,)).fetchone()
                if row:
                    freed[row[0]] += row[1]
            return freed

        freed = await self.db.run(delete)  # not `-= await`: that reads the counter before the await
        for tenant, size in freed.items():
            self.inbound_bytes -= size
            self.tenant_bytes[tenant] -= size

    async def pending_inbound(self) -> int:
        """Number of inbound requests not yet handled."""
        return await self.db.run(lambda c: c.execute("SELECT COUNT(*) FROM inbound").fetchone()[0])

    async def quarantine(self, seqs: Iterable[int], reason: str) -> int:
        """Copy inbound requests the pipeline could not handle (a bug, not bad input: receivers validate) to the
        quarantine table with the reason, so ``relay replay --quarantined`` can re-process them after a fix.
        The caller still deletes them from the inbound spool. Returns how many were copied."""
        seqs = sorted(set(seqs))
        now = time.time_ns()

        def copy(conn: sqlite3.Connection) -> int:
            n = 0
            for s in seqs:
                n += conn.execute(
                    "INSERT INTO quarantine(tenant, signal, payload, items, received_ns, failed_ns, reason) "
                    "SELECT tenant, signal, payload, items, received_ns, ?, ? FROM inbound WHERE seq = ?",
                    (now, reason, s),
                ).rowcount
            return n

        return await self.db.run(copy)

    async def requeue_quarantined(self) -> int:
        """Move quarantined requests back to the inbound spool; returns how many moved."""

        def move(conn: sqlite3.Connection) -> int:
            rows = conn.execute("SELECT id, tenant, signal, payload, items, received_ns FROM quarantine ORDER BY id").fetchall()
            for qid, *row in rows:
                conn.execute("INSERT INTO inbound(tenant, signal, payload, items, received_ns) VALUES (?,?,?,?,?)", row)
                conn.execute("DELETE FROM quarantine WHERE id=?", (qid,))
            return len(rows)

        n = await self.db.run(move)
        if n:
            await self.resync()
            self.inbound_event.set()
        return n

    # ------------------------------------------------------------------ pipeline output

    async def trace_state(self, tenant: str, trace_id: str) -> tuple[dict | None, set[str]]:
        """What an earlier export of ``trace_id`` left, in one read: its trace info (a ``TraceInfo`` as a dict,
        reused for late records) or None, and the observation ids already queued for export (export-once)."""

        def read(conn: sqlite3.Connection) -> tuple[dict | None, set[str]]:
            row = conn.execute("SELECT info FROM trace_meta WHERE tenant=? AND trace_id=?", (tenant, trace_id)).fetchone()
            ids = conn.execute("SELECT obs_id FROM exported WHERE tenant=? AND trace_id=?", (tenant, trace_id)).fetchall()
            return (json.loads(row[0]) if row else None), {r[0] for r in ids}

        return await self.db.run(read)

    async def trace_states(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], tuple[dict | None, set[str]]]:
        """``trace_state`` of many ``(tenant, trace_id)`` pairs in ONE database job (the pipeline reads the state of
        a whole batch of closing traces at once: one writer-thread round trip instead of one per trace). Pairs
        with neither trace info nor exported ids are left out of the result."""
        keys = sorted(set(keys))

        def read(conn: sqlite3.Connection) -> dict[tuple[str, str], tuple[dict | None, set[str]]]:
            out: dict[tuple[str, str], tuple[dict | None, set[str]]] = {}
            for tenant, trace_id in keys:
                row = conn.execute("SELECT info FROM trace_meta WHERE tenant=? AND trace_id=?",
                                   (tenant, trace_id)).fetchone()
                ids = conn.execute("SELECT obs_id FROM exported WHERE tenant=? AND trace_id=?",
                                   (tenant, trace_id)).fetchall()
                if row or ids:
                    out[(tenant, trace_id)] = ((json.loads(row[0]) if row else None), {r[0] for r in ids})
            return out

        return await self.db.run(read) if keys else {}

    async def commit_traces(self, commits: list[TraceCommit]) -> None:
        """Atomically write export batches, exported observation ids and trace metadata (usage records and metric
        points go to the usage ledger, ``relay.usage.store.LedgerStore``, not here)."""
        now = time.time_ns()

        def write(conn: sqlite3.Connection) -> int:
            added = 0
            for c in commits:
                if c.payload:
                    conn.execute(
                        "INSERT INTO outbound(tenant, payload, spans, created_ns) VALUES (?,?,?,?)",
                        (c.tenant, c.payload, c.spans, now),
                    )
                    added += len(c.payload)
                conn.executemany(
                    "INSERT OR IGNORE INTO exported(tenant, trace_id, obs_id, created_ns) VALUES (?,?,?,?)",
                    [(c.tenant, c.trace_id, o, now) for o in c.obs_ids],
                )
                conn.execute(
                    "INSERT INTO trace_meta(tenant, trace_id, info, updated_ns) VALUES (?,?,?,?) "
                    "ON CONFLICT(tenant, trace_id) DO UPDATE SET info=excluded.info, updated_ns=excluded.updated_ns",
                    (c.tenant, c.trace_id, json.dumps(c.info, sort_keys=True), now),
                )
            return added

        added = await self.db.run(write)
        self.outbound_bytes += added
        for c in commits:
            if c.payload:
                self.outbound_spans[c.tenant] += c.spans
                self.tenant_bytes[c.tenant] += len(c.payload)
                self._outbound_events[c.tenant].set()

    # ------------------------------------------------------------------ outbound (exporter)

    def outbound_event(self, tenant: str) -> asyncio.Event:
        """An event set whenever new outbound batches for ``tenant`` are committed (the exporter clears it)."""
        return self._outbound_events[tenant]

    async def read_outbound(self, tenant: str, max_spans: int, max_bytes: int) -> list[OutboundBatch]:
        """The oldest outbound batches of ``tenant`` in order, as many as fit ``max_spans``/``max_bytes``
        (always at least one when any is pending)."""

        def read(conn: sqlite3.Connection) -> list[OutboundBatch]:
            out: list[OutboundBatch] = []
            spans = size = 0
            for row in conn.execute(
                "SELECT id, tenant, payload, spans, created_ns FROM outbound WHERE tenant=? ORDER BY id LIMIT 1000", (tenant,)
            ):
                b = OutboundBatch(*row)
                if out and (spans + b.spans > max_spans or size + len(b.payload) > max_bytes):
                    break
                out.append(b)
                spans += b.spans
                size += len(b.payload)
            return out

        return await self.db.run(read)

    async def ack_outbound(self, batches: list[OutboundBatch]) -> None:
        """Delete exported batches (after the destination answered 2xx)."""
        ids = [(b.id,) for b in batches]
        await self.db.run(lambda c: c.executemany("DELETE FROM outbound WHERE id=?", ids))
        for b in batches:
            self.outbound_bytes -= len(b.payload)
            self.outbound_spans[b.tenant] -= b.spans
            self.tenant_bytes[b.tenant] -= len(b.payload)

    async def dead_letter(self, batches: list[OutboundBatch], status: int | None, reason: str) -> None:
        """Move batches the destination refused permanently to the dead-letter store, with the reason."""
        now = time.time_ns()

        def move(conn: sqlite3.Connection) -> None:
            for b in batches:
                conn.execute(
                    "INSERT INTO dead_letters(tenant, payload, spans, created_ns, failed_ns, status, reason) VALUES (?,?,?,?,?,?,?)",
                    (b.tenant, b.payload, b.spans, b.created_ns, now, status, reason),
                )
                conn.execute("DELETE FROM outbound WHERE id=?", (b.id,))

        await self.db.run(move)
        for b in batches:
            self.outbound_bytes -= len(b.payload)
            self.outbound_spans[b.tenant] -= b.spans
            self.tenant_bytes[b.tenant] -= len(b.payload)

    async def dead_letters(self, tenant: str | None = None) -> list[DeadLetter]:
        """The dead-letter store's entries (without payloads), oldest first."""
        sql = "SELECT id, tenant, spans, created_ns, failed_ns, status, reason FROM dead_letters"
        args: tuple = ()
        if tenant:
            sql += " WHERE tenant=?"
            args = (tenant,)
        rows = await self.db.run(lambda c: c.execute(sql + " ORDER BY id", args).fetchall())
        return [DeadLetter(*r) for r in rows]

    async def requeue_dead_letters(self, tenant: str | None = None, ids: list[int] | None = None) -> int:
        """Move dead letters back to the outbound spool (``relay replay``); returns how many batches moved.

        They are appended after the tenant's pending batches; the running relay (another process: within its
        exporter's poll interval) or the next one exports them. Fix the cause first (keys, quota, bad data): a
        batch refused again returns here. A batch dead-lettered after repeated 500s may duplicate spans if
        Langfuse stored it despite the error (Langfuse v4 does not deduplicate re-sent spans; langfuse/langfuse
        ``worker/src/queues/otelIngestionQueue.ts``)."""
        now = time.time_ns()

        def move(conn: sqlite3.Connection) -> list[tuple[str, int, int]]:
            sql = "SELECT id, tenant, payload, spans FROM dead_letters"
            cond, args = [], []
            if tenant:
                cond.append("tenant=?")
                args.append(tenant)
            if ids:
                cond.append(f"id IN ({','.join('?' * len(ids))})")
                args.extend(ids)
            if cond:
                sql += " WHERE " + " AND ".join(cond)
            moved = []
            for did, ten, payload, spans in conn.execute(sql + " ORDER BY id", args).fetchall():
                conn.execute("INSERT INTO outbound(tenant, payload, spans, created_ns) VALUES (?,?,?,?)", (ten, payload, spans, now))
                conn.execute("DELETE FROM dead_letters WHERE id=?", (did,))
                moved.append((ten, len(payload), spans))
            return moved

        moved = await self.db.run(move)
        for ten, size, spans in moved:
            self.outbound_bytes += size
            self.outbound_spans[ten] += spans
            self.tenant_bytes[ten] += size
            self._outbound_events[ten].set()
        return len(moved)

    # ------------------------------------------------------------------ housekeeping

    async def prune(self, request_key_retention: float = 3600.0, batch: int = 5000) -> int:
        """Forget request hashes older than ``request_key_retention`` seconds (client retries come within
        seconds) and exported ids / trace metadata older than ``dedup_retention``. Deletes in batches of ``batch``
        rows, each its own small transaction, so acknowledgements never wait behind a long delete. Returns the
        number of rows deleted."""
        now = time.time_ns()
        key_cutoff = now - int(min(request_key_retention, self.dedup_retention) * 1e9)
        cutoff = now - int(self.dedup_retention * 1e9)
        statements = [
            ("DELETE FROM request_keys WHERE key IN "
             "(SELECT key FROM request_keys WHERE created_ns < ? LIMIT ?)", key_cutoff),
            ("DELETE FROM exported WHERE (tenant, trace_id, obs_id) IN "
             "(SELECT tenant, trace_id, obs_id FROM exported WHERE created_ns < ? LIMIT ?)", cutoff),
            ("DELETE FROM trace_meta WHERE (tenant, trace_id) IN "
             "(SELECT tenant, trace_id FROM trace_meta WHERE updated_ns < ? LIMIT ?)", cutoff),
        ]
        total = 0
        for sql, limit_ns in statements:
            while True:
                n = await self.db.run(lambda c, sql=sql, limit_ns=limit_ns: c.execute(sql, (limit_ns, batch)).rowcount)
                total += n
                if n < batch:
                    break
        return total
