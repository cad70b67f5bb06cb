"""The dispatcher: routes alerts into aggregation groups and, on Alertmanager's timers, turns each group into
notifications queued in the durable outbox.

Semantics of Alertmanager's ``dispatch/dispatch.go`` and notification pipeline
(https://prometheus.io/docs/alerting/latest/alertmanager/ ;
https://prometheus.io/docs/alerting/latest/configuration/#route):

- :meth:`Dispatcher.put` (called by the rules engine with every alert whose state changed; firing alerts may be
  re-sent) routes each firing or resolved alert through the routing tree; each matching route puts it in the
  aggregation group of its group labels. Pending alerts are not routed.
- A new group is flushed ``group_wait`` after its creation — at once when its first alert has been firing for
  longer than that (after a restart or reload) — then every ``group_interval``.
- At a flush, silenced and inhibited alerts are left out, and so are resolved alerts the integration was never
  told were firing (an alert inhibited while it fired must not appear in the resolved message). For each integration of the route's receiver the
  notification log decides (:func:`~relay.alerting.dispatch.nflog.needs_update`): notify when a firing alert is new, when
  nothing fires any more, when (``send_resolved``) an alert newly resolved, or when ``repeat_interval`` passed.
  A receiver without ``send_resolved`` gets only the firing alerts; an all-resolved group is then only logged.
  An alert that resolves within ``group_wait`` therefore produces nothing.
- The :class:`~relay.alert.Notification` (``seq`` 1 for the first notification of an episode, i.e.
  since the group last had no firing alert; ``repeat`` when the firing set is unchanged) is queued in the outbox
  and the notification log updated in ONE SQLite job, for all groups due at that moment.
- After a flush, resolved alerts are dropped from the group; an empty group is removed.

Restart: the notification log is persisted, and the engine re-puts its firing alerts at start-up; their groups
flush at once and find the same firing set logged, so nothing is re-sent before ``repeat_interval``.

Times are unix seconds from the injected ``now``; timers run on the asyncio loop (``start()``), and
:meth:`flush_due` lets tests drive them with a fake clock.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Gauge

from relay.alert import Alert, AlertState, Notification
from relay.alerting.config import AlertingConfig
from relay.alerting.dispatch.inhibit import Inhibitor
from relay.alerting.dispatch.nflog import NflogEntry, NotificationLog, needs_update
from relay.alerting.dispatch.outbox import Outbox
from relay.alerting.dispatch.routing import Route
from relay.alerting.dispatch.silences import Silences
from relay.component import Component
from relay.notify.config import integrations
from relay.store.sqlite import SqliteDB

__all__ = ["Dispatcher", "GroupInfo", "MAINTENANCE_INTERVAL"]

log = logging.getLogger(__name__)

#: Seconds between prunings of the notification log and garbage collections of silences (Alertmanager: 15m).
MAINTENANCE_INTERVAL = 900.0


@dataclass
class _Group:
    route: Route
    key: str
    labels: dict[str, str]
    next_flush: float
    alerts: dict[str, Alert] = field(default_factory=dict)
    has_flushed: bool = False


@dataclass(frozen=True)
class GroupInfo:
    """A snapshot of one aggregation group: its ``receiver``, ``route_id``, ``group_key``, ``group_labels``,
    ``alerts`` (firing and not yet flushed resolved ones) and ``next_flush`` (unix seconds)."""

    receiver: str
    route_id: str
    group_key: str
    group_labels: dict[str, str]
    alerts: list[Alert]
    next_flush: float


@dataclass
class _Write:
    integration: str
    notification: Notification | None
    entry: NflogEntry


class Dispatcher(Component):
    """Routes, groups, mutes and deduplicates alerts into outbox notifications.

    ``config`` is the ``alerting:`` section; ``db`` relay's shared database (the notification log's table is
    created here — blocking, call at start-up); ``outbox`` receives the notifications; ``silences`` mutes alerts;
    ``now`` returns unix seconds; ``registry`` gets ``alertmanager_dispatcher_aggregation_groups``.
    """

    name = "alert dispatcher"

    def __init__(
        self,
        config: AlertingConfig,
        *,
        db: SqliteDB,
        outbox: Outbox,
        silences: Silences,
        now: Callable[[], float] = time.time,
        registry: CollectorRegistry | None = None,
    ):
        self.db = db
        self.outbox = outbox
        self.silences = silences
        self._now = now
        self.nflog = NotificationLog(db, now, retention=config.data_retention)
        self._groups: dict[tuple[str, str], _Group] = {}
        self._firing: dict[str, Alert] = {}
        self._lock = asyncio.Lock()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._apply(config)
        if registry is not None:
            Gauge(
                "alertmanager_dispatcher_aggregation_groups", "Number of active aggregation groups", registry=registry
            ).set_function(lambda: len(self._groups))

    def _apply(self, config: AlertingConfig) -> None:
        self.config = config
        self.tree: Route | None = Route(config.route) if config.receivers else None
        self.inhibitor = Inhibitor(config.inhibit_rules)
        self.inhibitor.update(self._firing.values())
        self._integrations = {r.name: integrations(r) for r in config.receivers}
        self.nflog.retention = config.data_retention

    # ------------------------------------------------------------------ input

    def put(self, alerts: Iterable[Alert]) -> None:
        """Take alert state changes (sync, cheap). Firing and resolved alerts are routed into their groups
        (replacing the previous version of the same fingerprint); pending ones only update inhibition."""
        now = self._now()
        alerts = list(alerts)
        self.inhibitor.update(alerts)
        for a in alerts:
            fp = a.fingerprint
            if a.state is AlertState.FIRING:
                self._firing[fp] = a
            else:
                self._firing.pop(fp, None)
            if a.state is AlertState.PENDING or self.tree is None:
                continue
            started = a.fired_at if a.fired_at is not None else a.active_at
            for route in self.tree.match(a.labels):
                labels = route.group_labels(a.labels)
                key = route.group_key(labels)
                g = self._groups.get((route.id, key))
                if g is None:
                    g = self._groups[(route.id, key)] = _Group(route, key, labels, now + route.opts.group_wait)
                g.alerts[fp] = a
                if not g.has_flushed and started + route.opts.group_wait <= now:
                    g.next_flush = min(g.next_flush, now)
        if self._wake is not None:
            self._wake.set()

    def reload(self, config: AlertingConfig) -> None:
        """Apply a new ``alerting:`` config: rebuild the routing tree, inhibition rules and receivers, and re-route
        the alerts of every group (groups restart their timers; the notification log prevents re-notifying)."""
        alerts = {fp: a for g in self._groups.values() for fp, a in g.alerts.items()}
        self._groups = {}
        self._apply(config)
        self.put(alerts.values())

    # ------------------------------------------------------------------ queries

    def groups(self) -> list[GroupInfo]:
        """Snapshots of the current aggregation groups, by receiver and group key."""
        out = [
            GroupInfo(g.route.receiver or "", g.route.id, g.key, dict(g.labels), list(g.alerts.values()), g.next_flush)
            for g in self._groups.values()
        ]
        return sorted(out, key=lambda i: (i.receiver, i.group_key))

    def silenced_by(self, labels: dict[str, str]) -> list[str]:
        """Ids of the active silences muting an alert with ``labels``."""
        return self.silences.is_silenced(labels)

    def inhibited_by(self, labels: dict[str, str]) -> list[str]:
        """Fingerprints of the firing alerts inhibiting an alert with ``labels``."""
        return self.inhibitor.inhibited_by(labels)

    # ------------------------------------------------------------------ timers

    async def start(self) -> None:
        """Run the group timers and maintenance on the running loop."""
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="alert-dispatcher")

    async def shutdown(self, deadline: float) -> None:
        """Stop the timers (a flush in progress is cancelled; its SQLite job commits or not as a whole)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
            self._wake = None

    async def _run(self) -> None:
        assert self._wake is not None
        last_maintenance = self._now()
        while True:
            try:
                await self.flush_due()
            except Exception:
                log.exception("alert dispatcher: flush failed")
            if self._now() - last_maintenance >= MAINTENANCE_INTERVAL:
                last_maintenance = self._now()
                await self.maintenance()
            self._wake.clear()
            nxt = min((g.next_flush for g in self._groups.values()), default=None)
            timeout = MAINTENANCE_INTERVAL if nxt is None else min(max(nxt - self._now(), 0.0), MAINTENANCE_INTERVAL)
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass

    async def maintenance(self) -> None:
        """Prune expired notification-log entries and garbage-collect long-expired silences."""
        try:
            await self.nflog.prune()
            await self.silences.gc()
        except Exception:
            log.exception("alert dispatcher: maintenance failed")

    async def flush_due(self) -> int:
        """Flush every group whose timer is due at ``now()``: queue the needed notifications and log them in one
        SQLite job. Returns the number of groups flushed. Raises what the database raised (the groups are then
        flushed again at their next interval)."""
        async with self._lock:
            now = self._now()
            due = [g for g in self._groups.values() if g.next_flush <= now]
            if not due:
                return 0
            plans = [(g, dict(g.alerts), self._plan(g, now)) for g in due]
            writes = [w for _, _, ws in plans for w in ws]
            if writes:

                def job(conn: sqlite3.Connection) -> None:
                    for w in writes:
                        if w.notification is not None:
                            self.outbox.add(conn, w.integration, w.notification, now)
                        self.nflog.write(conn, w.entry)

                await self.db.run(job)
                for w in writes:
                    self.nflog.committed(w.entry)
                sent = [w for w in writes if w.notification is not None]
                self.outbox.wake({w.integration for w in sent}, len(sent))
                for w in sent:
                    n = w.notification
                    assert n is not None
                    log.info(
                        "alert group %s: notification seq %d (%s, %d firing, %d resolved%s) queued for %s",
                        n.group_key,
                        n.seq,
                        n.status,
                        len(n.firing),
                        len(n.resolved),
                        ", repeat" if n.repeat else "",
                        w.integration,
                    )
            for g, snapshot, _ in plans:
                for fp, a in snapshot.items():
                    if a.state is AlertState.RESOLVED and g.alerts.get(fp) is a:
                        del g.alerts[fp]
                k = (g.route.id, g.key)
                if not g.alerts and self._groups.get(k) is g:
                    del self._groups[k]
            return len(due)

    def _plan(self, g: _Group, now: float) -> list[_Write]:
        opts = g.route.opts
        g.next_flush = now + opts.group_interval
        g.has_flushed = True
        kept = [
            a
            for a in g.alerts.values()
            if not self.silences.is_silenced(a.labels) and not self.inhibitor.inhibited_by(a.labels)
        ]
        kept.sort(key=lambda a: sorted(a.labels.items()))
        firing = [a for a in kept if a.state is AlertState.FIRING]
        resolved = [a for a in kept if a.state is AlertState.RESOLVED]
        ffp = {a.fingerprint for a in firing}
        receiver = opts.receiver or ""
        out = []
        for integration, send_resolved in self._integrations.get(receiver, []):
            entry = self.nflog.get(integration, g.key)
            # a resolved alert is only news if it was announced firing (not one muted all along, e.g. inhibited)
            announced = (entry.firing | entry.resolved) if entry is not None else frozenset()
            res = [a for a in resolved if a.fingerprint in announced]
            rfp = {a.fingerprint for a in res}
            if not needs_update(
                entry, ffp, rfp, send_resolved=send_resolved, repeat_interval=opts.repeat_interval, now=now
            ):
                continue
            alerts = firing + (res if send_resolved else [])
            new_episode = entry is None or not entry.firing
            notification = None
            seq = entry.seq if entry is not None else 0
            if alerts:
                seq = 1 if new_episode else seq + 1
                repeat = (
                    entry is not None
                    and not new_episode
                    and ffp == entry.firing
                    and (not send_resolved or rfp <= entry.resolved)
                )
                notification = Notification(
                    receiver=receiver,
                    group_key=g.key,
                    group_labels=dict(g.labels),
                    status="firing" if firing else "resolved",
                    alerts=alerts,
                    seq=seq,
                    repeat=repeat,
                    created_at=now,
                    external_url=self.config.external_url,
                )
            out.append(
                _Write(
                    integration, notification, self.nflog.entry(integration, g.key, ffp, rfp, seq, opts.repeat_interval)
                )
            )
        return out
