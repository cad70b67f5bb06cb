"""Delivery of queued scores (``score_outbox``) to each tenant's Langfuse project, and the score configs.

Per tenant with Langfuse export on, one task:

1. declares relay's score configs once (``GET /api/public/score-configs``, paginated; ``POST`` the missing ones —
   https://api.reference.langfuse.com, "ScoreConfigs") and remembers their ids, so scores show up typed;
2. posts the due scores, with ``configId`` when their config matched, to ``POST /api/public/scores``
   (https://api.reference.langfuse.com, "Scores") as one JSON array per pass where the server takes it (newer
   servers, and the SDK's ``scores.create``: 202 all accepted, 207 some refused without saying which), else each as
   a single object (the shape every server version accepts; v4.16 answers 400 to an array, and the tenant then
   posts single objects for ``ARRAY_RETRY_INTERVAL`` before trying an array again). After a 207 or any other
   refusal of an array, its scores are posted one by one, so each gets its own answer;
3. classifies the answer with ``relay.exporters.retry.check_status``: 2xx → the row is deleted (unless it was
   re-queued with a new body meanwhile); 429/502/503/504, connection errors and a bounded number of 500s → retried
   with the exporter's backoff (``exporters.langfuse.retry_on_failure``), never sooner than ``Retry-After``, which
   also pauses the tenant; any other status → dead letter (``score_dead_letters``) with the reason.

Re-sending a score is harmless: its id is the upsert key.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import sqlite3
import time
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry, Counter

from relay.config import LangfuseConfig, RetryConfig
from relay.config_security import TLSClientConfig
from relay.exporters.retry import PermanentError, TransientError, check_status
from relay.scores.catalog import BUILTINS, ScoreDef, config_body
from relay.scores.config import ScoresConfig
from relay.store.sqlite import SqliteDB
from relay.tls import client_ssl_context

__all__ = ["ScoreSender", "ScoreConfigs", "POSTS_IN_FLIGHT", "ARRAY_RETRY_INTERVAL"]

log = logging.getLogger(__name__)
_SCORES = "/api/public/scores"
#: Single-object score posts one tenant keeps in flight (servers that do not take arrays: one score per request).
POSTS_IN_FLIGHT = 4
#: Seconds a tenant whose Langfuse refused the array form of ``POST /scores`` (400) posts single scores before
#: trying an array again (the server may have been upgraded meanwhile).
ARRAY_RETRY_INTERVAL = 3600.0
_CONFIGS = "/api/public/score-configs"


def _definitions(config: ScoresConfig) -> list[ScoreDef]:
    out = list(BUILTINS.values())
    for c in config.custom:
        out.append(ScoreDef(c.name, c.data_type, c.description or f"relay custom score ({c.level})"))
    return out


async def _check(resp: aiohttp.ClientResponse, failures_500: int, max_500: int) -> Any:
    text = await resp.text(errors="replace")
    check_status(
        resp.status, resp.headers.get("Retry-After"), text[:300], failures_500=failures_500, max_500_retries=max_500
    )
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


class ScoreConfigs:
    """The score configs of one project: ``ids`` maps score name → config id once :meth:`ensure` succeeded."""

    def __init__(self, definitions: list[ScoreDef]):
        self.definitions = definitions
        self.ids: dict[str, str] = {}
        self.ready = False

    async def ensure(self, http: aiohttp.ClientSession, base: str, auth: dict[str, str]) -> None:
        """Match relay's definitions to the project's configs by name and data type, create the missing ones (a
        definition Langfuse refuses is skipped: its scores go without ``configId``). Raises ``TransientError`` /
        ``PermanentError`` (listing refused, e.g. revoked keys) like a score post; ``auth`` holds the
        ``Authorization`` header."""
        if self.ready:
            return
        existing: dict[str, dict] = {}
        page = 1
        while True:
            async with http.get(base + _CONFIGS, params={"page": page, "limit": 100}, headers=auth) as r:
                doc = await _check(r, 0, 3) or {}
            for c in doc.get("data") or []:
                if not c.get("isArchived"):
                    existing.setdefault(c.get("name"), c)
            meta = doc.get("meta") or {}
            if page >= int(meta.get("totalPages") or 1):
                break
            page += 1
        for d in self.definitions:
            have = existing.get(d.name)
            if have is None:
                try:
                    async with http.post(base + _CONFIGS, json=config_body(d), headers=auth) as r:
                        have = await _check(r, 0, 3) or {}
                except PermanentError as e:  # e.g. a name Langfuse does not accept: send that score untyped
                    log.warning(
                        "Langfuse refused score config %r: %s; its scores are sent without configId", d.name, e.message
                    )
                    continue
                log.info("declared Langfuse score config %s (%s)", d.name, d.data_type)
            if have.get("dataType") == d.data_type and have.get("id"):
                self.ids[d.name] = have["id"]
            else:
                log.warning(
                    "Langfuse score config %r exists with data type %s (relay's: %s); scores are sent without configId",
                    d.name,
                    have.get("dataType"),
                    d.data_type,
                )
        self.ready = True


class ScoreSender:
    """Delivers the score outbox, one task per tenant in ``tenants`` (name → ``LangfuseConfig``, export on), over
    ``tls`` (``exporters.langfuse.tls``, as the exporter)."""

    def __init__(
        self,
        db: SqliteDB,
        tenants: dict[str, LangfuseConfig],
        config: ScoresConfig,
        retry: RetryConfig,
        *,
        timeout: float = 30.0,
        registry: CollectorRegistry | None = None,
        tls: TLSClientConfig | None = None,
    ):
        self.db = db
        self.tenants = tenants
        self.tls = tls or TLSClientConfig()
        self.retry = retry
        self.timeout = timeout
        self.configs = {t: ScoreConfigs(_definitions(config)) for t in tenants}
        self._events = {t: asyncio.Event() for t in tenants}
        self._hold: dict[str, float] = {}  # tenant → monotonic time before which Langfuse asked us not to post
        self._singles_until: dict[str, float] = {}  # tenant → monotonic time before which arrays are not tried
        self._tasks: list[asyncio.Task[None]] = []
        self._http: aiohttp.ClientSession | None = None
        self._stopping = False
        self.sent = Counter(
            "relay_scores_sent",
            "Scores delivered to Langfuse or dead-lettered, by outcome.",
            ["tenant", "outcome"],
            registry=registry,
        )

    def wake(self, tenants: set[str] | None = None) -> None:
        """New scores were queued for ``tenants`` (all when None)."""
        for t in tenants or self._events.keys():
            if t in self._events:
                self._events[t].set()

    async def start(self) -> None:
        """Start one delivery task per tenant."""
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            connector=aiohttp.TCPConnector(ssl=client_ssl_context(self.tls)),
        )
        for t in self.tenants:
            self._tasks.append(asyncio.create_task(self._run(t), name=f"relay-scores-{t}"))

    async def stop(self) -> None:
        """Stop the tasks (pending scores stay queued for the next start) and close the HTTP client."""
        self._stopping = True
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http:
            await self._http.close()

    async def pending(self, tenant: str | None = None) -> int:
        """Scores still queued (all tenants when None)."""
        sql, args = "SELECT COUNT(*) FROM score_outbox", ()
        if tenant is not None:
            sql, args = sql + " WHERE tenant=?", (tenant,)  # type: ignore[assignment]
        return (await self.db.run(lambda c: c.execute(sql, args).fetchone()))[0]

    async def _sleep(self, tenant: str, seconds: float) -> None:
        """Wait ``seconds`` or until new scores are queued (``wake``) — except while Langfuse asked the tenant to
        wait (``Retry-After``): that wait is not cut short."""
        hold = self._hold.pop(tenant, 0.0) - time.monotonic()
        if hold > 0:
            await asyncio.sleep(hold)
            seconds -= hold
        ev = self._events[tenant]
        ev.clear()
        try:
            await asyncio.wait_for(ev.wait(), max(0.0, seconds))
        except TimeoutError:
            pass

    async def _run(self, tenant: str) -> None:
        lf = self.tenants[tenant]
        assert lf.public_key is not None and lf.secret_key is not None  # export on: both keys set
        base = str(lf.base_url).rstrip("/")
        auth = {"Authorization": lf.authorization()}
        failures = 0
        while not self._stopping:
            try:
                pause = await self._deliver(tenant, base, auth)
                failures = 0
            except (TransientError, aiohttp.ClientError, TimeoutError, OSError) as e:
                failures += 1
                pause = max(self._wait(failures), getattr(e, "retry_after", None) or 0.0)
                log.warning("score delivery for tenant %s: %s; retrying in %.1fs", tenant, e, pause)
            except PermanentError as e:
                failures += 1
                pause = self.retry.max_interval
                log.error("score configs for tenant %s refused: %s; retrying in %.0fs", tenant, e.message, pause)
            except asyncio.CancelledError:
                raise
            except Exception:
                failures += 1
                pause = self.retry.max_interval
                log.exception("score delivery for tenant %s failed", tenant)
            await self._sleep(tenant, pause)

    def _wait(self, attempt: int) -> float:
        """Backoff before attempt ``attempt + 1`` (s): ``initial × multiplier^(attempt-1)`` capped at the maximum
        (``exporters.langfuse.retry_on_failure``), without jitter."""
        r = self.retry
        return float(min(r.initial_interval * r.multiplier ** max(0, attempt - 1), r.max_interval))

    async def _deliver(self, tenant: str, base: str, auth: dict[str, str]) -> float:
        """Send every due row; returns how long to wait before looking again (s)."""
        http = self._http
        assert http is not None
        now = time.time_ns()

        def due(c: sqlite3.Connection) -> list[tuple]:
            return c.execute(
                "SELECT id, body, version, attempts, failures_500 FROM score_outbox WHERE tenant=? AND "
                "next_ns<=? ORDER BY id LIMIT 100",
                (tenant, now),
            ).fetchall()

        def next_due(c: sqlite3.Connection) -> int | None:
            return c.execute("SELECT MIN(next_ns) FROM score_outbox WHERE tenant=?", (tenant,)).fetchone()[0]

        rows = await self.db.run(due)
        if not rows:
            nxt = await self.db.run(next_due)
            return 5.0 if nxt is None else min(5.0, max(0.0, (nxt - time.time_ns()) / 1e9))
        configs = self.configs[tenant]
        await configs.ensure(http, base, auth)
        # (id, version) of delivered rows: deleted in one job (a re-send after a crash is only an upsert)
        delivered: list[tuple[int, int]] = []
        try:
            return await self._post_rows(tenant, base, auth, rows, delivered)
        finally:
            if delivered:
                await self.db.run(
                    lambda c: c.executemany("DELETE FROM score_outbox WHERE id=? AND version=?", delivered)
                )
                self.sent.labels(tenant, "delivered").inc(len(delivered))

    async def _post_rows(
        self, tenant: str, base: str, auth: dict[str, str], rows: list[tuple], delivered: list[tuple[int, int]]
    ) -> float:
        """Post the rows' scores: as one array when the server takes it (:meth:`_post_array`), else
        ``POSTS_IN_FLIGHT`` at a time as single objects (posting them one after the other capped delivery at one
        score per round trip); rows Langfuse accepted are appended to ``delivered``. Returns how long to wait
        before looking again (s): a ``Retry-After`` pauses the tenant."""
        if len(rows) > 1 and time.monotonic() >= self._singles_until.get(tenant, 0.0):
            pause = await self._post_array(tenant, base, auth, rows, delivered)
            if pause is not None:
                if pause:  # the server asked the whole tenant to wait
                    self._hold[tenant] = time.monotonic() + pause
                return pause
        for i in range(0, len(rows), POSTS_IN_FLIGHT):
            chunk = rows[i : i + POSTS_IN_FLIGHT]
            results = await asyncio.gather(*(self._post_one(tenant, base, auth, row) for row in chunk))
            pause = 0.0
            for row, result in zip(chunk, results, strict=True):
                if result is True:
                    delivered.append((row[0], row[2]))
                elif result:
                    pause = max(pause, result)
            if pause:  # the server asked the whole tenant to wait
                self._hold[tenant] = time.monotonic() + pause
                return pause
        return 0.0

    def _body(self, tenant: str, body_json: str) -> dict[str, Any]:
        """A queued score's request body, with the ``configId`` of its config when relay declared one."""
        body = json.loads(body_json)
        cid = self.configs[tenant].ids.get(body.get("name"))
        if cid and body.get("metadata", {}).get("producer") == "relay":
            body["configId"] = cid
        return body

    async def _post_array(
        self, tenant: str, base: str, auth: dict[str, str], rows: list[tuple], delivered: list[tuple[int, int]]
    ) -> float | None:
        """Post the rows' scores as one JSON array. 202: all delivered (appended to ``delivered``), returns 0. A
        transient failure reschedules every row and returns the ``Retry-After`` asked for (s, 0 when none). None
        when the rows must be posted one by one: the server refused the array form (400: it takes single objects
        only, so the tenant posts single objects for ``ARRAY_RETRY_INTERVAL``), refused some scores without
        saying which (207), or refused the request otherwise (each score then gets its own answer). Connection
        errors propagate (the tenant backs off)."""
        http = self._http
        assert http is not None
        f500 = max(row[4] for row in rows)
        try:
            async with http.post(base + _SCORES, json=[self._body(tenant, row[1]) for row in rows], headers=auth) as r:
                f500 += r.status == 500
                status = r.status
                await _check(r, f500, self.retry.max_500_retries)
        except TransientError as e:
            await self._reschedule(rows, e, status == 500)
            return e.retry_after or 0.0
        except PermanentError as e:
            if e.status == 400:  # v4.16 validates the body as one score: arrays are not taken
                self._singles_until[tenant] = time.monotonic() + ARRAY_RETRY_INTERVAL
                log.info(
                    "Langfuse of tenant %s takes one score per request (%s); posting scores one by one",
                    tenant,
                    e.message[:200],
                )
            return None
        if status != 202:  # 207: some scores refused, without saying which
            return None
        delivered.extend((row[0], row[2]) for row in rows)
        return 0.0

    async def _reschedule(self, rows: list[tuple], e: TransientError, was_500: bool) -> None:
        """Retry ``rows`` later: attempts + 1, their 500s counted, after the backoff or ``Retry-After``."""
        now = time.time_ns()
        await self.db.run(
            functools.partial(
                _execute_many,
                "UPDATE score_outbox SET attempts=?, failures_500=?, next_ns=?, last_error=? WHERE id=?",
                [
                    (
                        attempts + 1,
                        f500 + was_500,
                        now + round(max(self._wait(attempts + 1), e.retry_after or 0.0) * 1e9),
                        str(e)[:300],
                        row_id,
                    )
                    for row_id, _body, _version, attempts, f500 in rows
                ],
            )
        )

    async def _post_one(self, tenant: str, base: str, auth: dict[str, str], row: tuple) -> bool | float:
        """Post one outbox row: True when Langfuse accepted it; otherwise the row is rescheduled (transient
        failure) or dead-lettered (permanent refusal) and the result is the ``Retry-After`` asked for (s, 0 when
        none). Connection errors propagate (the tenant backs off)."""
        http = self._http
        assert http is not None
        row_id, body_json, _version, attempts, f500 = row
        body = self._body(tenant, body_json)
        status = 0
        try:
            async with http.post(base + _SCORES, json=body, headers=auth) as r:
                status = r.status
                await _check(r, f500 + (status == 500), self.retry.max_500_retries)
        except TransientError as e:
            await self._reschedule([row], e, status == 500)
            return e.retry_after or 0.0
        except PermanentError as e:
            await self.db.run(functools.partial(_dead_letter, row_id=row_id, status=e.status, reason=e.message))
            self.sent.labels(tenant, "dead_lettered").inc()
            log.error("score %s for tenant %s refused by Langfuse: %s", body.get("name"), tenant, e.message)
            return 0.0
        return True


def _execute_many(sql: str, args: list[tuple], conn: sqlite3.Connection) -> None:
    conn.executemany(sql, args)


def _dead_letter(conn: sqlite3.Connection, *, row_id: int, status: int | None, reason: str) -> None:
    row = conn.execute("SELECT tenant, score_id, body FROM score_outbox WHERE id=?", (row_id,)).fetchone()
    if row is None:
        return
    conn.execute(
        "INSERT INTO score_dead_letters(tenant, score_id, body, status, reason, failed_ns) VALUES (?,?,?,?,?,?)",
        (*row, status, reason, time.time_ns()),
    )
    conn.execute("DELETE FROM score_outbox WHERE id=?", (row_id,))
