"""The pipeline worker: inbound spool → assembler → mapper → usage ledger, outbound spool.

One asyncio task reads accepted requests in order, decodes them, routes their records to groups
(``relay.pipeline.assembler``), and when a group is due maps it (``relay.pipeline.mapper``), drops observation
ids already exported, encodes the rest for Langfuse and commits everything for that trace in one transaction
(``Spool.commit_traces``). A request leaves the inbound spool only when all its records are committed.

Usage records (with the tenant and its labels, ``relay.usage.labels``) and metric points go to the ledger
(``LedgerStore``) BEFORE the spool commit: ledger writes are idempotent, so a crash in between only makes the
retried step write them again, which changes nothing. The changes a write reports are handed to
``on_ledger_changes`` right away (the rules engine's feed), once: a retried write reports none.

Outcomes are counted per record in ``relay_pipeline_items_total{signal, tenant, outcome}``: ``forwarded`` (became
or was merged into a span queued for Langfuse), ``filtered`` (not for Langfuse: metrics — kept for the ledger —,
startup events, duplicates, export disabled).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict

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
from relay.spool import InboundItem, Spool, TraceCommit
from relay.usage.labels import ledger_labels
from relay.usage.store import LedgerChange, LedgerStore

__all__ = ["Pipeline", "TenantPipelineSettings", "PipelineMetrics"]

log = logging.getLogger(__name__)


class PipelineMetrics:
    """The pipeline's Prometheus metrics, registered into ``registry``."""

    def __init__(self, registry: CollectorRegistry):
        self.items = Counter(
            "relay_pipeline_items", "Records handled by the pipeline, by final outcome (forwarded or filtered).",
            ["signal", "tenant", "outcome"], registry=registry,
        )
        self.traces = Counter(
            "relay_pipeline_traces", "Traces (groups) mapped and committed.", ["tenant"], registry=registry,
        )
        self.spans_out = Counter(
            "relay_pipeline_spans_queued", "Langfuse spans queued for export.", ["tenant"], registry=registry,
        )
        self.skipped = Counter(
            "relay_pipeline_duplicate_observations", "Observations not queued because their id was already exported.",
            ["tenant"], registry=registry,
        )
        self.errors = Counter(
            "relay_pipeline_errors", "Requests or traces the pipeline failed on; their requests are quarantined "
            "(relay replay --quarantined).",
            ["tenant"], registry=registry,
        )
        self.open_groups = Gauge("relay_pipeline_open_traces", "Traces waiting to be complete.", registry=registry)
        self.usage = Counter("relay_ledger_records", "New usage records in the ledger (upgrades and retractions "
                             "not counted).", ["tenant", "kind"], registry=registry)
        self.cost = Counter("relay_usage_cost_usd", "Cost of LLM calls entering the ledger, USD, by model (an upgrade "
                            "adds its increase; decreases and retractions are not subtracted).",
                            ["tenant", "model"], registry=registry)
        self.tokens = Counter("relay_usage_tokens", "Tokens of LLM calls entering the ledger, by model and type "
                              "(input without cache, output, cache_read, cache_creation), same counting as "
                              "relay_usage_cost_usd.", ["tenant", "model", "type"], registry=registry)


#: ``relay_usage_tokens_total{type}`` → ``UsageRecord`` field.
_TOKEN_TYPES = (("input", "input_tokens"), ("output", "output_tokens"), ("cache_read", "cache_read_tokens"),
                ("cache_creation", "cache_creation_tokens"))


