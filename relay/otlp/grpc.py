"""OTLP/gRPC receiver (``grpc.aio``): the unary ``Export`` methods of the three OTLP collector services.

Spec: OTLP spec "OTLP/gRPC" (https://opentelemetry.io/docs/specs/otlp/#otlpgrpc), incl. "Failures" and
"OTLP/gRPC Throttling" (https://opentelemetry.io/docs/specs/otlp/#failures, #otlpgrpc-throttling).
Methods are registered with generic handlers that pass the raw request bytes through (no deserializer), so
:mod:`relay.otlp.codec` validates exactly as for HTTP. gRPC itself handles ``grpc-encoding: gzip`` and
enforces ``max_recv_msg_size`` on the (decompressed) message, answering RESOURCE_EXHAUSTED.

| Situation | Status |
|---|---|
| stored, duplicate | OK + ``Export*ServiceResponse`` (``partial_success`` when items were rejected) |
| undecodable message | INVALID_ARGUMENT (+ ``BadRequest`` in ``grpc-status-details-bin`` if a field is known) |
| message over the cap | RESOURCE_EXHAUSTED (by gRPC, no RetryInfo: not retryable) |
| missing/bad credentials | UNAUTHENTICATED, nothing stored |
| sink refused / failed | UNAVAILABLE + trailing ``grpc-retry-pushback-ms`` and ``google.rpc.RetryInfo`` |
| tenant over its rate limit | RESOURCE_EXHAUSTED + ``RetryInfo`` (retryable because RetryInfo is attached) |
"""

from __future__ import annotations

import logging
import time

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from relay.auth import TenantResolver, Unauthorized, grpc_peer_host
from relay.component import Component, remaining
from relay.config import GrpcReceiverConfig
from relay.model import Signal
from relay.otlp.codec import CodecError, Format, export_response, parse_export
from relay.otlp.ingest import Ingest
from relay.otlp.receiver import InFlight, IngestGate, SubmitStatus, parse_endpoint
from relay.redaction import Redactor
from relay.telemetry import Telemetry
from relay.tls import ReloadingServerTLS

__all__ = ["OtlpGrpcReceiver", "SERVICES"]

log = logging.getLogger(__name__)

#: Fully-qualified gRPC service name per signal (method ``Export``).
SERVICES: dict[Signal, str] = {
    Signal.TRACES: "opentelemetry.proto.collector.trace.v1.TraceService",
    Signal.METRICS: "opentelemetry.proto.collector.metrics.v1.MetricsService",
    Signal.LOGS: "opentelemetry.proto.collector.logs.v1.LogsService",
}


