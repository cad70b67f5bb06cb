"""Wires relay's components from the config and runs their lifecycle.

Every long-lived part is a ``relay.component.Component``; ``Relay`` lists them in data-flow order (receivers →
pipeline → exporter and ledger → alerting → reports, then the admin endpoint and housekeeping). Start order is the
reverse, so nothing is accepted before it can be stored and processed; shutdown follows the flow: receivers first (no
new data; in-flight requests finish), then the pipeline (open traces stay in the inbound spool for the next start),
then the exporter (an in-flight request may finish within ``service.shutdown_timeout``) …, then the spool closes.

Signals: SIGTERM and SIGINT drain and exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import SecretStr

from relay import __version__
from relay.admin_security import admin_middleware, is_authenticated
from relay.alerting.rules.load import RulesError
from relay.alerting.service import AlertingService
from relay.auth import TenantResolver
from relay.component import Component, deadline_in, shutdown_all, start_all
from relay.config import AdminConfig
from relay.config_load import RelayConfig
from relay.exporters.langfuse import LangfuseExporter
from relay.exporters.langfuse_links import LangfuseLinks
from relay.hooks.claude_code import ClaudeCodeHooks, SessionIdentities
from relay.langfuse_api.proxy import LangfuseApiProxy
from relay.logs import MASK, setup_logging
from relay.model import UsageRecord
from relay.otlp.grpc import OtlpGrpcReceiver
from relay.otlp.http import OtlpHttpReceiver
from relay.otlp.ingest import IngestRefused, IngestRequest, IngestThrottled
from relay.otlp.receiver import InFlight, parse_endpoint
from relay.pipeline.context import MappingContext
from relay.pipeline.worker import Pipeline, PipelineMetrics, TenantPipelineSettings
from relay.ratelimit import TenantLimiter
from relay.redaction import Redactor, load_catalogue
from relay.reports.alert_history import AlertHistory
from relay.runtime import RuntimeMonitor
from relay.scores.records import ScoredLedger
from relay.scores.runtime import ScoresRuntime
from relay.spool import Spool, SpoolFull
from relay.telemetry import CONTENT_TYPE_LATEST, Telemetry
from relay.tls import serve
from relay.usage.pricing import Pricing
from relay.usage.sqlite_store import SqliteLedgerStore

__all__ = ["Relay", "run"]

log = logging.getLogger("relay")

PRUNE_INTERVAL = 3600.0
RESYNC_INTERVAL = 10.0
#: Longest wait (s) of one pipeline yield for requests being acknowledged (``InFlight.wait_idle``): acknowledgements
#: go first, and the pipeline still gets a turn under a constant stream of requests.
ACK_FIRST_MAX_WAIT = 0.02


class Relay:
    """The daemon: its components, built from a validated ``RelayConfig``, in data-flow order.

    ``await start()`` opens the spool and starts the components (``relay.component``) in reverse flow order;
    ``await stop()`` shuts them down in flow order within ``service.shutdown_timeout``, then closes the spool.
    Attributes name the components for tests and benchmarks (``http``, ``grpc``, ``pipeline``, ``exporter``,
    ``alerting``, ``reports``, ``admin``); a disabled one is None.
    """

    def __init__(self, config: RelayConfig, *, owns_process: bool = False):
        self.config = config
        #: True for the daemon (``relay run``): process-wide tuning (GC freeze, GIL switch interval) and the memory
        #: limiter, which reads the process's RSS, apply only then — not to a relay embedded in a test process.
        self.owns_process = owns_process
        self.tenants = config.resolved_tenants()
        self.telemetry = Telemetry()
        self.links = LangfuseLinks(self.tenants, tls=config.exporters.langfuse.tls)
        self.spool: Spool | None = None
        self.ledger: SqliteLedgerStore | None = None
        self.pipeline: Pipeline | None = None
        self.alerting: AlertingService | None = None
        self.sessions = SessionIdentities()  # who each session is, for agent hooks that do not say
        self.alert_history: AlertHistory | None = None
        self.scores: ScoresRuntime | None = None
        self.langfuse_api: LangfuseApiProxy | None = None
        self.reports: Component | None = None
        self.exporter: LangfuseExporter | None = None
        self.http: OtlpHttpReceiver | None = None
        self.grpc: OtlpGrpcReceiver | None = None
        self.admin: AdminEndpoint | None = None
        self.components: list[Component] = []
        self.redactor: Redactor | None = None
        self.limiter: TenantLimiter | None = None
        self.runtime: RuntimeMonitor | None = None
        self._stopping = False
        self._started = False  # every component started (the admin endpoint starts before the receivers)

    @property
    def admin_port(self) -> int | None:
        """The admin endpoint's bound port (None when it is off or not started)."""
        return self.admin.port if self.admin is not None else None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open the spool, build the components and start them. Raises ``OSError`` when a port cannot be bound and
        ``RulesError`` when the rule files are invalid (components already started are shut down first)."""
        cfg = self.config
        MASK.add(_secrets(cfg))
        self.spool = Spool.open(
            Path(cfg.storage.directory),
            fsync=cfg.storage.fsync,
            max_size=cfg.storage.max_spool_size,
            dedup_retention=cfg.storage.dedup_retention,
            min_free_space=cfg.storage.min_free_space,
            outcomes=self.telemetry.outcomes,
        )
        self.spool.tenant_limits = {t.name: t.max_spool_size for t in self.tenants if t.max_spool_size}
        self.limiter = TenantLimiter(
            {
                t.name: (t.rate_limit.spans_per_second, t.rate_limit.burst or max(1.0, t.rate_limit.spans_per_second))
                for t in self.tenants
                if t.rate_limit
            }
        )
        self._spool_metrics(self.spool)
        self.components = self._build(self.spool)
        await start_all(self.components, cfg.service.shutdown_timeout)
        self._started = True
        self._precreate_series()
        self._log_startup()

    def _build(self, spool: Spool) -> list[Component]:
        """Every component, in data-flow order: receivers → pipeline → exporter and ledger → alerting → reports;
        then the admin endpoint and housekeeping."""
        cfg = self.config
        reg = self.telemetry.registry
        self.exporter = LangfuseExporter(spool, cfg.exporters.langfuse, self.tenants, registry=reg)
        self._pricing = Pricing.load(cfg.ledger.pricing)  # one table for the ledger and the Langfuse cost_details
        self.ledger = SqliteLedgerStore(spool.db, self._pricing)
        self.alert_history = AlertHistory(spool.db)
        self.alerting = AlertingService(
            spool.db,
            ScoredLedger(self.ledger, spool.db),
            cfg.rules,
            cfg.alerting,
            links=self._alert_links,
            registry=reg,
            sinks=[self.alert_history.record],
        )
        self.scores = ScoresRuntime(
            spool.db, self.ledger, cfg.scores, cfg.exporters.langfuse, self.tenants, reg, observe=self.alerting.observe
        )
        self.reports = self._report_scheduler()
        self.runtime = RuntimeMonitor(
            reg,
            cfg.pipeline.memory_limit if self.owns_process else 0,
            tune_process=self.owns_process,
            busy=lambda: spool.inbound_bytes > 0 or bool(self.pipeline is not None and self.pipeline.assembler.records),
        )
        self.in_flight = InFlight()
        settings = {t.name: TenantPipelineSettings(self._mapping_context(t), t.langfuse.enabled) for t in self.tenants}
        self.pipeline = Pipeline(
            spool,
            settings,
            idle_timeout=cfg.pipeline.idle_timeout,
            root_grace=cfg.pipeline.root_grace,
            metrics=PipelineMetrics(reg),
            max_open_records=cfg.pipeline.max_open_records,
            memory_pressure=lambda: self.runtime is not None and self.runtime.over_limit,
            ledger=self.ledger,
            on_ledger_changes=self._on_ledger_changes,
            on_traces_closed=self.scores.traces_closed,
            yield_to=lambda: self.in_flight.wait_idle(ACK_FIRST_MAX_WAIT),
        )
        resolver = TenantResolver(cfg)
        self.redactor = build_redactor(cfg, reg)
        proto = cfg.receivers.otlp.protocols
        grace = cfg.service.shutdown_timeout
        if proto.http.enabled:
            self.http = OtlpHttpReceiver(
                proto.http,
                resolver,
                self._ingest,
                self.telemetry,
                shutdown_timeout=grace,
                redactor=self.redactor,
                in_flight=self.in_flight,
            )
            ClaudeCodeHooks(
                resolver,
                {t.name: self._mapping_context(t) for t in self.tenants},
                self.alerting.engine.runtimes,
                sessions=self.sessions,
                registry=reg,
            ).add_routes(self.http.app)
            if proto.http.langfuse_compatible_path:
                self.langfuse_api = self._langfuse_api(spool, self.scores)
                self.langfuse_api.install(self.http.app)
        if proto.grpc.enabled:
            self.grpc = OtlpGrpcReceiver(
                proto.grpc, resolver, self._ingest, self.telemetry, redactor=self.redactor, in_flight=self.in_flight
            )
        if cfg.service.admin.enabled:
            self.admin = AdminEndpoint(cfg.service.admin, self._admin_routes)
        flow: list[Component | None] = [
            self.runtime,  # first, so started last: it freezes the start-up heap (relay.runtime)
            self.http,
            self.grpc,
            self.pipeline,
            self.exporter,
            self.links,
            self.scores,
            self.alerting,
            self.reports,
            self.admin,
            Housekeeping(spool),
        ]
        return [c for c in flow if c is not None]

    async def stop(self) -> None:
        """Shut every component down in flow order (receivers first: no new data; in-flight requests finish), then
        close the spool. Open traces stay in the inbound spool for the next start. Never raises."""
        self._stopping = True
        await shutdown_all(self.components, deadline_in(self.config.service.shutdown_timeout))
        if self.alert_history is not None:
            await self.alert_history.flush()
        if self.spool is not None:
            self.spool.close()
        log.info("relay stopped")

    # ------------------------------------------------------------------ ingest seam

    async def _ingest(self, req: IngestRequest) -> bool:
        """The receivers' sink: durably append to the inbound spool (see ``relay.otlp.ingest``)."""
        if self._stopping or self.spool is None:
            raise IngestRefused("relay is shutting down; retry", 1.0)
        if self.runtime is not None and self.runtime.over_limit:
            raise IngestRefused(
                "relay is over its memory limit (pipeline.memory_limit); retry later", self.runtime.retry_after
            )
        if self.limiter and (delay := self.limiter.take(req.tenant, req.items)):
            raise IngestThrottled(f"{req.items} items over tenants[].rate_limit; retry in {delay:.1f}s", delay)
        try:
            return await self.spool.append(
                req.tenant, req.signal, req.payload, req.items, req.dedup_key, invalid=req.rejected_by
            )
        except SpoolFull as e:
            raise IngestRefused(e.reason, e.retry_after) from None

    def _langfuse_api(self, spool: Spool, scores: ScoresRuntime) -> LangfuseApiProxy:
        """The Langfuse public API served on the OTLP/HTTP port (``relay.langfuse_api.proxy``)."""
        return LangfuseApiProxy(
            self.tenants,
            self.config.auth.default_tenant,
            spool.db,
            on_queued=scores.sender.wake,
            on_changes=scores.score_changes,
            timeout=self.config.exporters.langfuse.timeout,
            registry=self.telemetry.registry,
            is_stopping=lambda: self._stopping,
            tls=self.config.exporters.langfuse.tls,
        )

    def _spool_metrics(self, spool: Spool) -> None:
        reg = self.telemetry.registry
        spool_bytes = Gauge(
            "relay_spool_bytes",
            "Bytes spooled on disk, by queue: inbound (not yet processed) and outbound (not yet exported).",
            ["queue"],
            registry=reg,
        )
        spool_bytes.labels("inbound").set_function(lambda: spool.inbound_bytes)
        spool_bytes.labels("outbound").set_function(lambda: spool.outbound_bytes)
        Gauge("relay_spool_capacity_bytes", "storage.max_spool_size.", registry=reg).set(
            self.config.storage.max_spool_size
        )
        tenant_bytes = Gauge(
            "relay_spool_tenant_bytes",
            "Bytes spooled per tenant (inbound + outbound); the tenant "
            "gets 503 when it reaches relay_spool_tenant_capacity_bytes.",
            ["tenant"],
            registry=reg,
        )
        tenant_cap = Gauge(
            "relay_spool_tenant_capacity_bytes",
            "The tenant's share of the spool (tenants[].max_spool_size).",
            ["tenant"],
            registry=reg,
        )
        for name, cap in spool.tenant_limits.items():
            tenant_bytes.labels(name).set_function(partial(spool.tenant_bytes.__getitem__, name))
            tenant_cap.labels(name).set(cap)

    def _on_ledger_changes(self, changes: list) -> None:
        """The ledger's change feed: the rules engine, then the session identities of agent hooks."""
        assert self.alerting is not None
        self.alerting.observe(changes)
        self.sessions.observe(changes)

    def _alert_links(self, labels: dict[str, str], sample: UsageRecord | None) -> dict[str, str]:
        return self.links.links(labels, sample.session_id if sample else None, sample.trace_id if sample else None)

    def _report_scheduler(self) -> Component | None:
        """The scheduled usage summaries (``reports.schedules``), when any are configured."""
        cfg = self.config
        if not cfg.reports.schedules:
            return None
        from relay.reports.budgets import budget_specs
        from relay.reports.service import build_scheduler

        alerting, history, spool = self.alerting, self.alert_history, self.spool
        assert alerting is not None and history is not None and spool is not None
        scheduler, _ = build_scheduler(
            cfg.reports,
            spool.db,
            cfg.alerting.receivers,
            [t.name for t in self.tenants],
            budgets=lambda tenant: budget_specs(alerting.engine.ruleset.rules),
            alerts=history.events,
            session_url=self.links.session_url,
            ready=self.links.settled,
        )
        return scheduler

    def _mapping_context(self, tenant) -> MappingContext:
        p = self.config.pipeline
        return MappingContext(
            tenant=tenant.name,
            user_attributes=list(p.identity.user_attributes),
            metadata_attributes=list(p.identity.metadata_attributes),
            tag_attributes=list(p.identity.tag_attributes),
            environment=tenant.langfuse.environment,
            release=tenant.langfuse.release,
            forward_content=p.forward_content,
            redact_patterns=list(p.redact_patterns),
            labels=dict(tenant.labels),
            pricing=getattr(self, "_pricing", None),
        )

    # ------------------------------------------------------------------ admin endpoint

    def _admin_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self._index)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        if self.alerting is not None:
            self.alerting.add_routes(app)

    async def _index(self, req: web.Request) -> web.Response:
        """``GET /``: the admin endpoints, one per line (``METHOD path — what``), like a Collector's zpages index."""
        lines = [f"relay {__version__} admin endpoint", ""]
        for route in req.app.router.routes():
            path = route.resource.canonical if route.resource is not None else ""
            if route.method == "HEAD" or path == "/":
                continue
            lines.append(f"{route.method:6} {path}" + (f"  — {_ADMIN_DOCS[path]}" if path in _ADMIN_DOCS else ""))
        return web.Response(text="\n".join(lines) + "\n")

    async def _metrics(self, _req: web.Request) -> web.Response:
        return web.Response(body=self.telemetry.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _req: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "version": __version__})

    async def _readyz(self, req: web.Request) -> web.Response:
        """Ready (200) when relay can accept and spool data: started (the admin endpoint answers before the receivers
        are bound), not shutting down, the spool takes a write and is not full; 503 with the reason otherwise. An
        upstream that fails (Langfuse keys or URL, see ``exporters``) does not make relay unready — data is still
        spooled, and taking the only replica out of a Service would lose it — so it is reported in the body
        (``upstreams_failing``) and in the logs and metrics.

        Without the admin token (when one is configured) the body only names the components (``components``: not
        ready; ``degraded``: ``exporter``), never tenant names or upstream error texts."""
        problems: list[str] = []
        components: set[str] = set()
        if not self._started:
            problems.append("starting")
            components.add("startup")
        if self._stopping:
            problems.append("shutting down")
            components.add("shutdown")
        try:
            assert self.spool is not None
            await asyncio.wait_for(self.spool.db.run(_touch), 2.0)
        except Exception as e:
            problems.append(f"spool not writable: {type(e).__name__}")
            components.add("spool")
        if self.spool and (problem := self.spool.admission_problem()):
            problems.append(problem)
            components.add("spool")
        exporters = self.exporter.health() if self.exporter else {}
        failing = [
            f"langfuse export for tenant {tenant} failing: {h.get('last_error')}"
            for tenant, h in exporters.items()
            if h.get("state") == "failing_permanently"
        ]
        status = "ready" if not problems else "not ready"
        warnings = (
            ["receivers accept unauthenticated requests beyond loopback (auth.allow_unauthenticated)"]
            if self._unauthenticated_open()
            else []
        )
        if not is_authenticated(req):
            return web.json_response(
                {
                    "status": status,
                    "components": sorted(components),
                    "degraded": ["exporter"] if failing else [],
                    "warnings": warnings,
                },
                status=200 if not problems else 503,
            )
        body: dict[str, Any] = {
            "status": status,
            "problems": problems,
            "components": sorted(components),
            "upstreams_failing": failing,
            "warnings": warnings,
            "exporters": exporters,
        }
        return web.json_response(body, status=200 if not problems else 503)

    def _unauthenticated_open(self) -> bool:
        """True when a receiver listens beyond loopback without tokens (``auth.allow_unauthenticated``)."""
        from relay.config_security import is_loopback_host

        cfg = self.config
        if any(t.tokens for t in cfg.tenants):
            return False
        return any(
            r.enabled and not is_loopback_host(r.endpoint.rpartition(":")[0])
            for r in (cfg.receivers.otlp.protocols.http, cfg.receivers.otlp.protocols.grpc)
        )

    # ------------------------------------------------------------------ misc

    def _precreate_series(self) -> None:
        """Create every labelled series the README lists at zero, so an idle relay's ``/metrics`` already has
        them (dashboards and alerts on a fresh relay see 0, not "no data"): per tenant and enabled transport the
        receiver counters, per tenant the pipeline, ledger and exporter series, per integration the notification
        counters."""
        t = self.telemetry
        tenants = [x.name for x in self.tenants]
        transports = [name for name, on in (("http", self.http is not None), ("grpc", self.grpc is not None)) if on]
        ok_status = {"http": "200", "grpc": "OK"}
        from relay.model import Signal
        from relay.telemetry import RECEIVER

        for tr in transports:
            for sig in Signal:
                t.receiver_requests.labels(RECEIVER, tr, sig.value, ok_status[tr])
                for tenant in tenants:
                    for family in (t.accepted, t.refused, t.failed, t.rejected):
                        family[sig].labels(RECEIVER, tr, tenant)
                    t.receiver_duplicate_requests.labels(RECEIVER, tr, tenant, sig.value)
        from relay.model import OUTCOME_REASONS

        t.outcomes.declare(tenants, {str(o): rs for o, rs in OUTCOME_REASONS.items()})
        if self.pipeline is not None:
            m = self.pipeline.metrics
            for tenant in tenants:
                for kind in ("llm", "tool"):
                    m.usage.labels(tenant, kind)
                m.spans_out.labels(tenant)
                m.errors.labels(tenant)
        if self.exporter is not None:
            em = self.exporter.metrics
            for tenant in self.exporter.tenants:
                lb = {"exporter": "langfuse", "tenant": tenant}
                for c in (
                    em.sent_spans,
                    em.send_failed_spans,
                    em.in_flight,
                    em.dead_letter_spans,
                    em.ambiguous_retries,
                    em.reconciled_spans,
                    em.unverified_resent_spans,
                ):
                    c.labels(**lb)
                for kind in ("connect", "timeout", "disconnect"):
                    em.retries.labels(kind=kind, **lb)
        if self.scores is not None:
            for tenant in self.scores.sender.tenants:
                for outcome in ("delivered", "dead_lettered"):
                    self.scores.sender.sent.labels(tenant, outcome)
        if self.langfuse_api is not None:
            for handling, status in (("proxied", "200"), ("stored", "200"), ("refused", "401")):
                self.langfuse_api.requests.labels(handling, status)
        if self.alerting is not None:
            from relay.alerting.dispatch.outbox import split_integration

            ob = self.alerting.outbox
            for key in ob._notifiers:
                receiver, kind = split_integration(key)
                for c in (ob.notifications_total, ob.requests_total, ob.requests_failed, ob.retried):
                    c.labels(kind, receiver)
                for reason in ("clientError", "serverError", "other"):
                    ob.notifications_failed.labels(kind, receiver, reason)

    def _log_startup(self) -> None:
        parts = []
        if self.http:
            parts.append(f"OTLP/HTTP {self.http.host}:{self.http.port}")
        if self.grpc:
            parts.append(f"OTLP/gRPC {self.grpc.host}:{self.grpc.port}")
        if self.admin:
            parts.append(f"admin {self.admin.host}:{self.admin.port}")
        log.info(
            "relay %s started: %s; data in %s; event loop %s",
            __version__,
            ", ".join(parts),
            Path(self.config.storage.directory).resolve(),
            type(asyncio.get_running_loop()).__module__.split(".")[0],
        )
        if self._unauthenticated_open():
            log.warning(
                "receivers listen beyond loopback WITHOUT authentication (auth.allow_unauthenticated: true): "
                "anyone who can reach them can write data; give tenants[].tokens to close them"
            )
        for t in self.tenants:
            if t.langfuse.enabled:
                log.info("tenant %s: Langfuse export on → %s", t.name, t.langfuse.base_url)
            else:
                missing = langfuse_missing(t.langfuse)
                how = (
                    (
                        "set LANGFUSE_BASE_URL, LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY "
                        "(or the tenant's langfuse keys in the config)"
                    )
                    if len(missing) == 3
                    else (
                        f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing — set "
                        f"{'it' if len(missing) == 1 else 'them'}"
                    )
                )
                log.warning(
                    "tenant %s: Langfuse export is OFF — data is received, spooled and kept in the usage ledger only. "
                    "To turn it on, %s and restart relay.",
                    t.name,
                    how,
                )