class _Prefetched:
    """A close batch mapped once (``results`` by ``id(group)``) with the spool state of its traces (``states``, by
    ``(tenant, trace_id)``; ``keys`` are all the pairs that were looked up)."""

    def __init__(self) -> None:
        self.results: dict[int, MappedTrace] = {}
        self.keys: set[tuple[str, str]] = set()
        self.states: dict[tuple[str, str], tuple[dict | None, set[str]]] = {}


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
        read_bytes: int = 4 * 2**20,
        max_open_records: int = 200_000,
        commit_batch: int = 64,
        ledger: LedgerStore | None = None,
        on_ledger_changes: Callable[[list[LedgerChange]], None] | None = None,
        on_traces_closed: Callable[[list[TraceCommit]], None] | None = None,
        memory_pressure: Callable[[], bool] | None = None,
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
        self.cursor = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        """Start the worker task."""
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name="relay-pipeline")

    async def shutdown(self, deadline: float) -> None:
        """Stop after the current step (cancelled at ``deadline``). Open groups are NOT flushed: their requests stay
        in the inbound spool and are re-read at the next start, so nothing is lost and late records still join
        them."""
        self._stopping = True
        self.spool.inbound_event.set()
        if self._task is not None:
            task, self._task = self._task, None
            done, _ = await asyncio.wait([task], timeout=remaining(deadline))
            if not done:
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def settings(self, tenant: str) -> TenantPipelineSettings:
        """The settings of ``tenant`` (falls back to the first configured tenant)."""
        return self.tenants.get(tenant) or next(iter(self.tenants.values()))

    # ------------------------------------------------------------------ loop

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep serving; the request stays in the spool and is retried after a pause
                log.exception("pipeline step failed; retrying in 1 s")
                await asyncio.sleep(1.0)

    async def _step(self) -> None:
        """Read a slice of the inbound spool (unless too many records are held), route it, close due traces."""
        self.spool.inbound_event.clear()
        items = []
        pressure = self.memory_pressure()
        if self.assembler.records < self.max_open_records and not (pressure and self.assembler.groups):
            items = await self.spool.read_inbound(self.cursor, self.read_batch, self.read_bytes)
        finished: list[int] = []
        metric_batch: list[tuple] = []
        for item in items:
            try:
                done = self._feed(item, metric_batch)
            except Exception as e:  # a bug: keep the request for `relay replay --quarantined`, keep serving
                log.exception("pipeline could not decode a %s request of tenant %s; quarantined", item.signal, item.tenant)
                self.metrics.errors.labels(item.tenant).inc()
                await self.spool.quarantine([item.seq], f"decode: {type(e).__name__}: {e}")
                done = True
            if done:
                finished.append(item.seq)
            self.cursor = item.seq
            await asyncio.sleep(0)  # keep the ack path responsive between large requests
        if metric_batch or finished:
            if metric_batch and self.ledger is not None:
                self._emit(await self.ledger.write_metric_points(metric_batch))
            await self.spool.done_inbound(finished)
        if self.ledger is not None and self.early.pending:
            await self._early_ledger()
        due = self.assembler.pop_due()
        if not due and (self.assembler.records >= self.max_open_records or (pressure and self.assembler.groups)):
            # backpressure: a backlog holds more records than allowed; close the oldest traces early (late records
            # still join them through deterministic ids) rather than growing without bound
            due = self.assembler.pop_oldest(self.commit_batch)
        for i in range(0, len(due), self.commit_batch):
            if self._stopping:
                break  # the rest stay in the inbound spool and are re-read at the next start
            await self._close(due[i : i + self.commit_batch])
        self.metrics.open_groups.set(len(self.assembler.groups))
        if items or due:
            return
        nxt = self.assembler.next_deadline()
        timeout = 1.0 if nxt is None else max(0.0, min(1.0, nxt - time.monotonic()))
        if self.early.pending:
            timeout = min(timeout, self.early.wait())
        try:
            await asyncio.wait_for(self.spool.inbound_event.wait(), timeout)
        except TimeoutError:
            pass

    def _feed(self, item: InboundItem, metric_batch: list[tuple]) -> bool:
        """Decode one request and route its records; True when it needs nothing more (no open group holds it)."""
        count = self.metrics.items
        if item.signal is Signal.METRICS:
            req = ExportMetricsServiceRequest.FromString(item.payload)
            rows, _skipped = metric_rows(item.tenant, req, self.settings(item.tenant).ctx)
            metric_batch.extend(rows)
            count.labels("metrics", item.tenant, Outcome.FILTERED).inc(item.items)
            return True
        views: list[LogView | SpanView]
        if item.signal is Signal.LOGS:
            views = list(iter_logs(ExportLogsServiceRequest.FromString(item.payload), item.seq))
        else:
            views = list(iter_spans(ExportTraceServiceRequest.FromString(item.payload), item.seq))
        groups: list[Group] = []
        filtered = 0
        for v in views:
            key = group_key(v)
            if key is None:
                filtered += 1
                continue
            g = self.assembler.add(item.tenant, key, v)
            groups.append(g)
            if self.ledger is not None and isinstance(v, LogView):
                self.early.mark(g, v)
        if filtered:
            count.labels(item.signal.value, item.tenant, Outcome.FILTERED).inc(filtered)
        return self.tracker.fed(item.seq, groups)

    async def _close(self, groups: list[Group]) -> None:
        """Map, dedupe, encode and commit closed groups; then release their inbound requests."""
        if not groups:
            return
        commits: list[TraceCommit] = []
        prefetched = await self._prefetch(groups)
        for g in groups:
            try:
                commit = await self._map(g, prefetched)
            except Exception as e:  # a bug: keep the raw requests for `relay replay --quarantined`
                log.exception("mapping failed for a trace of tenant %s (%d records); its requests are quarantined",
                              g.tenant, g.size)
                self.metrics.errors.labels(g.tenant).inc()
                await self.spool.quarantine(g.seqs, f"mapping: {type(e).__name__}: {e}")
                commit = None
            self._count(g)
            if commit is not None:
                commits.append(commit)
            await asyncio.sleep(0)  # mapping is CPU work: let acknowledgements through between traces
        if commits:
            usage = [u for c in commits for u in c.usage]
            if usage and self.ledger is not None:
                self._emit(await self.ledger.write(usage))
            await self.spool.commit_traces(commits)
            for c in commits:
                self.metrics.traces.labels(c.tenant).inc()
                if c.payload:
                    self.metrics.spans_out.labels(c.tenant).inc(c.spans)
            if self.on_traces_closed is not None:
                try:
                    self.on_traces_closed(commits)
                except Exception:  # the scorer must not stop the pipeline
                    log.exception("on_traces_closed failed for %d traces", len(commits))
        finished: list[int] = []
        for g in groups:
            self.early.forget(g)
            finished.extend(self.tracker.closed(g))
        await self.spool.done_inbound(finished)

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
            await asyncio.sleep(0)  # mapping is CPU work: let acknowledgements through between traces
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
            for v in (*g.logs, *g.spans):
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
            payload = encode_request([(trace, new)]).SerializeToString()
        for u in result.usage:
            u.tenant = g.tenant
            u.labels = ledger_labels(u.labels, st.ctx.labels)
        return TraceCommit(
            tenant=g.tenant,
            trace_id=trace.trace_id,
            payload=payload,
            spans=len(new) if payload else 0,
            obs_ids=[o.id for o in new],
            info=asdict(trace),
            usage=result.usage,
            bounds=(min(o.start_ns for o in result.observations), max(o.end_ns for o in result.observations))
            if result.observations else None,
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
            await asyncio.sleep(0)
        if records:
            self._emit(await self.ledger.write(records))

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

    def _count(self, g: Group) -> None:
        enabled = self.settings(g.tenant).export_enabled
        tally: dict[tuple[str, str], int] = {}
        for v in (*g.logs, *g.spans):
            signal = "logs" if isinstance(v, LogView) else "traces"
            outcome = v.outcome if (v.outcome and enabled) else Outcome.FILTERED
            tally[(signal, outcome)] = tally.get((signal, outcome), 0) + 1
        for (signal, outcome), n in tally.items():
            self.metrics.items.labels(signal, g.tenant, outcome).inc(n)
