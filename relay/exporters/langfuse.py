"""The Langfuse exporter: sends each tenant's outbound spool to that tenant's Langfuse project, once, in order.

Sources: Langfuse docs https://langfuse.com/integrations/native/opentelemetry and its handler, langfuse/langfuse
``web/src/pages/api/public/otel/v1/traces/index.ts`` (endpoint, auth, headers, status codes); export each span
once, since Langfuse v4 does not deduplicate re-sent spans (``worker/src/queues/otelIngestionQueue.ts``); client
retry rules: OTLP spec "Failures" (https://opentelemetry.io/docs/specs/otlp/#failures-1); backoff settings: the
Collector's https://github.com/open-telemetry/opentelemetry-collector/blob/main/exporter/exporterhelper/README.md.

Per tenant, one loop (independent position, backoff and health, so a failing project never delays another):

1. wait until ``spool.outbound_event(tenant)`` is set (or ``poll_interval`` passes, to notice batches requeued by
   another process), then linger ``batch.flush_interval`` seconds when less than ``batch.max_spans`` are pending;
2. read the oldest batches up to ``batch.max_spans`` spans / ``batch.max_bytes`` bytes and POST their
   concatenation (concatenated ``ExportTraceServiceRequest`` bytes are one valid request) gzip-compressed to
   ``{base_url}/api/public/otel/v1/traces`` with Basic auth and ``x-langfuse-ingestion-version: 4``;
3. 2xx → ``ack_outbound``; transient failure with no body stored (connect error, 429, 5xx) → retry the SAME body
   (``relay.exporters.retry``) until it succeeds, nothing newer is sent meanwhile; a lost answer → reconcile
   (below); permanent refusal → ``dead_letter`` with the status and the server's message.
   A 400/413 on a merged request first re-sends its batches one by one, so only the bad batch is dead-lettered.
   401/403/404 (bad key, organisation key or suspended ingestion, wrong URL) mark the tenant
   ``failing_permanently`` and pause ``max_interval`` seconds between batches until a request succeeds.

At most one copy of each span (Langfuse v4 stores a re-sent span id as another observation; langfuse/langfuse
``worker/src/queues/otelIngestionQueue.ts``):

- the batches of a request are marked in the spool (``Spool.mark_sending``) before the request is sent, and
  deleted (``ack_outbound``) after the 2xx; a failing delete (disk full) is retried with backoff, never by
  sending the batches again;
- a batch in the "sent, no answer" state — relay died during the request, or the answer was lost (timeout or
  dropped connection after the body was written) — is reconciled before it is sent again: relay waits until
  ``reconcile_delay`` after the send, asks Langfuse's Observations API v2 (``GET /api/public/v2/observations?
  traceId=…``, https://langfuse.com/docs/api-and-data-platform/features/observations-api) which of its span ids
  are stored, acknowledges the batch when all are, and otherwise re-sends only the spans
  Langfuse does not have (the batch is split). Langfuse v3 servers (``GET /api/public/health`` version < 4) upsert
  observations by id, so there a re-send is idempotent and no check is made. When the check itself fails the
  batch is re-sent whole and counted in ``relay_exporter_unverified_resent_spans_total``.

After an outage: while backing off from connection errors or 5xx answers without ``Retry-After``, relay probes
``GET /api/public/health`` (no auth) every ``health_probe_interval`` seconds and resumes as soon as
the probe, having failed, succeeds again — within a fraction of a second of Langfuse's recovery.

Shutdown (``stop``) lets an in-flight request finish within the timeout; unsent batches stay in the spool.
Secrets (the keys) are only ever placed in the Authorization header, never in logs, reasons or exceptions.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import importlib.metadata
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from tenacity import RetryCallState

from relay.component import Component, remaining
from relay.config import LangfuseExporterConfig, TenantConfig
from relay.exporters.retry import PermanentError, TransientError, check_status, exporter_retrying
from relay.spool import OutboundBatch, Spool, is_storage_error
from relay.tls import client_ssl_context

__all__ = ["LangfuseExporter", "ExporterMetrics", "OTLP_TRACES_PATH", "RELAY_VERSION", "USER_AGENT"]

log = logging.getLogger(__name__)

EXPORTER = "langfuse"
#: Langfuse's OTLP/HTTP traces endpoint below the base URL (https://langfuse.com/integrations/native/opentelemetry).
OTLP_TRACES_PATH = "/api/public/otel/v1/traces"
#: Langfuse's health endpoint (no auth): ``200 {"status":"OK","version":…}`` or 503
#: (https://api.reference.langfuse.com/#tag/health/GET/api/public/health).
HEALTH_PATH = "/api/public/health"
#: Langfuse's real-time observations read API (v4 and Cloud), used to reconcile interrupted sends
#: (https://langfuse.com/docs/api-and-data-platform/features/observations-api).
OBSERVATIONS_PATH = "/api/public/v2/observations"
#: Kinds of transient failure after which the health endpoint is probed during the backoff.
_PROBE_KINDS = frozenset({"connect", "timeout", "disconnect", "500", "502", "503", "504"})
#: Backoff of spool writes (acks, dead letters, send marks) that failed on a storage error, seconds.
_WRITE_RETRY_INITIAL, _WRITE_RETRY_MAX = 0.05, 2.0
#: Statuses after which every later request of the tenant will fail too (langfuse/langfuse
#: ``web/src/features/public-api/server/createAuthedProjectAPIRoute.ts`` and the otel/v1/traces route).
_FAILING_STATUSES = frozenset({401, 403, 404})
#: Statuses that reject a whole request for one bad part: re-send a merged request batch by batch.
_SPLIT_STATUSES = frozenset({400, 413})
_REASON_LIMIT = 500
_GZIP_IN_THREAD = 256 * 1024  # bytes; compress larger bodies off the event loop


def _relay_version() -> str:
    try:
        from relay import __version__

        return str(__version__)
    except ImportError:
        pass
    try:
        return importlib.metadata.version("relay")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


RELAY_VERSION = _relay_version()
USER_AGENT = f"relay/{RELAY_VERSION} aiohttp/{aiohttp.__version__}"


class ExporterMetrics:
    """The exporter's Prometheus metrics, registered into ``registry``; every series is labelled
    ``exporter="langfuse"`` and ``tenant``. Names follow the Collector's
    (https://opentelemetry.io/docs/collector/internal-telemetry/; counters get ``_total``)."""

    def __init__(self, registry: CollectorRegistry):
        lb = ("exporter", "tenant")
        self.sent_spans = Counter(
            "otelcol_exporter_sent_spans", "Spans acknowledged (2xx) by the destination.", lb, registry=registry
        )
        self.send_failed_spans = Counter(
            "otelcol_exporter_send_failed_spans",
            "Spans refused permanently (moved to the dead-letter store).",
            lb,
            registry=registry,
        )
        self.queue_size = Gauge(
            "otelcol_exporter_queue_size", "Spans waiting in the outbound spool.", lb, registry=registry
        )
        self.in_flight = Gauge(
            "otelcol_exporter_in_flight_requests", "Export requests in flight.", lb, registry=registry
        )
        self.dead_letter_spans = Gauge(
            "relay_dead_letter_spans",
            "Spans in the dead-letter store, waiting for `relay replay`.",
            lb,
            registry=registry,
        )
        self.retries = Counter(
            "relay_exporter_retries",
            "Failed export attempts that will be retried, by kind (HTTP status, connect, timeout, disconnect).",
            lb + ("kind",),
            registry=registry,
        )
        self.ambiguous_retries = Counter(
            "relay_exporter_ambiguous_retries",
            "Retries of requests whose body was sent without a response "
            "(the destination may have stored them: possible duplicates).",
            lb,
            registry=registry,
        )
        self.reconciled_spans = Counter(
            "relay_exporter_reconciled_spans",
            "Spans of interrupted sends found already stored in Langfuse after a "
            "restart (acknowledged without sending them again).",
            lb,
            registry=registry,
        )
        self.unverified_resent_spans = Counter(
            "relay_exporter_unverified_resent_spans",
            "Spans of interrupted sends re-sent without a successful check against Langfuse (possible duplicates).",
            lb,
            registry=registry,
        )
        self.request_duration = Histogram(
            "relay_exporter_request_duration_seconds",
            "Duration of one export attempt, in seconds.",
            lb,
            registry=registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )


class _Stopped(Exception):
    """Raised inside a tenant loop when the exporter is stopping."""


class _QueryFailed(Exception):
    """Langfuse's observations API could not answer a reconciliation query; ``transient`` when worth asking again
    later (connection error, timeout, 429, 5xx) rather than giving up on the check (404 on older servers, …)."""

    def __init__(self, message: str, transient: bool):
        super().__init__(message)
        self.transient = transient


class _Uncertain(Exception):
    """A request's body was sent but no answer came back (timeout, dropped connection): Langfuse may have stored
    it, so the batches are reconciled before anything is sent again. Wraps the ``TransientError``."""

    def __init__(self, cause: TransientError):
        super().__init__(str(cause))
        self.cause = cause


def _pending_spans(spool: Spool, tenant: str) -> Callable[[], float]:
    """A gauge callback: spans of ``tenant`` waiting in the outbound spool."""
    return lambda: spool.outbound_spans.get(tenant, 0)


def _major(version: str | None) -> int | None:
    """The major number of a version string such as ``4.16.0`` (None when absent or unparseable)."""
    try:
        return int(str(version).lstrip("v").split(".", 1)[0]) if version else None
    except ValueError:
        return None


def _iso(ns: int) -> str:
    """Unix ns → ISO 8601 UTC with milliseconds (``2026-12-06T16:00:00.000Z``)."""
    return datetime.fromtimestamp(max(ns, 0) / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _without_spans(req: ExportTraceServiceRequest, drop: set[str]) -> tuple[bytes, int]:
    """``req`` without the spans whose hex id is in ``drop``: (serialized request, spans left)."""
    left = 0
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            keep = [s for s in ss.spans if s.span_id.hex() not in drop]
            del ss.spans[:]
            ss.spans.extend(keep)
            left += len(keep)
    return req.SerializeToString(), left


class _TenantLoop:
    """One tenant's export loop, health and backoff (see the module docstring)."""

    def __init__(self, owner: LangfuseExporter, tenant: TenantConfig):
        lf = tenant.langfuse
        assert lf.base_url and lf.public_key and lf.secret_key
        self.owner = owner
        self.tenant = tenant.name
        self.url = lf.base_url + OTLP_TRACES_PATH
        self.base_url = lf.base_url
        self.server_version: str | None = None  # from the health endpoint
        self._last_failure: TransientError | None = None
        self._query_failures = 0
        public, secret = lf.public_key.get_secret_value(), lf.secret_key.get_secret_value()
        self._secrets = tuple(s for s in (secret, public) if s)
        self._headers = {
            "Authorization": lf.authorization(),
            "Content-Type": "application/x-protobuf",
            "Content-Encoding": "gzip",
            "x-langfuse-ingestion-version": "4",
            "x-langfuse-sdk-name": "relay",
            "x-langfuse-sdk-version": RELAY_VERSION,
        }
        self.labels = {"exporter": EXPORTER, "tenant": tenant.name}
        self.state, self.since = "ok", time.time()
        self.last_error: str | None = None
        self.last_status: int | None = None
        self.dead_letter_spans = 0
        self._failures_500 = 0
        self._solo_until = 0  # batches with id ≤ this are sent one per request (after a 400/413 on a merge)

    # ------------------------------------------------------------------ loop

    async def run(self) -> None:
        """Export until the owner stops; never raises (unexpected errors are logged and backed off)."""
        o = self.owner
        event = o.spool.outbound_event(self.tenant)
        batch = o.config.batch
        refreshed = -o.poll_interval
        while not o.stopping.is_set():
            try:
                if time.monotonic() - refreshed >= o.poll_interval:  # replays change it behind our back
                    await self._refresh_dead_letters()
                    refreshed = time.monotonic()
                event.clear()
                batches = await o.spool.read_outbound(self.tenant, batch.max_spans, batch.max_bytes)
                if batches and any(b.sent_ns is not None for b in batches):
                    batches = await self._reconcile(batches)
                    continue  # read again: the reconciled batches changed
                if batches:
                    if batches[0].id <= self._solo_until:
                        batches = batches[:1]
                    await self._export(batches)
                elif (
                    await self._wait(event, o.poll_interval)
                    and batch.flush_interval
                    and o.spool.outbound_spans.get(self.tenant, 0) < batch.max_spans
                ):
                    await self._sleep(batch.flush_interval)  # linger so close commits share a request
            except _Stopped:
                return
            except Exception as e:
                storage = is_storage_error(e)
                if storage:
                    log.warning(
                        "langfuse exporter for tenant %s: spool error (%s: %s); retrying",
                        self.tenant,
                        type(e).__name__,
                        e,
                    )
                else:
                    log.exception("langfuse exporter for tenant %s: unexpected error; retrying later", self.tenant)
                try:
                    await self._sleep(_WRITE_RETRY_MAX if storage else o.config.retry_on_failure.max_interval)
                except _Stopped:
                    return

    async def _export(self, batches: list[OutboundBatch]) -> None:
        """Send ``batches`` as one request, retrying transient failures; ack, split or dead-letter the outcome."""
        o = self.owner
        spans = sum(b.spans for b in batches)
        raw = b"".join(b.payload for b in batches)
        if len(raw) > _GZIP_IN_THREAD:
            body = await asyncio.to_thread(gzip.compress, raw, 6, mtime=0)
        else:
            body = gzip.compress(raw, 6, mtime=0)
        self._failures_500 = 0
        # the send state first: if relay dies before the answer, the next process reconciles these batches
        await self._retry_write(lambda: o.spool.mark_sending(batches))
        self._last_failure = None
        try:
            async for attempt in exporter_retrying(
                o.config.retry_on_failure, sleep=self._backoff, before_sleep=self._before_sleep
            ):
                with attempt:
                    try:
                        await self._post(body)
                    except TransientError as e:
                        if e.ambiguous:  # not retried blindly: reconciled first (the batches keep sent_ns)
                            raise _Uncertain(e) from None
                        raise
        except _Uncertain as u:
            o.metrics.retries.labels(kind=u.cause.kind, **self.labels).inc()
            o.metrics.ambiguous_retries.labels(**self.labels).inc()
            self._set_state("retrying", str(u.cause), u.cause.status)
            log.warning(
                "langfuse exporter for tenant %s: %s; Langfuse may have stored it: checking which spans it "
                "has before sending them again",
                self.tenant,
                u.cause,
            )
            return  # the next read finds the batches in the "sent" state and reconciles them
        except _Stopped:
            last = self._last_failure
            if last is not None and not last.ambiguous and last.kind != "500":
                # stopped while backing off from an answer that stored nothing (429/502/503/504, connect error):
                # the next process may send these batches without reconciling them first
                try:
                    await self._settle(o.spool.replace_outbound_state(batches))
                except Exception:  # the next start reconciles them instead
                    pass
            raise
        except PermanentError as e:
            if len(batches) > 1 and e.status in _SPLIT_STATUSES:
                log.warning(
                    "langfuse exporter for tenant %s: %s refused a request of %d batches; re-sending "
                    "them one by one to isolate the bad one",
                    self.tenant,
                    e.status,
                    len(batches),
                )
                self._solo_until = batches[-1].id
                await self._retry_write(lambda: o.spool.replace_outbound_state(batches))  # refused: not stored
                return
            # health first: whoever sees the dead letter also sees why
            failing = e.status in _FAILING_STATUSES or (e.status is not None and 300 <= e.status < 400)
            self._set_state("failing_permanently" if failing else "ok", e.message, e.status)
            status, message = e.status, e.message
            await self._retry_write(lambda: o.spool.dead_letter(batches, status, message))
            o.metrics.send_failed_spans.labels(**self.labels).inc(spans)
            self.dead_letter_spans += spans
            o.metrics.dead_letter_spans.labels(**self.labels).set(self.dead_letter_spans)
            log.error(
                "langfuse exporter for tenant %s: %d spans (%d batches) dead-lettered: %s%s",
                self.tenant,
                spans,
                len(batches),
                e.message,
                "; check the tenant's Langfuse URL and keys" if failing else "",
            )
            if failing:  # every later batch would fail the same way: do not hammer the server
                await self._sleep(o.config.retry_on_failure.max_interval)
            return
        await self._retry_write(lambda: o.spool.ack_outbound(batches))  # never re-sent: the delete is retried
        o.metrics.sent_spans.labels(**self.labels).inc(spans)
        if self.state != "ok":
            log.info("langfuse exporter for tenant %s: export recovered", self.tenant)
        self._set_state("ok", None, None)

    async def _post(self, body: bytes) -> None:
        """One attempt: return on 2xx, raise ``TransientError`` / ``PermanentError`` (``retry.check_status``)."""
        o = self.owner
        assert o.session is not None, "start() the exporter first"
        ctx = SimpleNamespace(body_sent=False)  # set by the session's trace config once bytes were written
        o.metrics.in_flight.labels(**self.labels).inc()
        started = time.monotonic()
        try:
            async with o.session.post(
                self.url, data=body, headers=self._headers, allow_redirects=False, trace_request_ctx=ctx
            ) as resp:
                status, retry_after = resp.status, resp.headers.get("Retry-After")
                location = resp.headers.get("Location") if 300 <= status < 400 else None
                text = await resp.content.read(64 * 1024)
        except (TimeoutError, aiohttp.ClientError) as e:
            what = type(e).__name__ + (f": {e.strerror}" if isinstance(e, OSError) and e.strerror else "")
            if not ctx.body_sent:
                raise TransientError("connect", f"cannot reach {self._host()} ({what})") from None
            kind = "timeout" if isinstance(e, asyncio.TimeoutError) else "disconnect"
            raise TransientError(
                kind, f"no response from {self._host()} after sending the body ({what})", ambiguous=True
            ) from None
        finally:
            o.metrics.in_flight.labels(**self.labels).dec()
            o.metrics.request_duration.labels(**self.labels).observe(time.monotonic() - started)
        if status == 500:
            self._failures_500 += 1
        message = self._message(f"redirected to {location}; fix base_url".encode() if location else text)
        if status == 404:  # a wrong base_url: show where relay posted
            message = f"{message} (POST {self.url}: not found; base_url must be the Langfuse host)"
        check_status(
            status,
            retry_after,
            message,
            failures_500=self._failures_500,
            max_500_retries=o.config.retry_on_failure.max_500_retries,
        )

    def _before_sleep(self, rs: RetryCallState) -> None:
        """tenacity hook before each backoff wait: metrics, health, logs."""
        exc = rs.outcome.exception() if rs.outcome else None
        assert isinstance(exc, TransientError)
        self._last_failure = exc
        delay = rs.next_action.sleep if rs.next_action else 0.0
        self.owner.metrics.retries.labels(kind=exc.kind, **self.labels).inc()
        self._set_state("retrying", str(exc), exc.status)
        if exc.ambiguous:
            self.owner.metrics.ambiguous_retries.labels(**self.labels).inc()
            log.warning(
                "langfuse exporter for tenant %s: %s; Langfuse may have stored it, the retry in %.2fs "
                "may create duplicates",
                self.tenant,
                exc,
                delay,
            )
        elif rs.attempt_number == 1 or rs.attempt_number % 10 == 0:
            log.warning(
                "langfuse exporter for tenant %s: attempt %d failed: %s; retrying in %.2fs",
                self.tenant,
                rs.attempt_number,
                exc,
                delay,
            )
        else:
            log.info(
                "langfuse exporter for tenant %s: attempt %d failed: %s; retrying in %.2fs",
                self.tenant,
                rs.attempt_number,
                exc,
                delay,
            )

    # ------------------------------------------------------------------ outage probe, reconciliation

    async def _backoff(self, seconds: float) -> None:
        """The retry wait: ``seconds``, cut short when Langfuse's health endpoint, having failed during this wait,
        answers 200 again (only after connection errors and 5xx without ``Retry-After``: a server's explicit delay
        is honoured as is)."""
        exc = self._last_failure
        if exc is None or exc.retry_after is not None or exc.kind not in _PROBE_KINDS:
            return await self._sleep(seconds)
        deadline = time.monotonic() + seconds
        was_down = False
        while (left := deadline - time.monotonic()) > 0:
            if await self._probe(min(left, 1.0)):
                if was_down:
                    log.info("langfuse exporter for tenant %s: %s answers again; resuming", self.tenant, HEALTH_PATH)
                    return
            else:
                was_down = True
            await self._sleep(min(self.owner.config.health_probe_interval, deadline - time.monotonic()))

    async def _probe(self, timeout: float) -> bool:
        """``GET /api/public/health``: True on 200 (and remember the server's version)."""
        session = self.owner.session
        assert session is not None
        try:
            async with session.get(
                self.base_url + HEALTH_PATH, timeout=aiohttp.ClientTimeout(total=timeout), allow_redirects=False
            ) as resp:
                if resp.status != 200:
                    return False
                try:
                    body = await resp.json(content_type=None)
                except ValueError:
                    body = None
                if isinstance(body, dict) and isinstance(body.get("version"), str):
                    self.server_version = body["version"]
                return True
        except (TimeoutError, aiohttp.ClientError, OSError):
            return False

    async def _reconcile(self, batches: list[OutboundBatch]) -> list[OutboundBatch]:
        """Settle batches in the "sent, answer lost" state (``sent_ns`` set, read by a new process or after an
        unexpected error) against what Langfuse stored: acknowledge the ones it has entirely, strip the spans it
        has from the others (``Spool.replace_outbound``) so only the missing ones are sent again. Returns
        nothing useful (the caller reads the spool again)."""
        o = self.owner
        uncertain = [b for b in batches if b.sent_ns is not None]
        if self.server_version is None:
            await self._probe(5.0)
        major = _major(self.server_version)
        if major is not None and major < 4:  # v3 upserts observations by id: re-sending is idempotent
            await self._retry_write(lambda: o.spool.replace_outbound_state(uncertain))
            return batches
        wait = max(b.sent_ns or 0 for b in uncertain) / 1e9 + o.config.reconcile_delay - time.time()
        if wait > 0:
            log.info(
                "langfuse exporter for tenant %s: %d batch(es) were being sent when relay stopped; checking "
                "Langfuse for them in %.1fs",
                self.tenant,
                len(uncertain),
                wait,
            )
            await self._sleep(wait)
        for b in uncertain:
            req = ExportTraceServiceRequest.FromString(b.payload)
            sent = {s.span_id.hex() for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans}
            try:
                stored = await self._stored_ids(req, b.sent_ns or time.time_ns())
            except _QueryFailed as e:
                if e.transient:  # Langfuse is unreachable or busy: ask again later, send nothing meanwhile
                    log.info(
                        "langfuse exporter for tenant %s: cannot check interrupted sends yet (%s); retrying",
                        self.tenant,
                        e,
                    )
                    await self._backoff_for(e)
                    return batches
                log.warning(
                    "langfuse exporter for tenant %s: cannot check which of %d interrupted spans Langfuse "
                    "stored (%s); sending them again (possible duplicates)",
                    self.tenant,
                    b.spans,
                    e,
                )
                o.metrics.unverified_resent_spans.labels(**self.labels).inc(b.spans)
                await self._retry_write(functools.partial(o.spool.replace_outbound_state, [b]))
                continue
            self._query_failures = 0
            found = sent & stored
            o.metrics.reconciled_spans.labels(**self.labels).inc(len(found))
            if found == sent:
                await self._retry_write(functools.partial(o.spool.ack_outbound, [b]))
                o.metrics.sent_spans.labels(**self.labels).inc(b.spans)
                log.info(
                    "langfuse exporter for tenant %s: all %d spans of an interrupted send are in Langfuse; "
                    "not sending them again",
                    self.tenant,
                    len(sent),
                )
                continue
            payload, left = _without_spans(req, found)
            await self._retry_write(functools.partial(o.spool.replace_outbound, b, payload, left))
            log.info(
                "langfuse exporter for tenant %s: %d of %d spans of an interrupted send are in Langfuse; "
                "sending the other %d",
                self.tenant,
                len(found),
                len(sent),
                left,
            )
        return batches

    async def _backoff_for(self, e: _QueryFailed) -> None:
        """Wait before asking Langfuse again after a transient query failure (exponential, cut short by the health
        probe like the export backoff)."""
        policy = self.owner.config.retry_on_failure
        self._query_failures += 1
        delay = min(policy.initial_interval * policy.multiplier ** (self._query_failures - 1), policy.max_interval)
        self._last_failure = TransientError("connect", str(e))
        await self._backoff(delay)

    async def _stored_ids(self, req: ExportTraceServiceRequest, sent_ns: int) -> set[str]:
        """Observation ids Langfuse stored for the traces of ``req``, sent at ``sent_ns``: the query covers its spans'
        start times from 1 s before to 1 min after, and the send time (Langfuse gives a span without times the
        time it ingested it). Raises ``_QueryFailed`` on any error or non-200 answer."""
        session = self.owner.session
        assert session is not None
        out: set[str] = set()
        by_trace: dict[str, list[int]] = {}
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                for s in ss.spans:
                    start = s.start_time_unix_nano or s.end_time_unix_nano or sent_ns
                    by_trace.setdefault(s.trace_id.hex(), []).append(start)
        for trace_id, starts in by_trace.items():
            params = {
                "traceId": trace_id,
                "fields": "core",
                "limit": "1000",
                "fromStartTime": _iso(min(starts) - 10**9),
                "toStartTime": _iso(max(*starts, sent_ns) + 60 * 10**9),
            }
            cursor = None
            for _page in range(100):
                if cursor:
                    params["cursor"] = cursor
                try:
                    async with session.get(
                        self.base_url + OBSERVATIONS_PATH,
                        params=params,
                        headers={"Authorization": self._headers["Authorization"]},
                        allow_redirects=False,
                    ) as resp:
                        if resp.status != 200:
                            raise _QueryFailed(
                                f"HTTP {resp.status} from {OBSERVATIONS_PATH}", resp.status == 429 or resp.status >= 500
                            )
                        body = await resp.json(content_type=None)
                except (TimeoutError, aiohttp.ClientError) as e:
                    raise _QueryFailed(f"{type(e).__name__} from {OBSERVATIONS_PATH}", True) from None
                except ValueError as e:
                    raise _QueryFailed(f"{type(e).__name__} from {OBSERVATIONS_PATH}", False) from None
                data = body.get("data") if isinstance(body, dict) else None
                if not isinstance(data, list):
                    raise _QueryFailed(f"unexpected answer from {OBSERVATIONS_PATH}", False)
                out.update(str(d.get("id")) for d in data if isinstance(d, dict))
                cursor = (body.get("meta") or {}).get("cursor") if isinstance(body.get("meta"), dict) else None
                if not cursor:
                    break
        return out

    async def _retry_write(self, write: Callable[[], Awaitable[None]]) -> None:
        """Run a spool write to completion, retrying storage errors (disk full, I/O) with backoff until it
        succeeds; other errors propagate. Raises ``_Stopped`` if the exporter stops while waiting."""
        delay = _WRITE_RETRY_INITIAL
        warned = False
        while True:
            try:
                await self._settle(write())
                if warned:
                    log.info("langfuse exporter for tenant %s: spool writable again", self.tenant)
                return
            except Exception as e:
                if not is_storage_error(e):
                    raise
                if not warned:
                    log.warning(
                        "langfuse exporter for tenant %s: spool write failed (%s: %s); retrying until it "
                        "succeeds (the batches are not sent again)",
                        self.tenant,
                        type(e).__name__,
                        e,
                    )
                    warned = True
            await self._sleep(delay)
            delay = min(delay * 2, _WRITE_RETRY_MAX)

    # ------------------------------------------------------------------ helpers

    async def _sleep(self, seconds: float) -> None:
        """Sleep ``seconds``; raise ``_Stopped`` as soon as the exporter stops."""
        try:
            await asyncio.wait_for(self.owner.stopping.wait(), timeout=max(seconds, 0.0))
        except TimeoutError:
            return
        raise _Stopped()

    async def _wait(self, event: asyncio.Event, timeout: float) -> bool:
        """Wait until ``event`` is set (True) or ``timeout`` seconds pass (False); ``_Stopped`` on stop."""
        waiters = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(self.owner.stopping.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        if self.owner.stopping.is_set():
            raise _Stopped()
        return event.is_set()

    async def _settle(self, write: Awaitable[None]) -> None:
        """Run a spool write to completion even if the loop is cancelled meanwhile (``stop`` awaits it)."""
        task = asyncio.ensure_future(write)
        self.owner.settling.add(task)
        task.add_done_callback(self.owner.settling.discard)
        await asyncio.shield(task)

    async def _refresh_dead_letters(self) -> None:
        self.dead_letter_spans = sum(d.spans for d in await self.owner.spool.dead_letters(self.tenant))
        self.owner.metrics.dead_letter_spans.labels(**self.labels).set(self.dead_letter_spans)

    def _set_state(self, state: str, error: str | None, status: int | None) -> None:
        if state != self.state:
            self.since = time.time()
        self.state, self.last_error, self.last_status = state, error, status

    def _host(self) -> str:
        url = urlsplit(self.url)
        return f"{url.hostname}:{url.port or (443 if url.scheme == 'https' else 80)}"

    def _message(self, raw: bytes) -> str:
        """The server's message from a response body: Langfuse's ``{message, error}`` JSON or the text, on one
        line, secrets replaced, at most ``_REASON_LIMIT`` characters."""
        text = raw.decode("utf-8", "replace")
        try:
            obj = json.loads(text)
        except ValueError:
            obj = None
        if isinstance(obj, dict) and (obj.get("message") or obj.get("error")):
            parts = [obj.get("message"), obj.get("error")]
            text = " — ".join(p if isinstance(p, str) else json.dumps(p) for p in parts if p)
        text = " ".join(text.split())
        for s in self._secrets:
            text = text.replace(s, "[REDACTED]")
        if len(text) > _REASON_LIMIT:
            text = text[: _REASON_LIMIT - 1] + "…"
        return text or "(empty response body)"

    def health(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "last_error": self.last_error,
            "last_status": self.last_status,
            "since": self.since,
            "pending_spans": self.owner.spool.outbound_spans.get(self.tenant, 0),
            "dead_letter_spans": self.dead_letter_spans,
        }


class LangfuseExporter(Component):
    """Exports every export-enabled tenant's outbound spool to its own Langfuse project (one loop per tenant).

    ``spool``: the open ``relay.spool.Spool``. ``config``: ``exporters.langfuse`` (``timeout`` per attempt in
    seconds, ``retry_on_failure``, ``batch`` limits in spans/bytes/seconds). ``tenants``: e.g.
    ``RelayConfig.resolved_tenants()``; tenants whose ``langfuse.enabled`` is false get no loop. ``registry``:
    where ``ExporterMetrics`` are registered (default: a private registry). ``poll_interval``: seconds between
    spool checks while idle, to notice batches requeued by another process (``relay replay``).
    """

    name = "Langfuse exporter"

    def __init__(
        self,
        spool: Spool,
        config: LangfuseExporterConfig,
        tenants: Iterable[TenantConfig],
        *,
        registry: CollectorRegistry | None = None,
        poll_interval: float = 5.0,
    ):
        self.spool = spool
        self.config = config
        self.poll_interval = poll_interval
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = ExporterMetrics(self.registry)
        self.session: aiohttp.ClientSession | None = None
        self.stopping = asyncio.Event()
        self.settling: set[asyncio.Future[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._loops = {t.name: _TenantLoop(self, t) for t in tenants if t.langfuse.enabled}
        for name in self._loops:
            self.metrics.queue_size.labels(exporter=EXPORTER, tenant=name).set_function(_pending_spans(spool, name))

    @property
    def tenants(self) -> list[str]:
        """Names of the tenants this exporter serves (those with Langfuse export enabled)."""
        return list(self._loops)

    async def start(self) -> None:
        """Open the HTTP session and start one loop per tenant. Call once, inside the running event loop."""
        if self._tasks:
            return
        trace = aiohttp.TraceConfig()

        async def on_chunk_sent(_s: Any, ctx: SimpleNamespace, _p: Any) -> None:
            if ctx.trace_request_ctx is not None:
                ctx.trace_request_ctx.body_sent = True

        trace.on_request_chunk_sent.append(on_chunk_sent)
        self.stopping.clear()
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.config.timeout),
            headers={"User-Agent": USER_AGENT},
            trace_configs=[trace],
            connector=aiohttp.TCPConnector(ssl=client_ssl_context(self.config.tls)),
        )
        self._tasks = [asyncio.create_task(lp.run(), name=f"langfuse-exporter:{n}") for n, lp in self._loops.items()]
        if self._loops:  # with export off for every tenant, the startup warning per tenant says so
            log.info("langfuse exporter started for %d tenant(s): %s", len(self._loops), ", ".join(self._loops))

    async def shutdown(self, deadline: float) -> None:
        """Stop all loops: backoff waits end at once, an in-flight request may finish until ``deadline`` (then it is
        cancelled; its batches stay in the spool and are sent again by the next start). Never raises."""
        self.stopping.set()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=remaining(deadline))
            for t in pending:
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks = []
        if self.settling:
            await asyncio.gather(*list(self.settling), return_exceptions=True)
        if self.session is not None:
            await self.session.close()
            self.session = None

    def health(self) -> dict[str, dict[str, Any]]:
        """Per-tenant export health for ``/readyz``: ``{tenant: {"state", "last_error", "last_status", "since",
        "pending_spans", "dead_letter_spans"}}``. ``state`` is ``ok``, ``retrying`` (transient failures; data
        waits in the spool) or ``failing_permanently`` (the last request got 401/403/404/3xx: keys or URL need
        fixing; batches are being dead-lettered). ``since`` is the Unix time (seconds) of the last state change."""
        return {name: lp.health() for name, lp in self._loops.items()}
