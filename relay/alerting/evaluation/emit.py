"""What leaves the rules engine: rendering alerts (values, annotations, links), persisting their state, and calling
the sink (the dispatcher) with firing and resolved alerts; plus the list of recently resolved alerts.

Times are unix seconds.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any

from relay.alert import Alert, AlertState
from relay.alerting.evaluation.runtime import Links, copy_alert, render_alert
from relay.alerting.evaluation.state import AlertStateStore

__all__ = ["Emitter", "AlertSink"]

log = logging.getLogger("relay.alerting")

#: ``on_alerts(alerts)``: receives copies of alerts that became firing or resolved, or changed while firing. May
#: return an awaitable (scheduled as a task).
AlertSink = Callable[[list[Alert]], Any]


class Emitter:
    """Sends and persists the engine's alert changes. ``state``: an ``AlertStateStore`` or None; ``links`` builds
    ``Alert.links``; ``resolved_retention``: seconds resolved alerts stay in :attr:`resolved`."""

    def __init__(self, sink: AlertSink, state: AlertStateStore | None, links: Links | None, resolved_retention: float):
        self.sink = sink
        self.state = state
        self.links = links
        self.resolved_retention = resolved_retention
        #: Resolved alerts, oldest first, kept for ``resolved_retention`` (listed by the API).
        self.resolved: list[Alert] = []
        #: Alerts handed to the sink so far.
        self.sent = 0
        self._tasks: set[asyncio.Future[Any]] = set()

    def flush(self, out: list[tuple[Any, ...]], now: float) -> None:
        """Render, persist and send what evaluation produced: entries ``(rule runtime, slot or None, alert, group
        or None, condition index)``. Pending alerts are only persisted; a resolved alert that never fired (a
        dropped pending one) is only deleted from storage."""
        if not out:
            return
        send: list[Alert] = []
        save: list[tuple[Alert, float | None]] = []
        delete: list[Alert] = []
        for rrt, s, a, g, i in out:
            if a.state is AlertState.PENDING:
                save.append((a, s.sent_at if s is not None else None))
                continue
            if a.state is AlertState.RESOLVED and a.fired_at is None:
                delete.append(a)
                continue
            values = rrt.evaluator.values(g.agg, now, i) if g is not None else None
            render_alert(rrt, a, values, g.sample if g is not None else None, self.links)
            if a.state is AlertState.RESOLVED:
                self.resolved.append(a)
            elif s is not None:
                s.sent_at, s.sent_value = now, a.value
            save.append((a, now))
            send.append(copy_alert(a))
        self.send(send, save, delete, now)

    def orphan(self, alert: Alert, now: float) -> None:
        """An alert whose rule is gone: a firing one resolves (and is sent), a pending one is dropped."""
        fired = alert.state is AlertState.FIRING
        alert.state, alert.ends_at = AlertState.RESOLVED, now
        if not fired:
            self.send([], [], [alert], now)
            return
        self.resolved.append(alert)
        self.send([copy_alert(alert)], [(alert, now)], [], now)

    def send(self, send: list[Alert], save: list[tuple[Alert, float | None]], delete: list[Alert], now: float) -> None:
        """Persist ``save`` (``(alert, sent_at)``) and ``delete``, then hand ``send`` to the sink (errors are logged,
        never raised; an awaitable result is scheduled as a task)."""
        if self.state is not None and (save or delete):
            self.state.save([(copy_alert(a), t) for a, t in save], [(a.rule, a.fingerprint) for a in delete], now)
        if not send:
            return
        self.sent += len(send)
        try:
            res = self.sink(send)
        except Exception:
            log.exception("alert sink failed")
            return
        if inspect.isawaitable(res):
            task = asyncio.ensure_future(res)
            self._tasks.add(task)
            task.add_done_callback(self._done)

    def prune(self, now: float) -> None:
        """Forget resolved alerts older than the retention."""
        cutoff = now - self.resolved_retention
        if self.resolved and (self.resolved[0].ends_at or 0) < cutoff:
            self.resolved = [a for a in self.resolved if (a.ends_at or 0) >= cutoff]

    def _done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("alert sink failed: %s", task.exception())

    async def drain(self) -> None:
        """Wait for scheduled sink calls and state writes."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self.state is not None:
            await self.state.flush()
