"""The pipeline worker: inbound spool → assembler → mapper → usage ledger, outbound spool.

One asyncio task reads accepted requests in order, decodes them, routes their records to groups
(``relay.pipeline.assembler``), and when a group is due maps it (``relay.pipeline.mapper``), drops observation
ids already exported, encodes the rest for Langfuse and commits everything for that trace in one transaction
(``Spool.commit_traces``). A request leaves the inbound spool only when all its records are committed.

Usage records (with the tenant and its labels, ``relay.usage.labels``) and metric points go to the ledger
(``LedgerStore``) BEFORE the spool commit: ledger writes are idempotent, so a crash in between only makes the
retried step write them again, which changes nothing. The changes a write reports are handed to
``on_ledger_changes`` right away (the rules engine's feed), once: a retried write reports none.

Faults are states, not stalls:

- a write that fails (disk full, I/O error: ``relay.spool.is_storage_error``) is retried with exponential backoff
  (``RETRY_INITIAL`` doubling up to ``RETRY_MAX`` seconds) until it succeeds; the work it belonged to stays where it
  was (requests fed but not released, groups closed but not committed), nothing is skipped and nothing restarts;
- any other exception on a request or trace is retried the same way ``max_attempts`` times; if it keeps failing
  the item is a poison item: its requests are copied to the quarantine table with the reason
  (``relay replay --quarantined``) and its records get the ``quarantined`` outcome. A failed quarantine write is
  itself retried (and logged as such, never as "quarantined").

Outcomes (``relay.model.Outcome``) are counted in ``relay_items_total`` in the transaction that decides them: the
records of a closed trace that the Langfuse batch does not carry are ``filtered`` in the commit (reasons
``not_mapped``, ``duplicate``, ``export_disabled``), metric points (``ledger_only``) and records of no trace
(``no_trace``) with the deletion of their request; records carried by a batch get theirs from the exporter. The
``(request, trace)`` pairs a commit decided are recorded (``inbound_closed``), so after a crash the re-read request
skips those records instead of counting them twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client import CollectorRegistry, Counter, Gauge

from relay.component import Component, remaining
from relay.exporters.langfuse_encode import encode_request
from relay.model import Outcome, Signal, TraceInfo
from relay.pipeline.assembler import Assembler, Group, InboundTracker, group_key
from relay.pipeline.context import MappedTrace, MappingContext
from relay.pipeline.early_ledger import EarlyLedger, stable_usage
from relay.pipeline.mapper import map_group
from relay.pipeline.metric_points import metric_rows
from relay.pipeline.records import LogView, SpanView, iter_logs, iter_spans
from relay.spool import InboundItem, OutcomeRow, Spool, TraceCommit, is_storage_error
from relay.usage.labels import ledger_labels
from relay.usage.store import LedgerChange, LedgerStore

__all__ = ["Pipeline", "TenantPipelineSettings", "PipelineMetrics"]

log = logging.getLogger(__name__)

#: Backoff of the worker after a failed step, seconds (doubles per consecutive failure up to ``RETRY_MAX``).
RETRY_INITIAL = 0.05
RETRY_MAX = 2.0
#: Records decoded between two yields to the event loop while a request is fed (~0.6 ms of GenAI spans).
FEED_STEP = 128
#: Seconds after which the worker reads the inbound spool even without a new append (rows moved there by another
#: process, e.g. ``relay replay --quarantined``).
REREAD_INTERVAL = 1.0
#: Seconds the idle worker waits after a new append before it reads, so requests arriving close together are read,
#: fed and committed together (the Collector's batch processor does the same with its ``timeout``). Each step has a
#: fixed cost — database round trips to read the requests, delete them and commit their traces — which a request
#: from a Claude Code session (~4 records) otherwise paid alone: −20 % CPU per record on the Claude Code bench.
#: Not applied while a backlog is read (the worker does not wait then).
READ_LINGER = 0.05


class PipelineMetrics:
    """The pipeline's Prometheus metrics, registered into ``registry``."""

    def __init__(self, registry: CollectorRegistry):
        self.traces = Counter(
            "relay_pipeline_traces",
            "Traces (groups) mapped and committed.",
            ["tenant"],
            registry=registry,
        )
        self.spans_out = Counter(
            "relay_pipeline_spans_queued",
            "Langfuse spans queued for export.",
            ["tenant"],
            registry=registry,
        )
        self.skipped = Counter(
            "relay_pipeline_duplicate_observations",
            "Observations not queued because their id was already exported.",
            ["tenant"],
            registry=registry,
        )
        self.errors = Counter(
            "relay_pipeline_errors",
            "Failed attempts on a request or trace other than storage errors; after "
            "max_attempts its requests are quarantined (relay replay --quarantined).",
            ["tenant"],
            registry=registry,
        )
        self.storage_errors = Counter(
            "relay_pipeline_storage_errors",
            "Pipeline steps that failed on a storage error (disk full, I/O) and were retried with backoff.",
            registry=registry,
        )
        self.open_groups = Gauge("relay_pipeline_open_traces", "Traces waiting to be complete.", registry=registry)
        self.usage = Counter(
            "relay_ledger_records",
            "New usage records in the ledger (upgrades and retractions not counted).",
            ["tenant", "kind"],
            registry=registry,
        )
        self.cost = Counter(
            "relay_usage_cost_usd",
            "Cost of LLM calls entering the ledger, USD, by model (an upgrade "
            "adds its increase; decreases and retractions are not subtracted).",
            ["tenant", "model"],
            registry=registry,
        )
        self.tokens = Counter(
            "relay_usage_tokens",
            "Tokens of LLM calls entering the ledger, by model and type "
            "(input without cache, output, cache_read, cache_creation), same counting as "
            "relay_usage_cost_usd.",
            ["tenant", "model", "type"],
            registry=registry,
        )


