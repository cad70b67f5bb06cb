"""Wires relay's components from the config and runs their lifecycle.

Start order follows the data flow backwards (spool → exporter → pipeline → receivers), so nothing is accepted before
it can be stored; stop order is the reverse of the flow's start: receivers first (no new data; in-flight requests
finish), then the pipeline (open traces stay in the inbound spool for the next start), then the exporter (an
in-flight request may finish within ``service.shutdown_timeout``), then the spool.

Signals: SIGTERM and SIGINT drain and exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import SecretStr
from prometheus_client import Gauge

from relay import __version__
from relay.auth import TenantResolver
from relay.config import RelayConfig
from relay.alerting.rules_load import RulesError
from relay.alerting.service import AlertingService
from relay.exporters.langfuse import LangfuseExporter
from relay.exporters.langfuse_links import LangfuseLinks
from relay.logs import MASK, setup_logging
from relay.model import UsageRecord
from relay.otlp.grpc import OtlpGrpcReceiver
from relay.otlp.http import OtlpHttpReceiver
from relay.otlp.ingest import IngestRefused, IngestRequest
from relay.otlp.receiver import parse_endpoint
from relay.pipeline.context import MappingContext
from relay.pipeline.worker import Pipeline, PipelineMetrics, TenantPipelineSettings
from relay.reports.alert_history import AlertHistory
from relay.spool import Spool, SpoolFull
from relay.telemetry import CONTENT_TYPE_LATEST, Telemetry
from relay.usage.pricing import Pricing
from relay.usage.sqlite_store import SqliteLedgerStore

__all__ = ["Relay", "run"]

log = logging.getLogger("relay")

PRUNE_INTERVAL = 3600.0
RESYNC_INTERVAL = 10.0


class Relay:
    """The daemon's components, built from a validated ``RelayConfig``. ``await start()``, ``await stop()``."""

    def __init__(self, config: RelayConfig):
        self.config = config
        self.tenants = config.resolved_tenants()
        self.telemetry = Telemetry()
        self.spool: Spool | None = None
        self.pipeline: Pipeline | None = None
        self.ledger: SqliteLedgerStore | None = None
        self.links = LangfuseLinks(self.tenants)
        self.alerting: AlertingService | None = None
        self.alert_history: AlertHistory | None = None
        self.reports: Any = None  # relay.reports.schedule.ReportScheduler
        self._report_delivery: Any = None
        self.exporter: LangfuseExporter | None = None
        self.http: OtlpHttpReceiver | None = None
        self.grpc: OtlpGrpcReceiver | None = None
        self._admin: web.AppRunner | None = None
        self.admin_port: int | None = None
        self._stopping = False
        self._prune_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open the spool and start every component. Raises ``OSError`` when a port cannot be bound."""
        cfg = self.config
        MASK.add(_secrets(cfg))
        self.spool = Spool.open(Path(cfg.storage.directory), fsync=cfg.storage.fsync,
                                max_size=cfg.storage.max_spool_size, dedup_retention=cfg.storage.dedup_retention,
                                min_free_space=cfg.storage.min_free_space, outcomes=self.telemetry.outcomes)
        reg = self.telemetry.registry
        spool = self.spool
        spool_bytes = Gauge("relay_spool_bytes", "Bytes spooled on disk, by queue: inbound (not yet processed) and "
                            "outbound (not yet exported).", ["queue"], registry=reg)
        spool_bytes.labels("inbound").set_function(lambda: spool.inbound_bytes)
        spool_bytes.labels("outbound").set_function(lambda: spool.outbound_bytes)
        Gauge("relay_spool_capacity_bytes", "storage.max_spool_size.", registry=reg).set(cfg.storage.max_spool_size)

        self.exporter = LangfuseExporter(spool, cfg.exporters.langfuse, self.tenants, registry=reg)
        await self.exporter.start()
        settings = {t.name: TenantPipelineSettings(self._mapping_context(t), t.langfuse.enabled) for t in self.tenants}
        self.ledger = SqliteLedgerStore(spool.db, Pricing.load(cfg.ledger.pricing))
        self.links.start()
        self.alert_history = AlertHistory(spool.db)
        self.alerting = AlertingService(spool.db, self.ledger, cfg.rules, cfg.alerting, links=self._alert_links,
                                        registry=reg, sinks=[self.alert_history.record])
        await self.alerting.start()
        self._start_reports()
        self.pipeline = Pipeline(spool, settings, idle_timeout=cfg.pipeline.idle_timeout,
                                 root_grace=cfg.pipeline.root_grace, metrics=PipelineMetrics(reg),
                                 max_open_records=cfg.pipeline.max_open_records,
                                 ledger=self.ledger, on_ledger_changes=self.alerting.observe)
        self.pipeline.start()

        resolver = TenantResolver(cfg)
        proto = cfg.receivers.otlp.protocols
        if proto.http.enabled:
            self.http = OtlpHttpReceiver(proto.http, resolver, self._ingest, self.telemetry)
            await self.http.start()
        if proto.grpc.enabled:
            self.grpc = OtlpGrpcReceiver(proto.grpc, resolver, self._ingest, self.telemetry)
            await self.grpc.start()
        if cfg.service.admin.enabled:
            await self._start_admin()
        self._prune_task = asyncio.create_task(self._prune_loop(), name="relay-prune")
        self._log_startup()

    async def stop(self) -> None:
        """Drain and stop: receivers, pipeline, exporter, admin endpoint, spool. Never raises."""
        self._stopping = True
        grace = self.config.service.shutdown_timeout
        for receiver in (self.http, self.grpc):
            if receiver is not None:
                try:
                    await receiver.stop(grace)
                except Exception:
                    log.exception("stopping a receiver failed")
        if self._prune_task:
            self._prune_task.cancel()
        if self.pipeline:
            await self.pipeline.stop()
        if self.reports is not None:
            await self.reports.stop()
            await self._report_delivery.close()
        if self.alerting:
            await self.alerting.stop(grace)
            await self.alert_history.flush()
        await self.links.stop()
        if self.exporter:
            await self.exporter.stop(grace)
        if self._admin:
            await self._admin.cleanup()
        if self.spool:
            self.spool.close()
        log.info("relay stopped")

    # ------------------------------------------------------------------ ingest seam

    async def _ingest(self, req: IngestRequest) -> bool:
        """The receivers' sink: durably append to the inbound spool (see ``relay.otlp.ingest``)."""
        if self._stopping or self.spool is None:
            raise IngestRefused("relay is shutting down; retry", 1.0)
        try:
            return await self.spool.append(req.tenant, req.signal, req.payload, req.items, req.dedup_key,
                                           invalid=req.rejected_by)
        except SpoolFull as e:
            raise IngestRefused(e.reason, e.retry_after) from None

    def _alert_links(self, labels: dict[str, str], sample: UsageRecord | None) -> dict[str, str]:
        return self.links.links(labels, sample.session_id if sample else None, sample.trace_id if sample else None)

    def _start_reports(self) -> None:
        """The scheduled usage summaries (``reports.schedules``), when any are configured."""
        cfg = self.config
        if not cfg.reports.schedules:
            return
        from relay.reports.budgets import budget_specs
        from relay.reports.service import build_scheduler

        alerting = self.alerting
        assert alerting is not None
        self.reports, self._report_delivery = build_scheduler(
            cfg.reports, self.spool.db, cfg.alerting.receivers, [t.name for t in self.tenants],
            budgets=lambda tenant: budget_specs(alerting.engine.ruleset.rules), alerts=self.alert_history.events,
            session_url=self.links.session_url)
        self.reports.start()

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
        )

    # ------------------------------------------------------------------ admin endpoint

    async def _start_admin(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        if self.alerting is not None:
            self.alerting.add_routes(app)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        host, port = parse_endpoint(self.config.service.admin.endpoint)
        await web.TCPSite(runner, host, port).start()
        self._admin = runner
        self.admin_port = runner.addresses[0][1]

    async def _metrics(self, _req: web.Request) -> web.Response:
        return web.Response(body=self.telemetry.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _req: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "version": __version__})

    async def _readyz(self, _req: web.Request) -> web.Response:
        """Ready when the spool accepts a write and no exporter is failing permanently (keys, URL)."""
        problems: list[str] = []
        if self._stopping:
            problems.append("shutting down")
        try:
            await asyncio.wait_for(self.spool.db.run(_touch), 2.0)
        except Exception as e:  # noqa: BLE001 — any failure means not ready
            problems.append(f"spool not writable: {type(e).__name__}")
        if self.spool and (problem := self.spool.admission_problem()):
            problems.append(problem)
        exporters = self.exporter.health() if self.exporter else {}
        for tenant, h in exporters.items():
            if h.get("state") == "failing_permanently":
                problems.append(f"langfuse export for tenant {tenant} failing: {h.get('last_error')}")
        body: dict[str, Any] = {"status": "ready" if not problems else "not ready", "problems": problems,
                                "exporters": exporters}
        return web.json_response(body, status=200 if not problems else 503)

    # ------------------------------------------------------------------ misc

    async def _prune_loop(self) -> None:
        """Housekeeping: resync spool sizes (another process may have requeued data) and prune dedup state."""
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

    def _log_startup(self) -> None:
        parts = []
        if self.http:
            parts.append(f"OTLP/HTTP {self.http.host}:{self.http.port}")
        if self.grpc:
            parts.append(f"OTLP/gRPC {self.grpc.host}:{self.grpc.port}")
        if self._admin:
            parts.append(f"admin {self.config.service.admin.endpoint.rsplit(':', 1)[0]}:{self.admin_port}")
        log.info("relay %s started: %s; data in %s", __version__, ", ".join(parts),
                 Path(self.config.storage.directory).resolve())
        for t in self.tenants:
            if t.langfuse.enabled:
                log.info("tenant %s: Langfuse export on → %s", t.name, t.langfuse.base_url)
            else:
                log.warning(
                    "tenant %s: Langfuse export is OFF — data is received, spooled and kept in the usage ledger only. "
                    "To turn it on, set LANGFUSE_BASE_URL, LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY "
                    "(or the tenant's langfuse keys in the config) and restart relay.", t.name)


