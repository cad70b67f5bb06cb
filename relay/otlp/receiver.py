"""Transport-independent part of the OTLP receivers: hand validated requests to the sink and count outcomes.

Both :mod:`relay.otlp.http` and :mod:`relay.otlp.grpc` decode/validate with :mod:`relay.otlp.codec`, then call
:meth:`IngestGate.submit`. The ingest call runs in its own task behind :func:`asyncio.shield`, so once a body was
fully read it is stored even if the client disconnects or its handler is cancelled
(Claude Code does not re-send what a slow or vanished receiver missed at exit: observed in Claude Code's
exports, ``tests/fixtures/claude-code/``). Item metrics are counted inside that task for the same reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from enum import StrEnum

from relay.model import Outcome, Signal
from relay.otlp.codec import ValidatedRequest
from relay.otlp.ingest import Ingest, IngestRefused, IngestRequest, IngestThrottled, dedup_key
from relay.redaction import Redactor
from relay.telemetry import RECEIVER, Telemetry

__all__ = ["SubmitStatus", "SubmitResult", "IngestGate", "InFlight", "parse_endpoint"]

log = logging.getLogger(__name__)

#: Retry hint (seconds) used when the sink failed unexpectedly rather than refusing.
FAILURE_RETRY_AFTER = 1.0


class SubmitStatus(StrEnum):
    """What happened to a submitted *request* at the spool (not an item's fate: that is
    :class:`relay.model.Outcome`)."""

    STORED = "stored"  # durably queued
    DUPLICATE = "duplicate"  # dedup key already known: success, nothing stored
    REFUSED = "refused"  # sink raised IngestRefused: retryable
    THROTTLED = "throttled"  # sink raised IngestThrottled (tenant over its rate limit): retryable after the delay
    FAILED = "failed"  # sink raised something else: logged, retryable


@dataclass(frozen=True)
class SubmitResult:
    """Result of :meth:`IngestGate.submit`: ``retry_after`` (seconds) and ``reason`` are set for REFUSED/FAILED."""

    status: SubmitStatus
    retry_after: float = 0.0
    reason: str = ""


class InFlight:
    """Requests being redacted and stored, across receivers: what other work on the event loop lets through first.

    A client waits for each of these (its acknowledgement), while the pipeline works from the durable spool and
    loses nothing by waiting. :meth:`wait_idle` is the pipeline's yield point: it returns when no request is in
    flight, or after ``timeout`` seconds so the pipeline still progresses under a constant stream of requests."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        """A request's ingest started."""
        self.count += 1
        self._idle.clear()

    def leave(self) -> None:
        """A request's ingest ended (stored, refused or failed)."""
        self.count -= 1
        if self.count <= 0:
            self.count = 0
            self._idle.set()

    async def wait_idle(self, timeout: float) -> None:
        """Wait until no request is in flight, at most ``timeout`` seconds (returns at once when none is)."""
        if self.count:
            try:
                async with asyncio.timeout(timeout):  # no task per wait, unlike wait_for: this runs per trace mapped
                    await self._idle.wait()
            except TimeoutError:
                pass


