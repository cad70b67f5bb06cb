"""The durable notification outbox: every notification is stored in SQLite before any delivery attempt, delivered
in order per integration, retried with backoff while the service is down or rate-limiting, and deleted only once
delivered — so an outage, a 429 with ``Retry-After`` or a ``kill -9`` delays a notification but never loses it.

Tables (relay's shared database):

- ``outbox``: queued notifications — integration id (``<receiver>/<kind>/<index>``, see ``relay.notify.factory``),
  group key, payload (``Notification.to_dict()`` JSON), created (unix s), attempts, next attempt (unix s), last
  error, status ``queued`` | ``failed`` (permanent error; kept ``failed_retention`` seconds for inspection);
- ``receiver_state``: (integration, group key) → the state dict the notifier returned for the group's last
  delivered notification (Slack ``channel``/``ts``, Jira issue key…), passed to the next one.

Delivery: one task per integration takes the oldest queued item (FIFO, so a group's notifications keep their
order), loads the group's state, calls :meth:`Notifier.notify`; on success it deletes the item and saves the
returned state in ONE transaction. ``NotifyError(retryable=True)`` (and connection errors/timeouts a notifier let
through) → the item stays queued, retried after ``max(exponential backoff with jitter, retry_after)``; later
items of that integration wait behind it (the service is down or throttling anyway). ``NotifyError(retryable=
False)`` or an unexpected exception → the item is marked failed with the reason (log, metric) and the next item
goes (the notifier's ``NotifyError.state``, when given, is kept in both cases). Before a non-idempotent call a
notifier may record its state durably through the ``checkpoint`` passed to :meth:`Notifier.deliver` (Slack: "about
to post this message", Jira: "about to create this issue"), so that an attempt cancelled by ``attempt_timeout``
or by :meth:`Outbox.shutdown`, or killed with the process, is seen as "maybe done" by the next attempt, which then
looks for the effect before repeating the call. Without a checkpoint, delivery is at-least-once: a crash between
a successful call and the commit re-sends that one item.

An item whose integration no longer exists after a config reload stays queued (with a warning) until an
integration with that id comes back.

Metrics (on the registry passed in): ``alertmanager_notifications_total{integration,receiver}`` notifications
attempted (first attempt of each item), ``alertmanager_notifications_failed_total{integration,receiver,reason}``
notifications given up (``reason``: ``clientError`` for 4xx, ``serverError`` for 5xx, ``other``; Alertmanager's
categories), ``alertmanager_notification_requests_total`` / ``…_failed_total{integration,receiver}`` every
attempt, ``relay_notifications_retried_total{integration,receiver}`` retryable failures,
``relay_outbox_queue_size`` queued items. ``integration`` is the kind (``slack``, ``webhook``, ``jira``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge

from relay.alert import Notification
from relay.component import Component, remaining
from relay.notify.base import Notifier, NotifyError
from relay.store.sqlite import SqliteDB

__all__ = ["Outbox", "OutboxItem", "SCHEMA", "split_integration"]

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    integration TEXT NOT NULL, group_key TEXT NOT NULL, payload TEXT NOT NULL, created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, next_attempt REAL NOT NULL, last_error TEXT,
    status TEXT NOT NULL DEFAULT 'queued', failed_at REAL);
CREATE INDEX IF NOT EXISTS outbox_queue ON outbox(status, integration, id);
CREATE TABLE IF NOT EXISTS receiver_state (
    integration TEXT NOT NULL, group_key TEXT NOT NULL, state TEXT NOT NULL, updated REAL NOT NULL,
    PRIMARY KEY (integration, group_key)) WITHOUT ROWID;
"""

_COLS = "id, integration, group_key, payload, created, attempts, next_attempt, last_error, status, failed_at"
#: Exceptions a notifier may let through that mean "try again" (network trouble).
_TRANSIENT = (aiohttp.ClientConnectionError, asyncio.TimeoutError, ConnectionError)