def _touch(conn) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS heartbeat (k INTEGER PRIMARY KEY, at INTEGER)")
    conn.execute("INSERT OR REPLACE INTO heartbeat VALUES (1, ?)", (time.time_ns(),))


def _secrets(cfg: RelayConfig) -> list[str]:
    """Every secret of the config, for the log masker: tenant tokens, Langfuse keys, receiver credentials."""
    out = []
    for r in cfg.alerting.receivers:
        for c in (*r.slack_configs, *r.webhook_configs, *r.jira_configs):
            for v in c.__dict__.values():
                if isinstance(v, SecretStr):
                    out.append(v.get_secret_value())
    for t in cfg.resolved_tenants():
        out += [tok.get_secret_value() for tok in t.tokens]
        for s in (t.langfuse.public_key, t.langfuse.secret_key):
            if s is not None:
                out.append(s.get_secret_value())
    return out


async def run(config: RelayConfig) -> int:
    """Run relay until SIGTERM/SIGINT; returns the process exit code."""
    setup_logging(config.service.log.level, config.service.log.format)
    relay = Relay(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await relay.start()
    except (OSError, RulesError) as e:
        log.error("relay could not start: %s", e)
        await relay.stop()
        return 1
    if relay.alerting is not None:
        loop.add_signal_handler(signal.SIGHUP, relay.alerting.request_reload)
    await stop.wait()
    log.info("signal received: draining")
    await relay.stop()
    return 0
