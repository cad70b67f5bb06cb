"""relay's durable queues: the inbound spool (accepted requests) and the outbound spool (Langfuse export batches).

Data flow (one way): receivers ``append`` accepted requests → the pipeline reads them (``read_inbound``), writes
usage records and metric points to the usage ledger (``relay.usage``, idempotent), and in ONE transaction
(``commit_traces``) writes the export batch, the exported observation ids and the trace's metadata → when every record of an inbound request has been handled, the pipeline deletes it
(``done_inbound``) → the exporter reads batches (``read_outbound``) and deletes them on a 2xx (``ack_outbound``)
or moves them to the dead-letter store (``dead_letter``) on a permanent refusal.

Guarantees: an ``append`` that returned is durable (see ``relay.store.sqlite``); a crash at any point
re-delivers unfinished inbound requests to the pipeline, and observation ids already queued are skipped
(``exported_ids`` table), so nothing acknowledged is lost and nothing is queued for export twice. The export itself
records its state per batch before each send (``mark_sending``); batches found in that state after a restart are
reconciled with Langfuse before anything is re-sent (``relay.exporters.langfuse``).

Admission (``append``): the spool refuses (``SpoolFull`` → 503 + Retry-After) when the accepted request would take
it over ``max_size`` — exactly: bytes of appends still being written are reserved — or when the file system holding
it has less than ``min_free_space`` bytes free (``storage.min_free_space``), so the delete that follows an export
and the pipeline's own writes still find room. Both are states: admission reopens by itself once the exporter
drained the spool or the disk has room again.

Outcomes: every write that decides the fate of items also adds them, in the same transaction, to the ``outcomes``
table (``relay_items_total``, ``relay.telemetry.OutcomeCounts``; fates in ``relay.model.Outcome``), so the totals
are exact across crashes.

Tenancy: every row carries its tenant; outbound rows are read per tenant, so a tenant's data only ever goes to
its own exporter (with that tenant's Langfuse keys).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sqlite3
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from relay.model import Outcome, Signal, UsageRecord
from relay.store.schema import SCHEMA, migrate, pack_ids, unpack_ids
from relay.store.sqlite import SqliteDB, chunks, marks
from relay.telemetry import OutcomeCounts

__all__ = [
    "Spool",
    "SpoolFull",
    "InboundItem",
    "OutboundBatch",
    "DeadLetter",
    "TraceCommit",
    "SCHEMA",
    "OutcomeRow",
    "is_storage_error",
]

#: ``(tenant, signal, outcome, reason, n)``: ``n`` items of ``signal`` of ``tenant`` reached ``outcome``
#: (``relay.model.Outcome``) for ``reason``.
OutcomeRow = tuple[str, str, str, str, int]


def is_storage_error(exc: BaseException) -> bool:
    """True for failures of the storage itself — disk full, I/O error, database locked or busy (SQLite's
    ``OperationalError``, https://docs.python.org/3/library/sqlite3.html#sqlite3.OperationalError) or an ``OSError``
    — which are states to wait out, never a reason to quarantine data."""
    return isinstance(exc, (sqlite3.OperationalError, OSError)) and not isinstance(exc, ConnectionError)


def _count(conn: sqlite3.Connection, rows: Iterable[OutcomeRow]) -> None:
    conn.executemany(
        "INSERT INTO outcomes(tenant, signal, outcome, reason, n) VALUES (?,?,?,?,?) "
        "ON CONFLICT(tenant, signal, outcome, reason) DO UPDATE SET n = n + excluded.n",
        [(t, str(sig), str(o), r, n) for t, sig, o, r, n in rows if n],
    )


def _delete_inbound(conn: sqlite3.Connection, seq: int, freed: dict[str, int]) -> None:
    """Delete inbound request ``seq`` and its ``inbound_closed`` marks; add its payload size to ``freed[tenant]``."""
    row = conn.execute("DELETE FROM inbound WHERE seq = ? RETURNING tenant, LENGTH(payload)", (seq,)).fetchone()
    if row:
        freed[row[0]] += row[1]
    conn.execute("DELETE FROM inbound_closed WHERE seq = ?", (seq,))


def _delete_batch(sql: str, args: tuple[int, int], conn: sqlite3.Connection) -> int:
    """Run one batched DELETE of ``prune``; the number of rows deleted."""
    return conn.execute(sql, args).rowcount


def _item_rows(tenant: str, items: dict[str, int], outcome: Outcome, reason: str) -> list[OutcomeRow]:
    return [(tenant, sig, str(outcome), reason, n) for sig, n in items.items() if n]


class SpoolFull(Exception):
    """The spool is at its configured size; the caller should answer 503 with ``Retry-After: retry_after``."""

    def __init__(self, retry_after: float, reason: str):
        super().__init__(reason)
        self.retry_after = retry_after
        self.reason = reason


@dataclass(frozen=True)
class InboundItem:
    """An accepted request: ``payload`` is a serialized protobuf ``Export<Signal>ServiceRequest``; ``received_ns``
    is when relay stored it (Unix ns, taken with ``seq`` in the same write: requests appended later have later
    times, unless the wall clock stepped back; ``relay replay`` keeps a quarantined request's original time)."""

    seq: int
    tenant: str
    signal: Signal
    payload: bytes
    items: int
    received_ns: int


@dataclass(frozen=True)
class OutboundBatch:
    """A serialized ``ExportTraceServiceRequest`` for one tenant's Langfuse project (one trace's new
    observations), in export order (``id``). ``items`` counts the accepted records per signal the batch carries
    (their outcome is decided by its export); ``sent_ns`` is the Unix time (ns) of the last attempt to send it, or
    None when it was never sent: a batch read with ``sent_ns`` set by a new process may already be in Langfuse."""

    id: int
    tenant: str
    payload: bytes
    spans: int
    created_ns: int
    items: dict[str, int] = field(default_factory=dict, compare=False)
    sent_ns: int | None = None


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
    does not store them. ``items`` counts, per signal, the records the batch carries (their outcome comes with the
    export).
    """

    tenant: str
    trace_id: str
    payload: bytes | None
    spans: int
    obs_ids: list[str]
    info: dict
    usage: list[UsageRecord]
    items: dict[str, int] = field(default_factory=dict)
    #: (first start, last end) of the trace's observations in this commit, unix ns (None: no observation).
    bounds: tuple[int, int] | None = None


def _read_sizes(conn: sqlite3.Connection) -> tuple[int, int, dict[str, int], dict[str, int]]:
    """(inbound bytes, outbound bytes, outbound spans per tenant, spooled bytes per tenant) as stored, in one pass
    over each table (``LENGTH`` of a blob reads its size from the row header, not its pages)."""
    by_tenant: dict[str, int] = defaultdict(int)
    per: dict[str, int] = {}
    ib = ob = 0
    for tenant, size in conn.execute("SELECT tenant, SUM(LENGTH(payload)) FROM inbound GROUP BY tenant"):
        ib += size or 0
        by_tenant[tenant] += size or 0
    for tenant, size, spans in conn.execute(
        "SELECT tenant, SUM(LENGTH(payload)), SUM(spans) FROM outbound GROUP BY tenant"
    ):
        ob += size or 0
        by_tenant[tenant] += size or 0
        per[tenant] = spans
    return ib, ob, per, dict(by_tenant)


class Spool:
    """The durable queues and the small tables that make the pipeline idempotent. Open with ``Spool.open``."""

    def __init__(
        self,
        db: SqliteDB,
        max_size: int,
        dedup_retention: float,
        *,
        min_free_space: int = 0,
        outcomes: OutcomeCounts | None = None,
    ):
        self.db = db
        self._db_dir = os.fspath(db.path.parent)  # statvfs'd on every admission: the str once, not a Path each time
        self.max_size = max_size
        self.min_free_space = min_free_space
        self.dedup_retention = dedup_retention
        self.outcomes = outcomes if outcomes is not None else OutcomeCounts()
        self._reserved = 0  # bytes of appends being written (admission counts them: the limit is exact)
        self._reserved_by_tenant: dict[str, int] = defaultdict(int)
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
    def open(
        cls,
        directory: Path,
        *,
        fsync: bool = False,
        max_size: int = 2**31,
        dedup_retention: float = 86400.0,
        min_free_space: int = 0,
        outcomes: OutcomeCounts | None = None,
    ) -> Spool:
        """Open (creating if needed) ``<directory>/relay.db``. Blocking; call before the event loop serves.
        ``min_free_space`` (bytes) is the free space admission keeps on the file system; ``outcomes`` receives
        the durable outcome totals (loaded now, updated by every fate-deciding write)."""
        db = SqliteDB(Path(directory) / "relay.db", schema=SCHEMA, fsync=fsync)
        db.open()
        db.run_sync(migrate)
        spool = cls(db, max_size, dedup_retention, min_free_space=min_free_space, outcomes=outcomes)
        spool._apply_sizes(db.run_sync(_read_sizes))
        totals = db.run_sync(lambda c: c.execute("SELECT tenant, signal, outcome, reason, n FROM outcomes").fetchall())
        spool.outcomes.reset(totals)
        spool.outcomes.sink = spool.count_outcomes
        return spool

    async def count_outcomes(self, rows: list[OutcomeRow]) -> None:
        """Store outcome rows decided without another spool write (e.g. all items of a request invalid)."""
        rows = [r for r in rows if r[4]]

        def write(conn: sqlite3.Connection) -> tuple[None, list[OutcomeRow]]:
            _count(conn, rows)
            return None, rows

        if rows:
            await self._write(write)

    def free_space(self) -> int:
        """Bytes available to relay on the file system holding the database (``statvfs``: ``f_bavail × f_frsize``)."""
        st = os.statvfs(self._db_dir)
        return st.f_bavail * st.f_frsize

    def admission_problem(self, size: int = 0, tenant: str | None = None) -> str | None:
        """Why a request of ``size`` bytes of ``tenant`` cannot be accepted now (spool at ``max_size``, the
        tenant's data at its share ``tenant_limits`` — so one tenant whose destination is down cannot starve the
        others —, or free disk space below ``min_free_space``), or None. Bytes of appends still being written
        count (the limits are exact)."""
        if self.size + self._reserved + size > self.max_size:
            return f"spool full ({self.size + self._reserved} of {self.max_size} bytes); retry later"
        limit = self.tenant_limits.get(tenant) if tenant is not None else None
        if limit is not None and tenant is not None:
            used = self.tenant_bytes[tenant] + self._reserved_by_tenant[tenant]
            if used + size > limit:
                return (
                    f"this tenant's share of the spool is full ({used} of {limit} bytes, its data is not being "
                    "exported); retry later"
                )
        if self.min_free_space:
            try:
                free = self.free_space()
            except OSError as e:
                return f"cannot check free disk space ({e.strerror}); retry later"
            if free - size < self.min_free_space:
                return (
                    f"disk almost full ({free} bytes free, storage.min_free_space is {self.min_free_space}); "
                    "retry later"
                )
        return None

    async def _write(self, fn, *, urgent: bool = False):
        """Run ``fn(conn)`` and, after the commit, add the outcome rows it returned (``(value, rows)``);
        ``urgent``: see ``SqliteDB.run``."""
        value, rows = await self.db.run(fn, urgent=urgent)
        if rows:
            self.outcomes.add(rows)
        return value

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

    async def append(
        self,
        tenant: str,
        signal: Signal,
        payload: bytes,
        items: int,
        dedup_key: bytes | None,
        invalid: dict[str, int] | None = None,
    ) -> bool:
        """Durably store an accepted request. Returns False (and stores nothing) when ``dedup_key`` was seen
        within the retention; raises ``SpoolFull`` when the request would take the spool over ``max_size`` or the
        tenant's data over its share (``tenant_limits``), or the disk below ``min_free_space``
        (``admission_problem``). ``invalid`` counts the request's items the receiver rejected, per reason: they get
        the ``invalid`` outcome in the same transaction."""
        problem = self.admission_problem(len(payload), tenant)
        if problem:
            raise SpoolFull(5.0, problem)
        rows: list[OutcomeRow] = [
            (tenant, signal.value, Outcome.INVALID, r, n) for r, n in (invalid or {}).items() if n
        ]

        def write(conn: sqlite3.Connection) -> tuple[bool, list[OutcomeRow]]:
            now = time.time_ns()  # in the writer thread, so ``received_ns`` follows ``seq`` (see InboundItem)
            if dedup_key is not None:
                cur = conn.execute(
                    "INSERT OR IGNORE INTO request_keys(key, created_ns) VALUES (?, ?)", (dedup_key, now)
                )
                if cur.rowcount == 0:
                    return False, []
            conn.execute(
                "INSERT INTO inbound(tenant, signal, payload, items, received_ns) VALUES (?,?,?,?,?)",
                (tenant, signal.value, payload, items, now),
            )
            _count(conn, rows)
            return True, rows

        self._reserved += len(payload)
        self._reserved_by_tenant[tenant] += len(payload)
        try:
            stored = await self._write(write, urgent=True)  # a client waits for this commit
        finally:
            self._reserved -= len(payload)
            self._reserved_by_tenant[tenant] -= len(payload)
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

    async def done_inbound(self, seqs: Iterable[int], outcomes: Iterable[OutcomeRow] = ()) -> None:
        """Delete fully handled inbound requests (and their ``inbound_closed`` marks) and count ``outcomes``
        (the fates decided with their deletion), in one transaction."""
        seqs = list(seqs)
        rows = [r for r in outcomes if r[4]]
        if not seqs and not rows:
            return

        def delete(conn: sqlite3.Connection) -> tuple[dict[str, int], list[OutcomeRow]]:
            freed: dict[str, int] = defaultdict(int)
            for s in seqs:
                _delete_inbound(conn, s, freed)
            _count(conn, rows)
            return freed, rows

        freed = await self._write(delete)  # not `-= await`: that reads the counter before the await
        for tenant, size in freed.items():
            self.inbound_bytes -= size
            self.tenant_bytes[tenant] -= size

    async def closed_groups(self, seqs: Iterable[int]) -> set[tuple[int, str]]:
        """The ``(seq, group key)`` pairs already closed and committed for the inbound requests ``seqs`` (left by
        a process that stopped before the requests were finished): the pipeline skips those records, whose fate
        is already decided and counted."""
        seqs = list(seqs)
        if not seqs:
            return set()
        sql = f"SELECT seq, gkey FROM inbound_closed WHERE seq IN ({','.join('?' * len(seqs))})"
        return {(r[0], r[1]) for r in await self.db.run(lambda c: c.execute(sql, seqs).fetchall())}

    async def closed_upto(self) -> int:
        """The highest inbound sequence number with ``(seq, group key)`` pairs already closed (0 when none). Read
        at start: requests after it cannot have pairs an earlier process decided, so ``closed_groups`` need not be
        asked about them."""
        row = await self.db.run(lambda c: c.execute("SELECT MAX(seq) FROM inbound_closed").fetchone())
        return row[0] or 0

    async def pending_inbound(self) -> int:
        """Number of inbound requests not yet handled."""
        return await self.db.run(lambda c: c.execute("SELECT COUNT(*) FROM inbound").fetchone()[0])

    async def quarantine(
        self,
        seqs: Iterable[int],
        reason: str,
        *,
        outcomes: Iterable[OutcomeRow] = (),
        closed: Iterable[tuple[int, str]] = (),
        delete: bool = False,
    ) -> int:
        """Copy inbound requests the pipeline failed on deterministically (a poison item: a bug, not bad input —
        receivers validate) to the quarantine table with the reason, so ``relay replay --quarantined`` can
        re-process them after a fix. In the same transaction: count ``outcomes`` (the ``quarantined`` items),
        mark ``closed`` ``(seq, group key)`` pairs as decided, and with ``delete`` remove the requests from the
        inbound spool. Returns how many were copied; raises what SQLite raised (nothing is then written)."""
        seqs = sorted(set(seqs))
        rows = [r for r in outcomes if r[4]]
        closed = list(closed)
        now = time.time_ns()

        def copy(conn: sqlite3.Connection) -> tuple[tuple[int, dict[str, int]], list[OutcomeRow]]:
            n = 0
            freed: dict[str, int] = defaultdict(int)
            for s in seqs:
                n += conn.execute(
                    "INSERT INTO quarantine(tenant, signal, payload, items, received_ns, failed_ns, reason) "
                    "SELECT tenant, signal, payload, items, received_ns, ?, ? FROM inbound WHERE seq = ?",
                    (now, reason, s),
                ).rowcount
                if delete:
                    _delete_inbound(conn, s, freed)
            conn.executemany("INSERT OR IGNORE INTO inbound_closed(seq, gkey) VALUES (?,?)", closed)
            _count(conn, rows)
            return (n, freed), rows

        n, freed = await self._write(copy)
        for tenant, size in freed.items():
            self.inbound_bytes -= size
            self.tenant_bytes[tenant] -= size
        return n

    async def requeue_quarantined(self) -> int:
        """Move quarantined requests back to the inbound spool; returns how many moved."""

        def move(conn: sqlite3.Connection) -> int:
            rows = conn.execute(
                "SELECT id, tenant, signal, payload, items, received_ns FROM quarantine ORDER BY id"
            ).fetchall()
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
        states = await self.trace_states([(tenant, trace_id)])
        return states.get((tenant, trace_id), (None, set()))

    async def trace_states(
        self, keys: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[dict | None, set[str]]]:
        """``trace_state`` of many ``(tenant, trace_id)`` pairs in ONE database job (the pipeline reads the state of
        a whole batch of closing traces at once: one writer-thread round trip instead of one per trace), with
        ``trace_id IN (…)`` queries per tenant. Pairs with neither trace info nor exported ids are left out of the
        result."""
        by_tenant: dict[str, list[str]] = defaultdict(list)
        for tenant, trace_id in sorted(set(keys)):
            by_tenant[tenant].append(trace_id)

        def read(conn: sqlite3.Connection) -> dict[tuple[str, str], tuple[dict | None, set[str]]]:
            infos: dict[tuple[str, str], dict] = {}
            ids: dict[tuple[str, str], set[str]] = defaultdict(set)
            for tenant, traces in by_tenant.items():
                for part in chunks(traces):
                    for trace_id, info in conn.execute(
                        f"SELECT trace_id, info FROM trace_meta WHERE tenant=? AND trace_id IN ({marks(part)})",
                        (tenant, *part),
                    ):
                        infos[(tenant, trace_id)] = json.loads(info)
                    for trace_id, packed in conn.execute(
                        f"SELECT trace_id, obs_ids FROM exported_ids WHERE tenant=? AND trace_id IN ({marks(part)})",
                        (tenant, *part),
                    ):
                        ids[(tenant, trace_id)].update(unpack_ids(packed))
            return {k: (infos.get(k), ids.get(k, set())) for k in sorted(infos.keys() | ids.keys())}

        return await self.db.run(read) if by_tenant else {}

    async def commit_traces(
        self, commits: list[TraceCommit], *, closed: Iterable[tuple[int, str]] = (), outcomes: Iterable[OutcomeRow] = ()
    ) -> None:
        """Atomically write export batches, exported observation ids and trace metadata (usage records and metric
        points go to the usage ledger, ``relay.usage.store.LedgerStore``, not here), mark the ``closed``
        ``(inbound seq, group key)`` pairs whose records are now decided, and count ``outcomes`` (records not
        carried by a batch)."""
        now = time.time_ns()
        rows = [r for r in outcomes if r[4]]
        closed = list(closed)

        # encoded here, on the event loop: the writer thread only runs the statements (one executemany each)
        batches = [
            (c.tenant, c.payload, c.spans, now, json.dumps(c.items, sort_keys=True)) for c in commits if c.payload
        ]
        added = sum(len(b[1]) for b in batches)
        exported = [(c.tenant, c.trace_id, now, pack_ids(c.obs_ids)) for c in commits if c.obs_ids]
        metas = [(c.tenant, c.trace_id, json.dumps(c.info, sort_keys=True), now) for c in commits]

        def write(conn: sqlite3.Connection) -> tuple[int, list[OutcomeRow]]:
            conn.executemany("INSERT OR IGNORE INTO inbound_closed(seq, gkey) VALUES (?,?)", closed)
            _count(conn, rows)
            conn.executemany(
                "INSERT INTO outbound(tenant, payload, spans, created_ns, items) VALUES (?,?,?,?,?)", batches
            )
            conn.executemany(
                "INSERT INTO exported_ids(tenant, trace_id, created_ns, obs_ids) VALUES (?,?,?,?)", exported
            )
            conn.executemany(
                "INSERT INTO trace_meta(tenant, trace_id, info, updated_ns) VALUES (?,?,?,?) "
                "ON CONFLICT(tenant, trace_id) DO UPDATE SET info=excluded.info, updated_ns=excluded.updated_ns",
                metas,
            )
            return added, rows

        await self._write(write)
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
                "SELECT o.id, o.tenant, o.payload, o.spans, o.created_ns, o.items, s.sent_ns FROM outbound o "
                "LEFT JOIN outbound_sent s ON s.id = o.id WHERE o.tenant=? ORDER BY o.id LIMIT 1000",
                (tenant,),
            ):
                b = OutboundBatch(
                    row[0], row[1], row[2], row[3], row[4], items=json.loads(row[5] or "{}"), sent_ns=row[6]
                )
                if out and (spans + b.spans > max_spans or size + len(b.payload) > max_bytes):
                    break
                out.append(b)
                spans += b.spans
                size += len(b.payload)
            return out

        return await self.db.run(read)

    async def mark_sending(self, batches: list[OutboundBatch]) -> None:
        """Record, before a send, that ``batches`` are about to be sent (``sent_ns``): if relay dies before the
        answer, the next process knows they may already be in Langfuse and reconciles them first. The mark lives in
        ``outbound_sent``, a small table: updating the batch's own row would rewrite its payload."""
        now = time.time_ns()
        ids = [(b.id, now) for b in batches]
        await self.db.run(
            lambda c: c.executemany("INSERT OR REPLACE INTO outbound_sent(id, sent_ns) VALUES (?,?)", ids)
        )

    async def replace_outbound_state(self, batches: list[OutboundBatch]) -> None:
        """Clear the send state of ``batches`` (they will be sent again as they are)."""
        ids = [(b.id,) for b in batches]
        await self.db.run(lambda c: c.executemany("DELETE FROM outbound_sent WHERE id=?", ids))

    async def replace_outbound(self, batch: OutboundBatch, payload: bytes, spans: int) -> None:
        """Replace a batch's payload by the part not yet delivered (after a reconciliation found the rest in
        Langfuse); clears its send state. The batch keeps its items (their outcome comes with its export)."""

        def write(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE outbound SET payload=?, spans=? WHERE id=?", (payload, spans, batch.id))
            conn.execute("DELETE FROM outbound_sent WHERE id=?", (batch.id,))

        await self.db.run(write)
        self.outbound_bytes += len(payload) - len(batch.payload)
        self.tenant_bytes[batch.tenant] += len(payload) - len(batch.payload)
        self.outbound_spans[batch.tenant] += spans - batch.spans

    async def ack_outbound(self, batches: list[OutboundBatch]) -> None:
        """Delete exported batches (after the destination answered 2xx, or a reconciliation found them there)
        and count their items ``forwarded``, in one transaction."""
        ids = [(b.id,) for b in batches]
        rows = [r for b in batches for r in _item_rows(b.tenant, b.items, Outcome.FORWARDED, "langfuse")]

        def delete(conn: sqlite3.Connection) -> tuple[None, list[OutcomeRow]]:
            conn.executemany("DELETE FROM outbound WHERE id=?", ids)
            conn.executemany("DELETE FROM outbound_sent WHERE id=?", ids)
            _count(conn, rows)
            return None, rows

        await self._write(delete)
        for b in batches:
            self.outbound_bytes -= len(b.payload)
            self.outbound_spans[b.tenant] -= b.spans
            self.tenant_bytes[b.tenant] -= len(b.payload)

    async def dead_letter(self, batches: list[OutboundBatch], status: int | None, reason: str) -> None:
        """Move batches the destination refused permanently to the dead-letter store, with the reason; their items
        get the ``dead_lettered`` outcome (reason ``http_<status>``) in the same transaction."""
        now = time.time_ns()
        why = f"http_{status}" if status is not None else "no_status"
        rows = [r for b in batches for r in _item_rows(b.tenant, b.items, Outcome.DEAD_LETTERED, why)]

        def move(conn: sqlite3.Connection) -> tuple[None, list[OutcomeRow]]:
            for b in batches:
                conn.execute(
                    "INSERT INTO dead_letters(tenant, payload, spans, created_ns, failed_ns, status, reason) VALUES (?,?,?,?,?,?,?)",
                    (b.tenant, b.payload, b.spans, b.created_ns, now, status, reason),
                )
                conn.execute("DELETE FROM outbound WHERE id=?", (b.id,))
                conn.execute("DELETE FROM outbound_sent WHERE id=?", (b.id,))
            _count(conn, rows)
            return None, rows

        await self._write(move)
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
        ``worker/src/queues/otelIngestionQueue.ts``). Requeued batches carry no items: their outcome
        (``dead_lettered``) was already counted."""
        now = time.time_ns()

        def move(conn: sqlite3.Connection) -> list[tuple[str, int, int]]:
            sql = "SELECT id, tenant, payload, spans FROM dead_letters"
            cond: list[str] = []
            args: list[str | int] = []
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
                conn.execute(
                    "INSERT INTO outbound(tenant, payload, spans, created_ns) VALUES (?,?,?,?)",
                    (ten, payload, spans, now),
                )
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
        number of rows deleted (request hashes, exported-id rows — one per trace commit —, trace metadata)."""
        now = time.time_ns()
        key_cutoff = now - int(min(request_key_retention, self.dedup_retention) * 1e9)
        cutoff = now - int(self.dedup_retention * 1e9)
        statements = [
            (
                "DELETE FROM request_keys WHERE key IN (SELECT key FROM request_keys WHERE created_ns < ? LIMIT ?)",
                key_cutoff,
            ),
            ("DELETE FROM exported_ids WHERE id IN (SELECT id FROM exported_ids WHERE created_ns < ? LIMIT ?)", cutoff),
            (
                "DELETE FROM trace_meta WHERE (tenant, trace_id) IN "
                "(SELECT tenant, trace_id FROM trace_meta WHERE updated_ns < ? LIMIT ?)",
                cutoff,
            ),
        ]
        total = 0
        for sql, limit_ns in statements:
            while True:
                n = await self.db.run(functools.partial(_delete_batch, sql, (limit_ns, batch)))
                total += n
                if n < batch:
                    break
        return total