#: What the admin endpoints do, for ``GET /``.
_ADMIN_DOCS = {
    "/metrics": "Prometheus metrics",
    "/healthz": "the process is alive",
    "/readyz": "can accept and spool data (upstream failures are reported in the body, not unready)",
    "/api/v1/alerts": "current alerts (?filter=MATCHER, ?state=firing|pending)",
    "/api/v2/alerts/groups": "alert groups as the dispatcher routes them",
    "/api/v2/silences": "list (GET) or create (POST) silences",
    "/api/v2/silence/{id}": "one silence (GET) or expire it (DELETE)",
    "/-/reload": "reload the rule files",
}


def langfuse_missing(lf: Any) -> list[str]:
    """Which of a tenant's Langfuse settings are unset, named by their ``LANGFUSE_*`` variables (a resolved
    ``LangfuseConfig``); empty when export is on."""
    from relay.config_load import LANGFUSE_ENV

    return [LANGFUSE_ENV[k] for k in ("base_url", "public_key", "secret_key") if not getattr(lf, k)]


def build_redactor(cfg: RelayConfig, registry: CollectorRegistry | None = None) -> Redactor | None:
    """The ingest redactor of ``pipeline.redaction`` (catalogue, patterns, allowlist) and ``pipeline.redact_patterns``;
    None when there is nothing to apply. Hits are counted in ``relay_redactions_total{rule}`` on ``registry``."""
    red = cfg.pipeline.redaction
    rules = load_catalogue() if red.catalogue else []
    patterns = [*red.patterns, *cfg.pipeline.redact_patterns]
    if not rules and not patterns:
        return None
    on_hit = None
    redactor = Redactor(rules, patterns, red.allowlist)
    if registry is not None:
        counter = Counter(
            "relay_redactions",
            "Secrets replaced by [REDACTED] before spooling, by rule id.",
            ["rule"],
            registry=registry,
        )
        for rule in redactor.rules:  # every rule's series exists from the start (0), as Prometheus recommends
            counter.labels(rule.id)
        on_hit = lambda rule, n: counter.labels(rule).inc(n)  # noqa: E731
        redactor = Redactor(redactor.rules, (), red.allowlist, on_hit=on_hit)
    return redactor


