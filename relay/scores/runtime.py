"""Wiring of the scorer and the score sender for the daemon (``relay.app``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from relay.component import Component, remaining
from relay.config import LangfuseExporterConfig
from relay.scores.config import ScoresConfig
from relay.scores.outbox import ScoreSender
from relay.scores.records import score_changes
from relay.scores.service import ClosedTrace, Scorer
from relay.spool import TraceCommit
from relay.store.sqlite import SqliteDB
from relay.usage.store import LedgerChange, LedgerStore

__all__ = ["ScoresRuntime"]

log = logging.getLogger(__name__)


class ScoresRuntime(Component):
    """The scorer (always: scores also land in the ledger) and, for tenants exporting to Langfuse, the sender.

    ``tenants`` are the resolved tenant configs (``name``, ``langfuse``). Call :meth:`traces_closed` from the
    pipeline (``Pipeline(on_traces_closed=…)``).
    """

    def __init__(
        self,
        db: SqliteDB,
        ledger: LedgerStore,
        config: ScoresConfig,
        exporter: LangfuseExporterConfig,
        tenants: list,
        registry: CollectorRegistry | None = None,
        observe: Callable[[list[LedgerChange]], None] | None = None,
    ):
        exporting = {t.name: t.langfuse for t in tenants if t.langfuse.enabled}
        self.sender = ScoreSender(
            db,
            exporting,
            config,
            exporter.retry_on_failure,
            timeout=exporter.timeout,
            registry=registry,
            tls=exporter.tls,
        )
        self.scorer = Scorer(
            db,
            ledger,
            config,
            environments={t.name: t.langfuse.environment for t in tenants},
            deliver=lambda tenant: tenant in exporting,
            on_queued=self.sender.wake,
            on_changes=self.score_changes,
        )
        self.observe = observe
        self.enabled = config.enabled
        self.genai_traces = config.genai_traces

    def score_changes(self, changes: list) -> None:
        """Changed ``ledger_scores`` rows → the rules engine (``observe``), as score records."""
        if self.observe is not None and changes:
            self.observe(score_changes(changes))

    def traces_closed(self, commits: list[TraceCommit]) -> None:
        """The pipeline's feed: each committed trace becomes a ``ClosedTrace`` for the scorer."""
        if not self.enabled:
            return
        for c in commits:
            start, end = c.bounds if c.bounds else (None, None)
            name = str(c.info.get("name") or "")
            claude = name.startswith("claude_code") or any(u.source.startswith("claude_code") for u in c.usage)
            if not claude and not self.genai_traces:
                continue  # scores.genai_traces off: other agents' traces are not scored
            self.scorer.trace_closed(ClosedTrace(c.tenant, c.trace_id, c.info.get("session_id"), start, end, claude))

    name = "scores"

    async def start(self) -> None:
        """Start delivery (always: queued scores of earlier runs go out) and scoring (when enabled)."""
        await self.sender.start()
        if self.enabled:
            self.scorer.start()

    async def shutdown(self, deadline: float) -> None:
        """Record the traces reported so far and stop scoring, then delivery; queued scores stay in the outbox for
        the next start (an interrupted post is re-sent then: score ids make that an update). Never raises."""
        try:
            await asyncio.wait_for(self.scorer.stop(), remaining(deadline))
        except (TimeoutError, Exception):
            log.warning("scores: scoring did not stop cleanly before the deadline")
        await self.sender.stop()