#: ``relay_usage_tokens_total{type}`` → ``UsageRecord`` field.
_TOKEN_TYPES = (
    ("input", "input_tokens"),
    ("output", "output_tokens"),
    ("cache_read", "cache_read_tokens"),
    ("cache_creation", "cache_creation_tokens"),
)


class _Prefetched:
    """A close batch mapped once (``results`` by ``id(group)``) with the spool state of its traces (``states``, by
    ``(tenant, trace_id)``; ``keys`` are all the pairs that were looked up)."""

    def __init__(self) -> None:
        self.results: dict[int, MappedTrace] = {}
        self.keys: set[tuple[str, str]] = set()
        self.states: dict[tuple[str, str], tuple[dict | None, set[str]]] = {}


@dataclass
class _Fed:
    """A request fed to the assembler whose own writes are pending: its metric points, its deletion when no open
    group holds it (``done``), and the outcomes decided at feed time."""

    item: InboundItem
    metric_rows: list = field(default_factory=list)
    done: bool = False
    outcomes: list[OutcomeRow] = field(default_factory=list)


class _Retry(Exception):
    """Raised inside a step to back off and retry the same work (the cause was logged and counted)."""


class TenantPipelineSettings:
    """Per-tenant pipeline settings: mapping context and whether Langfuse export is on."""

    def __init__(self, ctx: MappingContext, export_enabled: bool):
        self.ctx = ctx
        self.export_enabled = export_enabled


