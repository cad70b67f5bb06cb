"""OTLP/HTTP receiver (aiohttp): ``POST /v1/{traces,metrics,logs}`` in protobuf or JSON.

Spec: OTLP spec "OTLP/HTTP" (https://opentelemetry.io/docs/specs/otlp/#otlphttp), incl. "OTLP/HTTP Response",
"Failures" and "OTLP/HTTP Throttling" (#otlphttp-response, #failures-1, #otlphttp-throttling).

| Situation | Answer |
|---|---|
| stored, duplicate | 200 ``Export*ServiceResponse`` (``partial_success`` when items were rejected) |
| unsupported ``Content-Type`` | 415 (text) |
| missing/bad credentials | 401 ``Status`` UNAUTHENTICATED, nothing read or stored |
| body (on the wire or decompressed) over ``max_request_body_size`` | 413 ``Status`` RESOURCE_EXHAUSTED |
| unknown ``Content-Encoding``, corrupt compression, undecodable message | 400 ``Status`` INVALID_ARGUMENT |
| sink refused / failed | 503 + ``Retry-After`` (integer seconds) + ``Status`` UNAVAILABLE with ``RetryInfo`` |
| tenant over its rate limit | 429 + ``Retry-After`` + ``Status`` RESOURCE_EXHAUSTED with ``RetryInfo`` |
| other method on an OTLP path / unknown path | 405 / 404 (aiohttp router) |

The ack path awaits nothing but the body read and the ingest call; protobuf is decoded on the event loop (upb, a
few µs per span). OTLP/JSON bodies of ``JSON_OFF_LOOP_BYTES`` or more are decoded in the receiver's one JSON thread
(~25 µs per span, ~13 ms for a 512-span request), so the loop keeps answering other requests meanwhile; one
thread, so decoded JSON trees are held one at a time, as on the loop. Requests with no items are answered with
success without calling the sink.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from google.protobuf.duration_pb2 import Duration
from google.rpc import code_pb2, error_details_pb2

from relay.auth import TenantResolver, Unauthorized
from relay.component import Component, remaining
from relay.config import HttpReceiverConfig
from relay.model import Signal
from relay.otlp.codec import (
    CodecError,
    Format,
    TooLarge,
    ValidatedRequest,
    decompress,
    export_response,
    parse_content_type,
    parse_export,
    status_message,
)
from relay.otlp.ingest import Ingest
from relay.otlp.receiver import InFlight, IngestGate, SubmitStatus, parse_endpoint
from relay.redaction import Redactor
from relay.telemetry import Telemetry
from relay.tls import serve

__all__ = ["OtlpHttpReceiver", "build_http_app", "LANGFUSE_TRACES_PATH"]

log = logging.getLogger(__name__)

#: Langfuse's OTLP traces endpoint, served too so Langfuse SDKs can use relay as their base URL.
LANGFUSE_TRACES_PATH = "/api/public/otel/v1/traces"
#: Decompressed OTLP/JSON bodies from this size on (bytes; ~40 GenAI spans, ~1 ms to decode) are decoded off the
#: event loop; smaller ones cost less than the thread hop.
JSON_OFF_LOOP_BYTES = 64 * 1024
_UNSUPPORTED_TYPE = "415 unsupported media type, supported: application/x-protobuf, application/json"
_GATE_KEY = web.AppKey("relay_otlp_http_gate", IngestGate)


class _Handler:
    def __init__(self, config: HttpReceiverConfig, resolver: TenantResolver, gate: IngestGate):
        self._cap = config.max_request_body_size
        self._resolver = resolver
        self._gate = gate
        self._json_thread: ThreadPoolExecutor | None = None

    async def _parse_apart(self, signal: Signal, raw: bytes, fmt: Format) -> ValidatedRequest:
        """``parse_export`` in the JSON thread (started by the first big JSON request)."""
        if self._json_thread is None:
            self._json_thread = ThreadPoolExecutor(1, thread_name_prefix="relay-otlp-json")
        return await asyncio.get_running_loop().run_in_executor(self._json_thread, parse_export, signal, raw, fmt)

    async def close(self, _app: web.Application | None = None) -> None:
        """Stop the JSON thread (aiohttp ``on_cleanup``); a decode still running finishes in the background."""
        if self._json_thread is not None:
            self._json_thread.shutdown(wait=False)
            self._json_thread = None

    def route(self, signal: Signal) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            return await self.handle(request, signal)

        return handler

    async def handle(self, request: web.Request, signal: Signal) -> web.StreamResponse:
        started = time.perf_counter()
        fmt = parse_content_type(request.headers.get("Content-Type"))
        if fmt is None:
            self._gate.finish(signal, "415", started)
            return web.Response(status=415, text=_UNSUPPORTED_TYPE)
        try:
            tenant = self._resolver.resolve(request.headers, request.remote)
        except Unauthorized as e:
            return self._error(
                signal,
                fmt,
                started,
                401,
                code_pb2.UNAUTHENTICATED,
                e.message,
                headers={"WWW-Authenticate": 'Bearer realm="relay"'},
            )
        try:
            body = await self._read_body(request)
            raw = decompress(body, request.headers.get("Content-Encoding"), self._cap)
            del body
            if fmt is Format.PROTOBUF or len(raw) < JSON_OFF_LOOP_BYTES:  # on the loop: no extra await
                req = parse_export(signal, raw, fmt)
            else:
                req = await self._parse_apart(signal, raw, fmt)
        except TooLarge as e:
            log.info("OTLP/HTTP %s request of tenant %s refused with 413: %s", signal.value, tenant, e.message)
            return self._error(signal, fmt, started, 413, code_pb2.RESOURCE_EXHAUSTED, e.message)
        except CodecError as e:  # bad input: one log line, no traceback, the reason in the body
            log.info("OTLP/HTTP %s request of tenant %s refused with 400: %s", signal.value, tenant, e.message)
            return self._error(signal, fmt, started, 400, code_pb2.INVALID_ARGUMENT, e.message, field=e.field)
        except (ConnectionError, RequestPayloadError) as e:
            # The client vanished or broke the framing before the body was complete: nothing to keep. The
            # answer is usually undeliverable; returning (not raising) keeps aiohttp from logging a traceback.
            log.debug("OTLP/HTTP body read aborted: %s", e)
            return self._error(signal, fmt, started, 400, code_pb2.INVALID_ARGUMENT, f"incomplete request body: {e}")
        await self._gate.count_rejected(tenant, req)
        if req.items:
            result = await self._gate.submit(tenant, raw, req)
            if result.status in (SubmitStatus.THROTTLED, SubmitStatus.REFUSED, SubmitStatus.FAILED):
                throttled = result.status is SubmitStatus.THROTTLED
                seconds = max(1, math.ceil(result.retry_after))
                info = error_details_pb2.RetryInfo(retry_delay=Duration(seconds=seconds))
                return self._error(
                    signal,
                    fmt,
                    started,
                    429 if throttled else 503,
                    code_pb2.RESOURCE_EXHAUSTED if throttled else code_pb2.UNAVAILABLE,
                    (
                        f"rate limit of this tenant exceeded: {result.reason}"
                        if throttled
                        else f"relay cannot take data now: {result.reason}"
                    ),
                    headers={"Retry-After": str(seconds)},
                    details=(info,),
                )
        self._gate.finish(signal, "200", started)
        return web.Response(
            status=200,
            body=export_response(signal, fmt, req.rejected, req.error_message),
            headers={"Content-Type": fmt.value},
        )

    async def _read_body(self, request: web.Request) -> bytes:
        length = request.content_length
        if length is not None and length > self._cap:
            raise TooLarge(f"request body of {length} bytes is over the limit of {self._cap} bytes")
        buf = bytearray()
        while chunk := await request.content.readany():
            if len(buf) + len(chunk) > self._cap:
                raise TooLarge(f"request body is over the limit of {self._cap} bytes")
            buf += chunk
        return bytes(buf)

    def _error(
        self,
        signal: Signal,
        fmt: Format,
        started: float,
        status: int,
        code: int,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        details: tuple = (),
    ) -> web.Response:
        self._gate.finish(signal, str(status), started)
        body = status_message(fmt, code, message, field=field, details=details)
        return web.Response(status=status, body=body, headers={"Content-Type": fmt.value, **(headers or {})})


def build_http_app(
    config: HttpReceiverConfig,
    resolver: TenantResolver,
    ingest: Ingest,
    telemetry: Telemetry,
    redactor: Redactor | None = None,
    in_flight: InFlight | None = None,
) -> web.Application:
    """The aiohttp application serving the OTLP/HTTP routes.

    **Run it with ``auto_decompress=False``** (``web.AppRunner(app, auto_decompress=False)``): relay decompresses
    bodies itself, with the size cap; :class:`OtlpHttpReceiver` does this for you. Routes: ``POST /v1/traces``,
    ``/v1/metrics``, ``/v1/logs`` and, when ``config.langfuse_compatible_path``, ``POST
    /api/public/otel/v1/traces``. ``redactor`` masks secrets before the data is stored; ``in_flight`` counts the
    requests being stored (shared with the gRPC receiver; the pipeline lets them through first).
    """
    gate = IngestGate(ingest, telemetry, "http", redactor, in_flight)
    handler = _Handler(config, resolver, gate)
    app = web.Application(client_max_size=config.max_request_body_size + 1)
    app[_GATE_KEY] = gate
    app.on_cleanup.append(handler.close)
    for signal in Signal:
        app.router.add_post(f"/v1/{signal.value}", handler.route(signal))
    if config.langfuse_compatible_path:
        app.router.add_post(LANGFUSE_TRACES_PATH, handler.route(Signal.TRACES))
    return app


class OtlpHttpReceiver(Component):
    """The OTLP/HTTP server: ``await start()`` binds ``config.endpoint``; ``await stop()`` shuts it down.

    ``port`` is the bound port (useful with ``endpoint: 127.0.0.1:0``). ``access_log`` is off by default
    (the ack path stays cheap; request counts are in :class:`~relay.telemetry.Telemetry`).
    """

    name = "OTLP/HTTP receiver"

    def __init__(
        self,
        config: HttpReceiverConfig,
        resolver: TenantResolver,
        ingest: Ingest,
        telemetry: Telemetry,
        *,
        access_log: logging.Logger | None = None,
        shutdown_timeout: float = 5.0,
        redactor: Redactor | None = None,
        in_flight: InFlight | None = None,
    ):
        self.config = config
        self.shutdown_timeout = shutdown_timeout
        self.app = build_http_app(config, resolver, ingest, telemetry, redactor, in_flight)
        self._access_log = access_log
        self._runner: web.AppRunner | None = None
        self.host, self.port = parse_endpoint(config.endpoint)

    async def start(self) -> None:
        """Bind and start serving (TLS/mTLS with ``config.tls``). Raises ``OSError`` when the address is in use or
        not available, or the TLS files cannot be read (``ssl.SSLError`` is an ``OSError``)."""
        runner = web.AppRunner(
            self.app,
            auto_decompress=False,
            access_log=self._access_log,
            handle_signals=False,
            shutdown_timeout=self.shutdown_timeout,
        )
        self.port = await serve(runner, self.host, self.port, self.config.tls)
        self._runner = runner
        log.info("OTLP/HTTP receiver listening on %s:%d%s", self.host, self.port, " (TLS)" if self.config.tls else "")

    async def shutdown(self, deadline: float) -> None:
        """Stop accepting connections, give in-flight requests up to ``shutdown_timeout`` seconds, then wait until
        ``deadline`` for ingest calls of clients that already disconnected."""
        if self._runner is None:
            return
        runner, self._runner = self._runner, None
        await runner.cleanup()
        await self.app[_GATE_KEY].drain(remaining(deadline))
