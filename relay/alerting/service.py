"""The alerting core assembled: ledger change feed → rules engine → dispatcher (routing, grouping, silences,
inhibition, notification log) → durable outbox → notifiers.

Start order follows the flow backwards so nothing is produced before its consumer runs: outbox, dispatcher, rules
engine (restores persisted alerts and re-puts the firing ones, backfills its windows from the ledger), rules
manager (periodic evaluation, file watching). Stop order is the reverse. All state lives in relay's SQLite
database, so a restart (even ``kill -9``) neither forgets a firing alert nor notifies it again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge

from relay.alert import Alert
from relay.alerting.api import alerting_routes
from relay.alerting.config import AlertingConfig
from relay.alerting.dispatch.dispatcher import Dispatcher
from relay.alerting.dispatch.outbox import Outbox
from relay.alerting.dispatch.silences import Silences
from relay.alerting.evaluation.engine import RuleEngine
from relay.alerting.evaluation.manager import RulesManager
from relay.alerting.evaluation.runtime import Links
from relay.alerting.evaluation.state import AlertStateStore
from relay.alerting.rules.load import RuleSet
from relay.alerting.rules.schema import RulesConfig
from relay.component import Component, shutdown_all
from relay.notify.factory import build_notifiers
from relay.store.sqlite import SqliteDB
from relay.usage.store import LedgerChange, LedgerStore

__all__ = ["AlertingService"]

log = logging.getLogger(__name__)


class AlertingService(Component):
    """Rules, alerts and notifications over ``db`` (relay's database) and ``ledger``.

    ``rules`` and ``alerting`` are the config sections; ``links(labels, sample_record)`` builds Langfuse links;
    ``sinks`` also get every alert change the dispatcher gets (e.g. the reports' alert history).
    Raises ``relay.alerting.rules.load.RulesError`` from the constructor when the rule files are invalid (relay
    refuses to start with broken rules; a later reload keeps the old ones instead). Blocking; call at start-up.
    """

    name = "alerting"

    def __init__(
        self,
        db: SqliteDB,
        ledger: LedgerStore,
        rules: RulesConfig,
        alerting: AlertingConfig,
        *,
        links: Links | None = None,
        registry: CollectorRegistry | None = None,
        sinks: Sequence[Callable[[Sequence[Alert]], None]] = (),
    ):
        self.ledger = ledger
        self.rules_config = rules
        ruleset = RuleSet.load(rules.files)
        self.silences = Silences(db, retention=alerting.data_retention, registry=registry)
        self.outbox = Outbox(db, build_notifiers(alerting.receivers), registry=registry)
        self.dispatcher = Dispatcher(alerting, db=db, outbox=self.outbox, silences=self.silences, registry=registry)
        self._sinks = list(sinks)
        self._starting: asyncio.Task[None] | None = None
        self.engine = RuleEngine(
            ruleset,
            on_alerts=self._on_alerts,
            links=links,
            state=AlertStateStore(db, resolved_retention=rules.resolved_retention),
            evaluation_interval=rules.evaluation_interval,
            resend_interval=rules.resend_interval,
            resolved_retention=rules.resolved_retention,
        )
        self.manager = RulesManager(
            rules.files, self.engine, ledger, watch_interval=rules.watch_interval, watch=rules.watch
        )
        if registry is not None:
            g = Gauge("relay_rules_loaded", "Alerting rules loaded.", registry=registry)
            g.set_function(lambda: len(self.engine.rule_ids()))
            Gauge(
                "relay_rules_records_observed", "Ledger records the rules engine has evaluated.", registry=registry
            ).set_function(lambda: self.engine.records_observed)

    def _on_alerts(self, alerts: Sequence[Alert]) -> None:
        self.dispatcher.put(alerts)
        for sink in self._sinks:
            sink(alerts)

    def observe(self, changes: list[LedgerChange]) -> None:
        """The pipeline's ``on_ledger_changes`` hook: evaluate the changed records now (event-driven)."""
        self.engine.observe(changes)

    async def start(self) -> None:
        """Start delivery and dispatching now, and the engine (restore persisted alerts, backfill its windows from
        the ledger — tens of seconds over millions of records) and the rules manager in the background, so relay
        accepts telemetry at once; records observed meanwhile are reconciled with the backfill by the engine."""
        await self.outbox.start()
        await self.dispatcher.start()
        self._starting = asyncio.create_task(self._start_engine(), name="rules-engine-start")

    async def _start_engine(self) -> None:
        t0 = time.monotonic()
        try:
            await self.engine.restore(self.ledger)
        except Exception:
            log.exception("the rules engine could not start; alerts are not evaluated")
            return
        await self.manager.start()
        log.info(
            "alerting: %d rules from %d files, windows backfilled in %.1fs; %d receivers",
            len(self.engine.rule_ids()),
            len(self.engine.ruleset.files),
            time.monotonic() - t0,
            len(self.dispatcher.config.receivers),
        )

    async def started(self) -> None:
        """Wait until the engine has restored its alerts and backfilled its windows (tests, benchmarks)."""
        if self._starting is not None:
            await asyncio.shield(self._starting)

    async def shutdown(self, deadline: float) -> None:
        """Shut down in flow order (rules manager, dispatcher, outbox); queued notifications stay in the outbox for
        the next start. Never raises."""
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
            await asyncio.gather(self._starting, return_exceptions=True)
        await shutdown_all([self.manager, self.dispatcher, self.outbox], deadline)

    async def reload(self) -> tuple[bool, str | None]:
        """Reload the rule files (``SIGHUP``, ``POST /-/reload``); a broken file keeps the old rules."""
        return await self.manager.reload()

    def request_reload(self) -> None:
        """Schedule a reload from a signal handler."""
        self.manager.request_reload()

    def add_routes(self, app: web.Application) -> None:
        """``GET /api/v1/alerts``, the silences API (``/api/v2/silences``…) and ``POST /-/reload``."""
        alerting_routes(
            app, alerts=self.engine.alerts, dispatcher=self.dispatcher, silences=self.silences, reload=self.reload
        )