class Pipeline(Component):
    """The worker task. ``tenants`` maps tenant names to their settings; unknown tenants use ``default``.

    ``ledger`` stores usage records and metric points (None: they are dropped); ``on_ledger_changes`` is called
    synchronously on the event loop with every non-empty list of changes the ledger reports — keep it cheap (e.g.
    hand the list to a queue); an exception it raises is logged and does not stop the pipeline.
    ``on_traces_closed`` is called the same way with the ``TraceCommit`` list of every committed step (interaction
    ends: the scorer's feed), after their usage records are in the ledger.
    ``max_attempts`` is how many times a request or trace may fail deterministically before it is quarantined.
    """

    name = "pipeline"

    def __init__(
        self,
        spool: Spool,
        tenants: dict[str, TenantPipelineSettings],
        *,
        idle_timeout: float,
        root_grace: float,
        metrics: PipelineMetrics,
        read_batch: int = 64,
        read_bytes: int = 2**20,
        max_open_records: int = 200_000,
        commit_batch: int = 64,
        ledger: LedgerStore | None = None,
        on_ledger_changes: Callable[[list[LedgerChange]], None] | None = None,
        on_traces_closed: Callable[[list[TraceCommit]], None] | None = None,
        memory_pressure: Callable[[], bool] | None = None,
        max_attempts: int = 3,
        yield_to: Callable[[], Awaitable[None]] | None = None,
    ):
        self.spool = spool
        self.tenants = tenants
        self.metrics = metrics
        self.assembler = Assembler(idle_timeout, root_grace)
        self.tracker = InboundTracker()
        self.read_batch = read_batch
        #: Payload bytes read from the spool per step (at least one request): what one step decodes into memory.
        self.read_bytes = read_bytes
        self.max_open_records = max_open_records
        self.commit_batch = commit_batch
        self.ledger = ledger
        self.on_ledger_changes = on_ledger_changes
        self.on_traces_closed = on_traces_closed
        #: True while the process is over its memory limit (``relay.runtime``): close the oldest open traces early
        #: (late records still join them through deterministic ids) and read more only once none is held.
        self.memory_pressure = memory_pressure or (lambda: False)
        self.early = EarlyLedger()
        self.max_attempts = max_attempts
        #: Awaited where the pipeline yields between pieces of CPU work: lets requests being acknowledged finish
        #: first (``relay.otlp.receiver.InFlight.wait_idle``); None: a plain yield.
        self.yield_to = yield_to
        self.cursor = 0
        self._drained = False  # the last read returned everything that was in the inbound spool
        self._closed_upto: int | None = None  # Spool.closed_upto() at the first step
        self._read_at = 0.0  # monotonic time of the last read
        #: Unix ns up to which every received request has been read (``Assembler.pop_due``)
        self._read_upto_ns = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._wake = asyncio.Event()
        self._fed: list[_Fed] = []  # fed, writes pending (in order)
        self._closing: list[Group] = []  # due, not yet committed (in order)
        self._release: list[int] = []  # finished requests whose deletion is pending
        self._held: dict[int, list[OutcomeRow]] = {}  # feed-time outcomes of requests held by open groups
        self._attempts: dict[tuple, int] = {}  # deterministic failures per request / trace
        # after a deterministic failure of a multi-item write: retry item by item to find the poison one
        self._isolate_fed = False
        self._isolate_close = False

    async def start(self) -> None:
        """Start the worker task."""
        if self._task is None:
            self._stopping = False
            self._closed_upto = None
            self._wake.clear()
            self._task = asyncio.create_task(self._run(), name="relay-pipeline")

    async def shutdown(self, deadline: float) -> None:
        """Stop after the current step (cancelled at ``deadline``). Open groups are NOT flushed: their requests stay
        in the inbound spool and are re-read at the next start, so nothing is lost and late records still join
        them."""
        self._stopping = True
        self.spool.inbound_event.set()
        self._wake.set()
        if self._task is not None:
            task, self._task = self._task, None
            done, _ = await asyncio.wait([task], timeout=remaining(deadline))
            if not done:
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _yield(self) -> None:
        """Let other work run between pieces of CPU work, acknowledgements first (``yield_to``)."""
        await asyncio.sleep(0)
        if self.yield_to is not None:
            await self.yield_to()

    def settings(self, tenant: str) -> TenantPipelineSettings:
        """The settings of ``tenant`` (falls back to the first configured tenant)."""
        return self.tenants.get(tenant) or next(iter(self.tenants.values()))

    # ------------------------------------------------------------------ loop

    async def _run(self) -> None:
        failures = 0
        while not self._stopping:
            try:
                await self._step()
                if failures:
                    log.info("pipeline: resumed after %d failed attempt(s)", failures)
                failures = 0
                continue
            except asyncio.CancelledError:
                raise
            except _Retry:
                pass
            except Exception as e:  # keep serving; the work stays where it is and is retried after a pause
                if is_storage_error(e):
                    self.metrics.storage_errors.inc()
                    if failures == 0 or failures % 50 == 0:
                        log.warning(
                            "pipeline: storage error (%s: %s); the data stays in the inbound spool and "
                            "the write is retried",
                            type(e).__name__,
                            e,
                        )
                else:
                    log.exception("pipeline step failed; retrying")
            failures += 1
            delay = min(RETRY_MAX, RETRY_INITIAL * 2 ** (failures - 1))
            try:
                await asyncio.wait_for(self._wake.wait(), delay)  # stop() wakes it
            except TimeoutError:
                pass

    def _failed(self, key: tuple, tenant: str, what: str, e: Exception) -> bool:
        """Count a deterministic failure of ``key``; True when it reached ``max_attempts`` (quarantine it)."""
        if is_storage_error(e):
            raise e
        self.metrics.errors.labels(tenant).inc()
        n = self._attempts[key] = self._attempts.get(key, 0) + 1
        if n < self.max_attempts:
            log.warning(
                "pipeline: %s of tenant %s failed (attempt %d of %d): %s: %s",
                what,
                tenant,
                n,
                self.max_attempts,
                type(e).__name__,
                e,
            )
            return False
        return True

    async def _quarantine(
        self, seqs, reason: str, e: Exception, tenant: str, what: str, *, outcomes, closed=(), delete: bool = False
    ) -> None:
        """Quarantine a poison item; logs "quarantined" only once the quarantine write committed."""
        why = f"{reason}: {type(e).__name__}: {e}"[:1000]
        try:
            await self.spool.quarantine(seqs, why, outcomes=outcomes, closed=closed, delete=delete)
        except Exception as qe:
            log.error(
                "pipeline: %s of tenant %s failed %d times (%s) but could not be quarantined (%s: %s); "
                "it stays in the inbound spool and is retried",
                what,
                tenant,
                self.max_attempts,
                why,
                type(qe).__name__,
                qe,
            )
            raise _Retry() from None
        log.error(
            "pipeline: %s of tenant %s failed %d times; quarantined (relay replay --quarantined): %s",
            what,
            tenant,
            self.max_attempts,
            why,
        )

    async def _step(self) -> None:
        """Finish pending writes, read a slice of the inbound spool (unless too many records are held), route it,
        close due traces. Raises (the caller backs off and calls again) when a write fails; pending work stays."""
        appended = self.spool.inbound_event.is_set()
        self.spool.inbound_event.clear()
        await self._flush()
        await self._close_pending()
        items: list[InboundItem] = []
        pressure = self.memory_pressure()
        # the last read took everything there was and nothing was appended since: skip the read (one database round
        # trip per request less); rows another process adds (relay replay) are found within REREAD_INTERVAL
        unread = appended or not self._drained or time.monotonic() - self._read_at >= REREAD_INTERVAL
        if unread and self.assembler.records < self.max_open_records and not (pressure and self.assembler.groups):
            self._read_at = time.monotonic()
            self._drained = False  # until every item read is fed (a failed step reads them again)
            # over the memory limit's soft bound: one request at a time (a full read decodes up to ``read_bytes``
            # of payload at once, several times that in memory)
            limit = 1 if pressure else self.read_batch
            items = await self.spool.read_inbound(self.cursor, limit, self.read_bytes)
            took_all = len(items) < limit and sum(len(i.payload) for i in items) < self.read_bytes
        else:
            took_all = self._drained
        if self._closed_upto is None:
            self._closed_upto = await self.spool.closed_upto()
        # only requests an earlier process left half-decided can have closed pairs (this one moves past what it fed)
        leftovers = [i.seq for i in items if i.seq <= self._closed_upto]
        closed = await self.spool.closed_groups(leftovers) if leftovers else set()
        for item in items:
            try:
                fed = await self._feed(item, closed)
            except Exception as e:
                if not self._failed(("seq", item.seq), item.tenant, f"decoding a {item.signal} request", e):
                    raise _Retry() from None
                await self._quarantine(
                    [item.seq],
                    "decode",
                    e,
                    item.tenant,
                    f"decoding a {item.signal} request",
                    outcomes=[(item.tenant, item.signal.value, Outcome.QUARANTINED, "decode", item.items)],
                    delete=True,
                )
                self._attempts.pop(("seq", item.seq), None)
                self.cursor = item.seq
                continue
            self._attempts.pop(("seq", item.seq), None)
            self._fed.append(fed)
            self.cursor = item.seq
            # everything received before this request has been read (the spool is read in ``seq`` order, and
            # ``seq`` follows ``received_ns``); capped at the wall clock, so a request stamped in the future by a
            # clock step cannot close traces early
            self._read_upto_ns = max(self._read_upto_ns, min(item.received_ns, time.time_ns()))
            await self._yield()  # keep the ack path responsive between large requests
        self._drained = took_all
        await self._flush()
        if self.ledger is not None and self.early.pending:
            await self._early_ledger()
        due = self.assembler.pop_due(read_upto_ns=self._read_upto_ns)
        if not due and (self.assembler.records >= self.max_open_records or (pressure and self.assembler.groups)):
            # backpressure: a backlog holds more records than allowed; close the oldest traces early (late records
            # still join them through deterministic ids) rather than growing without bound
            due = self.assembler.pop_oldest(self.commit_batch)
        self._closing.extend(due)
        # ``_closing`` is the groups' only holder now: each chunk is freed once committed, not all of them when this
        # step returns (freeing 12 requests' records at once took ~20 ms of the event loop)
        closing, due = bool(due), []
        read_any, items = bool(items), []
        await self._close_pending()
        self.metrics.open_groups.set(len(self.assembler.groups))
        if read_any or closing:
            return
        nxt = self.assembler.next_deadline()
        timeout = 1.0 if nxt is None else max(0.0, min(1.0, nxt - time.monotonic()))
        if self.early.pending:
            timeout = min(timeout, self.early.wait())
        try:
            await asyncio.wait_for(self.spool.inbound_event.wait(), timeout)
        except TimeoutError:
            pass
        else:
            await asyncio.sleep(READ_LINGER)  # let close arrivals join this read

    async def _feed(self, item: InboundItem, closed: set[tuple[int, str]]) -> _Fed:
        """Decode one request and route its records (all decoding happens before anything is routed, so a
        failure leaves no trace; the event loop runs other work every ``FEED_STEP`` records decoded). Records whose
        (request, trace) pair is in ``closed`` were decided by an earlier process and are skipped."""
        fed = _Fed(item)
        if item.signal is Signal.METRICS:
            req = ExportMetricsServiceRequest.FromString(item.payload)
            fed.metric_rows, _skipped = metric_rows(item.tenant, req, self.settings(item.tenant).ctx)
            fed.outcomes.append((item.tenant, "metrics", Outcome.FILTERED, "ledger_only", item.items))
            fed.done = True
            return fed
        views: list[LogView | SpanView] = []
        records: Iterator[LogView] | Iterator[SpanView]
        if item.signal is Signal.LOGS:
            records = iter_logs(ExportLogsServiceRequest.FromString(item.payload), item.seq)
        else:
            records = iter_spans(ExportTraceServiceRequest.FromString(item.payload), item.seq)
        for v in records:
            views.append(v)
            if len(views) % FEED_STEP == 0:
                await self._yield()  # a 512-span request took ~4 ms (p90 ~8) in one go
        keyed = [(v, group_key(v)) for v in views]
        groups: list[Group] = []
        filtered = 0
        for v, key in keyed:
            if key is None:
                filtered += 1
                continue
            if (item.seq, key) in closed:
                continue  # decided (and counted) before a restart
            g = self.assembler.add(item.tenant, key, v, item.received_ns)
            groups.append(g)
            if self.ledger is not None and isinstance(v, LogView):
                self.early.mark(g, v)
        if filtered:
            fed.outcomes.append((item.tenant, item.signal.value, Outcome.FILTERED, "no_trace", filtered))
        fed.done = self.tracker.fed(item.seq, groups)
        if not fed.done and fed.outcomes:
            self._held[item.seq] = fed.outcomes
            fed.outcomes = []
        return fed

    async def _flush(self) -> None:
        """Write the pending metric points of fed requests and delete the finished requests, in order; then the
        requests released by committed traces. A deterministic failure of a multi-request write is retried
        request by request to find the poison one."""
        while self._fed:
            chunk = self._fed[:1] if self._isolate_fed else self._fed
            rows = [r for f in chunk for r in f.metric_rows]
            try:
                if rows and self.ledger is not None:
                    self._emit(await self.ledger.write_metric_points(rows))
            except Exception as e:
                if is_storage_error(e):
                    raise
                if len(chunk) > 1:
                    self._isolate_fed = True
                    raise _Retry() from None
                f = chunk[0]
                what = "storing the metric points of a request"
                if not self._failed(("ledger", f.item.seq), f.item.tenant, what, e):
                    raise _Retry() from None
                await self._quarantine(
                    [f.item.seq],
                    "ledger",
                    e,
                    f.item.tenant,
                    what,
                    delete=True,
                    outcomes=[(f.item.tenant, f.item.signal.value, Outcome.QUARANTINED, "ledger", f.item.items)],
                )
                self._attempts.pop(("ledger", f.item.seq), None)
                del self._fed[0]
                continue
            done = [f for f in chunk if f.done]
            await self.spool.done_inbound([f.item.seq for f in done], [r for f in done for r in f.outcomes])
            for f in chunk:
                self._attempts.pop(("ledger", f.item.seq), None)
            del self._fed[: len(chunk)]
        self._isolate_fed = False
        if self._release:
            seqs = list(self._release)
            await self.spool.done_inbound(seqs, [r for s in seqs for r in self._held.get(s, ())])
            for s in seqs:
                self._held.pop(s, None)
            del self._release[: len(seqs)]

    async def _close_pending(self) -> None:
        """Commit the groups waiting in ``_closing`` in chunks of ``commit_batch`` (one at a time while isolating
        a failure); a chunk leaves the list only once committed."""
        while self._closing and not self._stopping:  # when stopping, the rest stay in the inbound spool
            chunk = self._closing[:1] if self._isolate_close else self._closing[: self.commit_batch]
            try:
                await self._close(chunk)
            except (_Retry, asyncio.CancelledError):
                raise
            except Exception as e:
                if is_storage_error(e):
                    raise
                if len(chunk) > 1:
                    self._isolate_close = True
                    raise _Retry() from None
                g = chunk[0]
                what = f"mapping a trace ({g.size} records)"
                if not self._failed(("group", g.tenant, g.key), g.tenant, what, e):
                    raise _Retry() from None
                await self._quarantine(
                    g.seqs,
                    "mapping",
                    e,
                    g.tenant,
                    what,
                    outcomes=self._group_rows(g, Outcome.QUARANTINED, "mapping"),
                    closed=[(s, g.key) for s in g.seqs],
                )
                self._attempts.pop(("group", g.tenant, g.key), None)
                self._released([g])
                del self._closing[0]
                await self._flush()
                continue
            for g in chunk:
                self._attempts.pop(("group", g.tenant, g.key), None)
            del self._closing[: len(chunk)]
            self._released(chunk)
            await self._flush()
        self._isolate_close = False

    def _released(self, groups: list[Group]) -> None:
        for g in groups:
            self.early.forget(g)
            self._release.extend(self.tracker.closed(g))

    @staticmethod
    def _group_rows(g: Group, outcome: Outcome, reason: str) -> list[OutcomeRow]:
        return [
            (g.tenant, sig, outcome, reason, n) for sig, n in (("logs", len(g.logs)), ("traces", len(g.spans))) if n
        ]

    async def _close(self, groups: list[Group]) -> None:
        """Map, dedupe, encode and commit closed groups in one transaction with their records' outcomes. Raises
        (nothing written) when mapping or a write fails."""
        commits: list[TraceCommit] = []
        outcomes: list[OutcomeRow] = []
        prefetched = await self._prefetch(groups)
        for g in groups:
            commit = await self._map(g, prefetched)
            outcomes += self._count(g, commit)
            if commit is not None:
                commits.append(commit)
            await self._yield()  # mapping is CPU work: let acknowledgements through between traces
        usage = [u for c in commits for u in c.usage]
        if usage and self.ledger is not None:
            self._emit(await self.ledger.write(usage))
            await self._yield()  # the rules engine's observe and the commit's rows: two steps of a few ms each
        await self.spool.commit_traces(commits, closed=[(s, g.key) for g in groups for s in g.seqs], outcomes=outcomes)
        for c in commits:
            self.metrics.traces.labels(c.tenant).inc()
            if c.payload:
                self.metrics.spans_out.labels(c.tenant).inc(c.spans)
        if commits and self.on_traces_closed is not None:
            try:
                self.on_traces_closed(commits)
            except Exception:  # the scorer must not stop the pipeline
                log.exception("on_traces_closed failed for %d traces", len(commits))

    async def _prefetch(self, groups: list[Group]) -> _Prefetched:
        """Map every group once and read the earlier-export state of all their traces in ONE spool job (a round
        trip to the database thread per trace was the pipeline's bottleneck). A group whose mapping raises is
        left out: ``_map`` maps it again and handles the error."""
        pre = _Prefetched()
        for g in groups:
            try:
                result = map_group(g.logs, g.spans, self.settings(g.tenant).ctx)
            except Exception:  # _map raises it again, in its error path
                continue
            pre.results[id(g)] = result
            if result.trace is not None:
                pre.keys.add((g.tenant, result.trace.trace_id))
            await self._yield()  # mapping is CPU work: let acknowledgements through between traces
        pre.states = await self.spool.trace_states(pre.keys)
        return pre

    async def _map(self, g: Group, pre: _Prefetched | None = None) -> TraceCommit | None:
        st = self.settings(g.tenant)
        result = pre.results.pop(id(g), None) if pre is not None else None
        if result is None:
            result = map_group(g.logs, g.spans, st.ctx)
        if result.trace is None:
            return None
        key = (g.tenant, result.trace.trace_id)
        if pre is not None and key in pre.keys:
            known, exported = pre.states.get(key, (None, set()))
        else:
            known, exported = await self.spool.trace_state(g.tenant, result.trace.trace_id)
        if known is not None:  # late records of an exported trace: reuse its name, user, session…
            views: list[LogView | SpanView] = [*g.logs, *g.spans]
            for v in views:
                v.outcome = None
            result = map_group(g.logs, g.spans, st.ctx, TraceInfo(**known))
        trace = result.trace  # same trace id: the records decide it, ``known`` only fills trace-level fields
        new, seen = [], set(exported)
        for o in result.observations:
            if o.id in seen:
                self.metrics.skipped.labels(g.tenant).inc()
                continue
            seen.add(o.id)
            new.append(o)
        payload = None
        if new and st.export_enabled:
            payload = encode_request([(trace, new)])
        for u in result.usage:
            u.tenant = g.tenant
            u.labels = ledger_labels(u.labels, st.ctx.labels)
        return TraceCommit(
            tenant=g.tenant,
            trace_id=trace.trace_id,
            payload=payload,
            spans=len(new) if payload else 0,
            obs_ids=[o.id for o in new],
            info=dict(trace.__dict__),  # shallow (asdict deep-copies): stored as JSON, the trace is not changed again
            usage=result.usage,
            bounds=(min(o.start_ns for o in result.observations), max(o.end_ns for o in result.observations))
            if result.observations
            else None,
        )

    async def _early_ledger(self) -> None:
        """Write the stable usage records of open groups with new events (``relay.pipeline.early_ledger``)."""
        records = []
        for g in self.early.due():
            ctx = self.settings(g.tenant).ctx
            try:
                usage = stable_usage(g, ctx)
            except Exception:  # the close maps the group again and quarantines it if it still fails
                log.debug("early ledger mapping failed for a trace of tenant %s", g.tenant, exc_info=True)
                continue
            for u in usage:
                u.tenant = g.tenant
                u.labels = ledger_labels(u.labels, ctx.labels)
            records += usage
            await self._yield()
        if records and self.ledger is not None:
            try:
                self._emit(await self.ledger.write(records))
            except Exception as e:  # an optimisation only: the close writes these records again (and handles errors)
                if is_storage_error(e):
                    raise
                log.warning(
                    "pipeline: early ledger write failed (%s: %s); the records are written when their traces close",
                    type(e).__name__,
                    e,
                )

    def _emit(self, changes: Sequence[LedgerChange]) -> None:
        """Count new ledger records and hand the changes to ``on_ledger_changes``."""
        if not changes:
            return
        m = self.metrics
        # summed per label set first: one counter update per series and batch, not per record
        records: dict[tuple[str, str], int] = {}
        cost: dict[tuple[str, str], int] = {}  # nano-USD
        tokens: dict[tuple[str, str, str], int] = {}
        for ch in changes:
            new, old = ch.new, ch.old
            if new is None:
                continue
            if old is None:
                records[(new.tenant, new.kind)] = records.get((new.tenant, new.kind), 0) + 1
            model = new.model or "unknown"
            grew = new.cost_nanos - (old.cost_nanos if old else 0)
            if grew > 0:
                cost[(new.tenant, model)] = cost.get((new.tenant, model), 0) + grew
            for kind, attr in _TOKEN_TYPES:
                grew = getattr(new, attr) - (getattr(old, attr) if old else 0)
                if grew > 0:
                    tokens[(new.tenant, model, kind)] = tokens.get((new.tenant, model, kind), 0) + grew
        for labels, n in records.items():
            m.usage.labels(*labels).inc(n)
        for labels, nanos in cost.items():
            m.cost.labels(*labels).inc(nanos / 1e9)
        for tlabels, n in tokens.items():
            m.tokens.labels(*tlabels).inc(n)
        if self.on_ledger_changes is not None:
            try:
                self.on_ledger_changes(list(changes))
            except Exception:  # the feed's consumer must not stop the pipeline
                log.exception("on_ledger_changes failed for %d changes", len(changes))

    def _count(self, g: Group, commit: TraceCommit | None) -> list[OutcomeRow]:
        """Sort the group's records: those the batch carries go into ``commit.items`` (their outcome comes with the
        export); the others are returned as ``filtered`` rows with their reason."""
        enabled = self.settings(g.tenant).export_enabled
        carried = commit is not None and bool(commit.payload)
        tally: dict[tuple[str, str], int] = {}
        views: list[LogView | SpanView] = [*g.logs, *g.spans]
        for v in views:
            signal = "logs" if isinstance(v, LogView) else "traces"
            if v.outcome != Outcome.FORWARDED:
                reason = "not_mapped"
            elif not enabled:
                reason = "export_disabled"
            elif not carried:
                reason = "duplicate"
            else:
                assert commit is not None
                commit.items[signal] = commit.items.get(signal, 0) + 1
                continue
            tally[(signal, reason)] = tally.get((signal, reason), 0) + 1
        return [(g.tenant, sig, Outcome.FILTERED, reason, n) for (sig, reason), n in tally.items()]