class AdminEndpoint(Component):
    """The admin HTTP endpoint (``service.admin``): ``add_routes(app)`` installs its routes; the guards of
    ``relay.admin_security`` (token, Host, Origin, JSON-only) wrap them; TLS with ``service.admin.tls``."""

    name = "admin endpoint"

    def __init__(self, config: AdminConfig, add_routes: Callable[[web.Application], None]):
        self.config = config
        self.host, self.port = parse_endpoint(config.endpoint)
        self._add_routes = add_routes
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Bind and serve. Raises ``OSError`` when the address is in use or not available, or the TLS files cannot
        be read."""
        app = web.Application(middlewares=[admin_middleware(self.config)])
        self._add_routes(app)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        self.port = await serve(runner, self.host, self.port, self.config.tls)
        self._runner = runner

    async def shutdown(self, deadline: float) -> None:
        """Stop serving (safe when never started)."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()


class Housekeeping(Component):
    """Resyncs the spool's sizes every ``RESYNC_INTERVAL`` seconds (another process, ``relay replay``, may have
    requeued data) and prunes its dedup state every ``PRUNE_INTERVAL`` seconds."""

    name = "spool housekeeping"

    def __init__(self, spool: Spool):
        self.spool = spool
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the loop."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="relay-housekeeping")

    async def shutdown(self, deadline: float) -> None:
        """Cancel the loop."""
        if self._task is not None:
            task, self._task = self._task, None
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _loop(self) -> None:
        last_prune = time.monotonic()
        while True:
            await asyncio.sleep(RESYNC_INTERVAL)
            try:
                await self.spool.resync()
                if time.monotonic() - last_prune >= PRUNE_INTERVAL:
                    last_prune = time.monotonic()
                    await self.spool.prune()
            except Exception:
                log.exception("spool housekeeping failed")