class OtlpGrpcReceiver(Component):
    """The OTLP/gRPC server: ``await start()`` binds ``config.endpoint`` (TLS/mTLS with ``config.tls``, else
    plaintext), ``await stop(grace)`` ends it.

    ``port`` is the bound port after ``start()`` (useful with ``endpoint: 127.0.0.1:0``).
    """

    name = "OTLP/gRPC receiver"

    def __init__(
        self,
        config: GrpcReceiverConfig,
        resolver: TenantResolver,
        ingest: Ingest,
        telemetry: Telemetry,
        *,
        redactor: Redactor | None = None,
        in_flight: InFlight | None = None,
    ):
        self.config = config
        self._resolver = resolver
        self._gate = IngestGate(ingest, telemetry, "grpc", redactor, in_flight)
        self._server: grpc.aio.Server | None = None
        self.host, self.port = parse_endpoint(config.endpoint)

    async def start(self) -> None:
        """Create the ``grpc.aio`` server on the running loop, bind and start it.

        Raises ``RuntimeError`` when the endpoint cannot be bound.
        """
        cap = self.config.max_recv_msg_size
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", cap),
                ("grpc.max_send_message_length", 4 * 2**20),
            ]
        )
        handlers = [
            grpc.method_handlers_generic_handler(
                service, {"Export": grpc.unary_unary_rpc_method_handler(self._method(signal))}
            )
            for signal, service in SERVICES.items()
        ]
        server.add_generic_rpc_handlers(handlers)
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.config.tls:
            port = server.add_secure_port(f"{host}:{self.port}", ReloadingServerTLS(self.config.tls).grpc_credentials())
        else:
            port = server.add_insecure_port(f"{host}:{self.port}")
        if port == 0:
            raise RuntimeError(f"cannot bind the OTLP/gRPC receiver to {self.config.endpoint}")
        await server.start()
        self._server, self.port = server, port
        log.info("OTLP/gRPC receiver listening on %s:%d%s", self.host, self.port, " (TLS)" if self.config.tls else "")

    async def shutdown(self, deadline: float) -> None:
        """Stop accepting calls, let in-flight calls finish until ``deadline``, then wait (until ``deadline``) for
        ingest calls whose client already went away."""
        if self._server is None:
            return
        server, self._server = self._server, None
        await server.stop(remaining(deadline))
        await self._gate.drain(remaining(deadline))

    def _method(self, signal: Signal):
        async def export(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return await self._export(signal, request, context)

        return export

    async def _export(self, signal: Signal, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        started = time.perf_counter()
        metadata = {m.key: m.value for m in (context.invocation_metadata() or ()) if isinstance(m.value, str)}
        try:
            tenant = self._resolver.resolve(metadata, grpc_peer_host(context.peer()))
        except Unauthorized as e:
            await self._abort(context, signal, started, grpc.StatusCode.UNAUTHENTICATED, e.message)
        try:
            req = parse_export(signal, request, Format.PROTOBUF)
        except CodecError as e:  # bad input: one log line, no traceback, the reason in the status
            log.info(
                "OTLP/gRPC %s request of tenant %s refused with INVALID_ARGUMENT: %s", signal.value, tenant, e.message
            )
            details: tuple[Message, ...] = ()
            if e.field:
                bad = error_details_pb2.BadRequest()
                bad.field_violations.add(field=e.field, description=e.message)
                details = (bad,)
            await self._abort(context, signal, started, grpc.StatusCode.INVALID_ARGUMENT, e.message, details)
        await self._gate.count_rejected(tenant, req)
        if req.items:
            result = await self._gate.submit(tenant, request, req)
            if result.status in (SubmitStatus.REFUSED, SubmitStatus.FAILED, SubmitStatus.THROTTLED):
                delay = max(result.retry_after, 0.001)
                info = error_details_pb2.RetryInfo(
                    retry_delay=Duration(seconds=int(delay), nanos=int((delay - int(delay)) * 1e9))
                )
                if result.status is SubmitStatus.THROTTLED:
                    code, text = grpc.StatusCode.RESOURCE_EXHAUSTED, "rate limit of this tenant exceeded"
                else:
                    code, text = grpc.StatusCode.UNAVAILABLE, "relay cannot take data now"
                await self._abort(
                    context, signal, started, code, f"{text}: {result.reason}", (info,), pushback_ms=int(delay * 1000)
                )
        self._gate.finish(signal, grpc.StatusCode.OK.name, started)
        return export_response(signal, Format.PROTOBUF, req.rejected, req.error_message)

    async def _abort(
        self,
        context: grpc.aio.ServicerContext,
        signal: Signal,
        started: float,
        code: grpc.StatusCode,
        message: str,
        details: tuple[Message, ...] = (),
        *,
        pushback_ms: int | None = None,
    ) -> None:
        """Count the request and end the call with ``code``; raises (``context.abort`` never returns)."""
        self._gate.finish(signal, code.name, started)
        trailing: list[tuple[str, str | bytes]] = []
        if pushback_ms is not None:
            trailing.append(("grpc-retry-pushback-ms", str(pushback_ms)))
        if details:
            st = status_pb2.Status(code=code.value[0], message=message)
            for d in details:
                st.details.add().Pack(d)
            trailing.append(("grpc-status-details-bin", st.SerializeToString()))
        await context.abort(code, message, trailing_metadata=tuple(trailing))