class IngestGate:
    """Calls the :data:`~relay.otlp.ingest.Ingest` sink for one transport (``"http"`` or ``"grpc"``) and keeps
    the receiver metrics of :class:`~relay.telemetry.Telemetry` up to date. ``in_flight`` (shared by the
    receivers) counts the requests being stored."""

    def __init__(
        self,
        ingest: Ingest,
        telemetry: Telemetry,
        transport: str,
        redactor: Redactor | None = None,
        in_flight: InFlight | None = None,
    ):
        self._ingest = ingest
        self._redactor = redactor
        self._t = telemetry
        self.transport = transport
        self._tasks: set[asyncio.Task[SubmitResult]] = set()
        self._in_flight = in_flight

    async def submit(self, tenant: str, body: bytes, req: ValidatedRequest) -> SubmitResult:
        """Store ``req`` (whose decompressed wire bytes are ``body``) for ``tenant``; requires ``req.items`` > 0.

        Never raises for sink errors (they become REFUSED/FAILED); propagates cancellation of the *caller*
        while the ingest task keeps running to completion. With a redactor, secrets in the request's strings
        are replaced before it is stored (``relay.redaction``), in the same task, in steps of
        ``relay.redaction.STEP_ITEMS`` items; the dedup key still hashes the body as received.
        """
        task = asyncio.get_running_loop().create_task(self._run(tenant, body, req))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if (in_flight := self._in_flight) is not None:
            in_flight.enter()
            task.add_done_callback(lambda _task: in_flight.leave())
        return await asyncio.shield(task)

    async def _redacted(self, req: ValidatedRequest) -> bytes:
        """``req``'s payload with its secrets redacted, in steps: other requests' acknowledgements (and the rest
        of the event loop) run between the steps of a large request."""
        assert self._redactor is not None
        changed = 0
        for step in self._redactor.redact_steps(req.signal, req.message):
            if step is None:
                await asyncio.sleep(0)
            else:
                changed = step
        return req.message.SerializeToString() if changed else req.payload

    async def _run(self, tenant: str, body: bytes, validated: ValidatedRequest) -> SubmitResult:
        labels = (RECEIVER, self.transport, tenant)
        signal, items = validated.signal, validated.items
        try:
            payload = validated.payload if self._redactor is None else await self._redacted(validated)
            req = IngestRequest(
                tenant=tenant,
                signal=signal,
                payload=payload,
                items=items,
                dedup_key=dedup_key(tenant, signal, body),
                rejected_by=dict(validated.rejected_by),
            )
            stored = await self._ingest(req)
        except IngestRefused as e:
            self._t.refused[signal].labels(*labels).inc(items)
            status = SubmitStatus.THROTTLED if isinstance(e, IngestThrottled) else SubmitStatus.REFUSED
            return SubmitResult(status, max(float(e.retry_after), 0.0), e.reason)
        except Exception:
            log.exception("storing a %s request of tenant %s failed", signal.value, tenant)
            self._t.failed[signal].labels(*labels).inc(items)
            return SubmitResult(SubmitStatus.FAILED, FAILURE_RETRY_AFTER, "internal error while storing the data")
        if stored:
            self._t.accepted[signal].labels(*labels).inc(items)
            return SubmitResult(SubmitStatus.STORED)
        self._t.receiver_duplicate_requests.labels(RECEIVER, self.transport, tenant, signal.value).inc()
        return SubmitResult(SubmitStatus.DUPLICATE)

    async def count_rejected(self, tenant: str, req: ValidatedRequest) -> None:
        """Count the items validation removed from ``req`` (partial success). Their ``invalid`` outcome is
        recorded here only when nothing of the request is stored (no valid item; durably when the outcome store
        has a sink, see ``OutcomeCounts.record``); otherwise the sink counts it with the stored request."""
        if req.rejected:
            self._t.rejected[req.signal].labels(RECEIVER, self.transport, tenant).inc(req.rejected)
            if not req.items:
                await self._t.outcomes.record(
                    [(tenant, req.signal.value, Outcome.INVALID, r, n) for r, n in req.rejected_by.items()]
                )

    def finish(self, signal: Signal, status: str, started: float) -> None:
        """Count one answered request with ``status`` and observe its duration since ``started``
        (a :func:`time.perf_counter` value)."""
        self._t.receiver_requests.labels(RECEIVER, self.transport, signal.value, status).inc()
        self._t.receiver_request_duration.labels(self.transport, signal.value).observe(time.perf_counter() - started)

    @property
    def in_flight(self) -> int:
        """Number of ingest calls still running."""
        return len(self._tasks)

    async def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for running ingest calls (e.g. of disconnected clients) to finish."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)


def parse_endpoint(endpoint: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` and ``:port`` = all interfaces accepted) into ``(host, port)``.

    Raises ``ValueError`` when the port is missing or not a number in 0..65535 (0 = pick a free port).
    """
    host, sep, port = endpoint.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"invalid endpoint {endpoint!r}: expected host:port")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)