def _touch(conn) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS heartbeat (k INTEGER PRIMARY KEY, at INTEGER)")
    conn.execute("INSERT OR REPLACE INTO heartbeat VALUES (1, ?)", (time.time_ns(),))


def _secrets(cfg: RelayConfig) -> list[str]:
    """Every secret of the config, for the log masker: tenant tokens, the admin token, Langfuse keys, receiver
    credentials."""
    out = []
    for r in cfg.alerting.receivers:
        for c in (*r.slack_configs, *r.webhook_configs, *r.jira_configs):
            for v in c.__dict__.values():
                if isinstance(v, SecretStr):
                    out.append(v.get_secret_value())
    if cfg.service.admin.auth.token is not None:
        out.append(cfg.service.admin.auth.token.get_secret_value())
    for t in cfg.resolved_tenants():
        out += [tok.get_secret_value() for tok in t.tokens]
        for s in (t.langfuse.public_key, t.langfuse.secret_key):
            if s is not None:
                out.append(s.get_secret_value())
    return out


async def run(config: RelayConfig) -> int:
    """Run relay until SIGTERM/SIGINT; returns the process exit code."""
    setup_logging(config.service.log.level, config.service.log.format)
    relay = Relay(config, owns_process=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await relay.start()
    except (OSError, RulesError, RuntimeError) as e:  # RuntimeError: grpcio's "Failed to bind to address"
        log.error("relay could not start: %s", str(e).split(";")[0])
        await relay.stop()
        return 1
    if relay.alerting is not None:
        loop.add_signal_handler(signal.SIGHUP, relay.alerting.request_reload)
    await stop.wait()
    log.info("signal received: draining")
    await relay.stop()
    return 0