def split_integration(integration: str) -> tuple[str, str]:
    """``(receiver, kind)`` of an integration id ``<receiver>/<kind>/<index>`` (receiver names may contain
    ``/``); ``(integration, "unknown")`` for any other shape."""
    parts = integration.rsplit("/", 2)
    return (parts[0], parts[1]) if len(parts) == 3 else (integration, "unknown")


@dataclass(frozen=True)
class OutboxItem:
    """A stored notification. Times are unix seconds; ``status`` is ``queued`` or ``failed``."""

    id: int
    integration: str
    group_key: str
    notification: Notification
    created: float
    attempts: int
    next_attempt: float
    last_error: str | None
    status: str
    failed_at: float | None


class Outbox(Component):
    """The durable outbox. Blocking constructor (creates its tables; call at start-up); ``start()`` launches
    one delivery task per integration, ``await stop()`` ends them.

    ``notifiers`` maps integration ids to :class:`Notifier` instances (``relay.notify.factory.build_notifiers``).
    ``now`` returns unix seconds. Retry waits: ``initial_backoff × 2^(attempt-1)`` capped at ``max_backoff``,
    plus up to ``jitter`` × that (random), and never shorter than the service's ``retry_after``; seconds. An
    attempt taking longer than ``attempt_timeout`` seconds is cancelled and retried. Failed items are kept
    ``failed_retention`` seconds, group states not updated for ``state_retention`` seconds are dropped at start.
    """

    name = "notification outbox"

    def __init__(
        self,
        db: SqliteDB,
        notifiers: Mapping[str, Notifier],
        now: Callable[[], float] = time.time,
        *,
        registry: CollectorRegistry | None = None,
        initial_backoff: float = 1.0,
        max_backoff: float = 300.0,
        jitter: float = 0.5,
        failed_retention: float = 7 * 86400.0,
        state_retention: float = 90 * 86400.0,
        attempt_timeout: float = 300.0,
        rand: Callable[[], float] = random.random,
    ):
        self.db = db
        self._notifiers: dict[str, Notifier] = dict(notifiers)
        self._now = now
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._jitter = jitter
        self._rand = rand
        self.failed_retention = failed_retention
        self.attempt_timeout = attempt_timeout
        self.state_retention = state_retention
        self._wake: dict[str, asyncio.Event] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._busy: dict[str, asyncio.Future[None]] = {}
        self._stopping = False
        self._started = False
        self._housekeeping_task: asyncio.Task[None] | None = None
        self._warned: set[str] = set()
        db.apply_schema(SCHEMA)
        self._queued: int = db.run_sync(
            lambda c: c.execute("SELECT COUNT(*) FROM outbox WHERE status = 'queued'").fetchone()[0]
        )
        reg = registry if registry is not None else CollectorRegistry()
        labels = ["integration", "receiver"]
        #: Notifications attempted (counted at the first attempt of each item).
        self.notifications_total = Counter(
            "alertmanager_notifications", "The total number of attempted notifications.", labels, registry=reg
        )
        #: Notifications given up after a permanent error.
        self.notifications_failed = Counter(
            "alertmanager_notifications_failed",
            "The total number of failed notifications.",
            labels + ["reason"],
            registry=reg,
        )
        #: Every delivery attempt, and every failed attempt.
        self.requests_total = Counter(
            "alertmanager_notification_requests",
            "The total number of attempted notification requests.",
            labels,
            registry=reg,
        )
        self.requests_failed = Counter(
            "alertmanager_notification_requests_failed",
            "The total number of failed notification requests.",
            labels,
            registry=reg,
        )
        #: Retryable failures (the item stays queued).
        self.retried = Counter(
            "relay_notifications_retried",
            "Notification attempts that failed with a retryable error and will be retried.",
            labels,
            registry=reg,
        )
        Gauge(
            "relay_outbox_queue_size", "Notifications queued in the outbox, not yet delivered.", registry=reg
        ).set_function(lambda: self._queued)

    # ------------------------------------------------------------------ enqueue

    @staticmethod
    def add(conn: sqlite3.Connection, integration: str, notification: Notification, now: float) -> int:
        """Queue ``notification`` for ``integration`` inside the caller's SQLite job (on the writer thread), so
        it commits atomically with the caller's other writes; returns the item id. Call :meth:`wake` after the
        commit."""
        cur = conn.execute(
            "INSERT INTO outbox (integration, group_key, payload, created, next_attempt) VALUES (?, ?, ?, ?, ?)",
            (integration, notification.group_key, json.dumps(notification.to_dict()), now, now),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def wake(self, integrations: Iterable[str], added: int = 0) -> None:
        """Tell the delivery tasks that items were committed for ``integrations`` (``added``: how many items in
        all, for the queue-size metric)."""
        self._queued += added
        for key in integrations:
            ev = self._wake.get(key)
            if ev is not None:
                ev.set()
            elif key not in self._notifiers:
                self._warn_orphan(key)

    async def enqueue(self, integration: str, notification: Notification) -> int:
        """Queue one notification durably and wake its delivery task; returns the item id."""
        now = self._now()
        item_id = await self.db.run(lambda c: self.add(c, integration, notification, now))
        self.wake([integration], 1)
        return item_id

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start one delivery task per integration; warns about queued items whose integration is not
        configured."""
        if self._started:
            return
        self._stopping = False
        self._started = True
        for key in self._notifiers:
            self._spawn(key)
        orphans = self.db.run_sync(
            lambda c: [r[0] for r in c.execute("SELECT DISTINCT integration FROM outbox WHERE status = 'queued'")]
        )
        for key in orphans:
            if key not in self._notifiers:
                self._warn_orphan(key)
        self._housekeeping_task = asyncio.get_running_loop().create_task(self._housekeeping())

    async def shutdown(self, deadline: float) -> None:
        """Stop delivering: a notification being sent may finish until ``deadline``, then it is cancelled (and
        stays queued). Closes the notifiers."""
        grace = remaining(deadline)
        self._stopping = True
        for ev in self._wake.values():
            ev.set()
        tasks = list(self._tasks.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._housekeeping_task is not None:
            self._housekeeping_task.cancel()
        self._tasks.clear()
        self._wake.clear()
        self._started = False
        for n in self._notifiers.values():
            await _close(n)

    async def set_notifiers(self, notifiers: Mapping[str, Notifier]) -> None:
        """Replace the integrations after a config reload: new ids get a delivery task, removed ids stop after
        their in-flight delivery (their queued items wait), replaced notifier instances are closed once their
        in-flight delivery ends. The next attempt of an id always uses the current instance."""
        old = self._notifiers
        self._notifiers = dict(notifiers)
        self._warned -= set(self._notifiers)
        if self._started and not self._stopping:
            for key in self._notifiers:
                if key not in self._tasks or self._tasks[key].done():
                    self._spawn(key)
            for ev in self._wake.values():
                ev.set()
        keep = {id(n) for n in self._notifiers.values()}
        for key, n in old.items():
            if id(n) not in keep:
                busy = self._busy.get(key)
                if busy is not None:
                    await asyncio.shield(busy)
                await _close(n)

    # ------------------------------------------------------------------ inspection

    async def pending(self, integration: str | None = None) -> list[OutboxItem]:
        """Queued items in delivery order (optionally of one integration)."""
        return await self._items("queued", integration)

    async def failed(self, integration: str | None = None) -> list[OutboxItem]:
        """Items given up after a permanent error, oldest first."""
        return await self._items("failed", integration)

    async def state(self, integration: str, group_key: str) -> dict[str, Any]:
        """The stored notifier state of a group (``{}`` when none)."""
        return await self.db.run(lambda c: _load_state(c, integration, group_key))

    async def _items(self, status: str, integration: str | None) -> list[OutboxItem]:
        def job(conn: sqlite3.Connection) -> list[OutboxItem]:
            sql = f"SELECT {_COLS} FROM outbox WHERE status = ?"
            args: list[Any] = [status]
            if integration is not None:
                sql += " AND integration = ?"
                args.append(integration)
            return [_item(r) for r in conn.execute(sql + " ORDER BY id", args)]

        return await self.db.run(job)

    # ------------------------------------------------------------------ delivery

    def _spawn(self, key: str) -> None:
        self._wake.setdefault(key, asyncio.Event())
        self._tasks[key] = asyncio.get_running_loop().create_task(self._deliver_loop(key), name=f"outbox:{key}")

    def _warn_orphan(self, key: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(
                "outbox: notifications queued for integration %s, which is not configured (any more); they "
                "stay queued until it is",
                key,
            )

    async def _deliver_loop(self, key: str) -> None:
        ev = self._wake[key]
        while not self._stopping and self._notifiers.get(key) is not None:
            ev.clear()
            try:
                await self._deliver_next(key, ev)
            except asyncio.CancelledError:
                raise
            except Exception:  # a database failure: try again shortly
                log.exception("outbox: delivery bookkeeping for %s failed", key)
                await _wait(ev, 1.0)

    async def _deliver_next(self, key: str, ev: asyncio.Event) -> None:
        """Deliver the oldest queued item of ``key`` when it is due; otherwise wait until it is or until woken."""
        row = await self.db.run(
            lambda c: c.execute(
                f"SELECT {_COLS} FROM outbox WHERE status = 'queued' AND integration = ? ORDER BY id LIMIT 1", (key,)
            ).fetchone()
        )
        if row is None:
            await ev.wait()
            return
        try:
            item = _item(row)
        except (ValueError, KeyError, TypeError) as e:
            await self._fail(key, row[0], row[2], f"unreadable payload: {type(e).__name__}: {e}", "other")
            return
        delay = item.next_attempt - self._now()
        if delay > 0:
            await _wait(ev, delay)
            return
        notifier = self._notifiers.get(key)
        if notifier is None or self._stopping:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._busy[key] = done
        try:
            await self._attempt(key, notifier, item)
        finally:
            self._busy.pop(key, None)
            done.set_result(None)

    async def _attempt(self, key: str, notifier: Notifier, item: OutboxItem) -> None:
        receiver, kind = split_integration(key)
        if item.attempts == 0:
            self.notifications_total.labels(kind, receiver).inc()
        self.requests_total.labels(kind, receiver).inc()
        state = await self.db.run(lambda c: _load_state(c, key, item.group_key))

        async def checkpoint(s: dict[str, Any]) -> None:
            state_json = json.dumps(s)
            now = self._now()
            await self.db.run(lambda c: _save_state(c, key, item.group_key, state_json, now))

        try:
            new_state = await asyncio.wait_for(
                notifier.deliver(item.notification, state, checkpoint), self.attempt_timeout
            )
        except NotifyError as e:
            self.requests_failed.labels(kind, receiver).inc()
            if e.retryable:
                await self._retry(key, item, str(e), e.retry_after, e.state)
            else:
                await self._fail(key, item.id, item.group_key, str(e), _reason(e.status), e.state)
            return
        except _TRANSIENT as e:
            self.requests_failed.labels(kind, receiver).inc()
            await self._retry(key, item, f"{type(e).__name__}: {e}", None)
            return
        except Exception as e:  # a notifier bug: do not block the queue with it
            log.exception("outbox: notifier %s raised unexpectedly", key)
            self.requests_failed.labels(kind, receiver).inc()
            await self._fail(key, item.id, item.group_key, f"internal error: {type(e).__name__}: {e}", "other")
            return
        now = self._now()
        state_json = json.dumps(new_state if isinstance(new_state, dict) else {})

        def done(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM outbox WHERE id = ?", (item.id,))
            _save_state(conn, key, item.group_key, state_json, now)

        await self.db.run(done)
        self._queued -= 1
        log.info(
            "outbox: delivered notification %d (%s, seq %d) to %s",
            item.id,
            item.notification.status,
            item.notification.seq,
            key,
        )

    async def _retry(
        self, key: str, item: OutboxItem, error: str, retry_after: float | None, state: dict | None = None
    ) -> None:
        """Schedule the item's next attempt (backoff with jitter, at least ``retry_after``); keep ``state`` (the
        notifier's state after a partial failure) for the retry when given — in the same transaction."""
        attempts = item.attempts + 1
        # attempts are persisted (the schedule survives restarts), so the wait is computed here, not by a retry loop
        backoff = min(self._max_backoff, self._initial_backoff * 2 ** min(attempts - 1, 64))
        delay = max(backoff * (1 + self._jitter * self._rand()), retry_after or 0.0)
        now = self._now()
        next_attempt = now + delay

        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE outbox SET attempts = ?, next_attempt = ?, last_error = ? WHERE id = ?",
                (attempts, next_attempt, error[:1000], item.id),
            )
            if state is not None:
                _save_state(conn, key, item.group_key, json.dumps(state), now)

        await self.db.run(job)
        receiver, kind = split_integration(key)
        self.retried.labels(kind, receiver).inc()
        log.warning(
            "outbox: delivery of notification %d to %s failed (attempt %d), retrying in %.1fs: %s",
            item.id,
            key,
            attempts,
            delay,
            error,
        )

    async def _fail(
        self, key: str, item_id: int, group_key: str, error: str, reason: str, state: dict | None = None
    ) -> None:
        now = self._now()
        cutoff = now - self.failed_retention

        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE outbox SET status = 'failed', attempts = attempts + 1, last_error = ?, "
                "failed_at = ? WHERE id = ?",
                (error[:1000], now, item_id),
            )
            if state is not None:
                _save_state(conn, key, group_key, json.dumps(state), now)
            conn.execute("DELETE FROM outbox WHERE status = 'failed' AND failed_at < ?", (cutoff,))

        await self.db.run(job)
        self._queued -= 1
        receiver, kind = split_integration(key)
        self.notifications_failed.labels(kind, receiver, reason).inc()
        log.error("outbox: notification %d (group %s) to %s failed permanently: %s", item_id, group_key, key, error)

    async def _housekeeping(self) -> None:
        """Drop notifier states not updated for ``state_retention`` seconds (once, at start)."""
        cutoff = self._now() - self.state_retention
        try:
            await self.db.run(lambda c: c.execute("DELETE FROM receiver_state WHERE updated < ?", (cutoff,)))
        except Exception:
            log.exception("outbox: pruning receiver state failed")


def _reason(status: int | None) -> str:
    if status is not None and 400 <= status < 500:
        return "clientError"
    if status is not None and 500 <= status < 600:
        return "serverError"
    return "other"


async def _wait(ev: asyncio.Event, timeout: float) -> None:
    try:
        await asyncio.wait_for(ev.wait(), timeout)
    except TimeoutError:
        pass


async def _close(n: Notifier) -> None:
    try:
        await n.close()
    except Exception:
        log.exception("closing notifier %s failed", getattr(n, "integration", n))


def _load_state(conn: sqlite3.Connection, integration: str, group_key: str) -> dict[str, Any]:
    row = conn.execute(
        "SELECT state FROM receiver_state WHERE integration = ? AND group_key = ?", (integration, group_key)
    ).fetchone()
    return json.loads(row[0]) if row else {}


def _save_state(conn: sqlite3.Connection, integration: str, group_key: str, state_json: str, now: float) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO receiver_state (integration, group_key, state, updated) VALUES (?, ?, ?, ?)",
        (integration, group_key, state_json, now),
    )


def _item(r: tuple) -> OutboxItem:
    return OutboxItem(r[0], r[1], r[2], Notification.from_dict(json.loads(r[3])), r[4], r[5], r[6], r[7], r[8], r[9])
