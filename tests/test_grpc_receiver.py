"""OTLP/gRPC receiver over real loopback sockets: fixture replay through raw method paths, the OpenTelemetry
SDK's gRPC exporters, and the status mapping (INVALID_ARGUMENT, RESOURCE_EXHAUSTED, UNAUTHENTICATED,
UNAVAILABLE + RetryInfo, partial success).

Spec: OTLP spec "OTLP/gRPC" (https://opentelemetry.io/docs/specs/otlp/#otlpgrpc), incl. "Failures" and
"OTLP/gRPC Throttling".
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from relay.auth import TenantResolver
from relay.component import deadline_in
from relay.config import GrpcReceiverConfig
from relay.config_load import RelayConfig
from relay.model import Signal
from relay.otlp.grpc import OtlpGrpcReceiver
from relay.otlp.ingest import IngestRefused, dedup_key
from relay.telemetry import Telemetry
from tests.support.fixtures import load_scenario
from tests.support.otlp_helpers import RESPONSE_TYPES, MemorySink, count_items, sdk_telemetry, spans_request

TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
GOOD = spans_request(b"\1" * 8, b"\2" * 8).SerializeToString()


@dataclass
class Running:
    target: str
    sink: MemorySink
    telemetry: Telemetry
    channel: grpc.aio.Channel
    receiver: OtlpGrpcReceiver

    def method(self, path: str = TRACES) -> grpc.aio.UnaryUnaryMultiCallable:
        return self.channel.unary_unary(path)  # no serializers: raw bytes in and out


@pytest.fixture
async def start_grpc() -> AsyncIterator:
    started: list[tuple[OtlpGrpcReceiver, grpc.aio.Channel]] = []

    async def start(config: RelayConfig | None = None, **grpc_cfg) -> Running:
        sink, telemetry = MemorySink(), Telemetry()
        recv = OtlpGrpcReceiver(
            GrpcReceiverConfig(endpoint="127.0.0.1:0", **grpc_cfg),
            TenantResolver(config or RelayConfig()),
            sink,
            telemetry,
        )
        await recv.start()
        target = f"127.0.0.1:{recv.port}"
        channel = grpc.aio.insecure_channel(target)
        started.append((recv, channel))
        return Running(target, sink, telemetry, channel, recv)

    yield start
    for recv, channel in started:
        await channel.close()
        await recv.shutdown(deadline_in(1.0))


async def test_replay_grpc_fixture(start_grpc):
    srv = await start_grpc()
    reqs = load_scenario("grpc-tools")
    assert reqs and all(r.transport == "grpc" for r in reqs)
    for r in reqs:
        metadata = tuple((k, v) for k, v in r.headers.items() if k not in ("user-agent", "accept-encoding"))
        resp = await srv.method(r.path)(r.body, metadata=metadata, timeout=5)
        assert not RESPONSE_TYPES[r.signal].FromString(resp).HasField("partial_success")
        got = srv.sink.stored[-1]
        assert got.signal.value == r.signal and got.tenant == "default"
        assert got.items == count_items(r.signal, r.body, False) and got.payload == r.body
        assert got.dedup_key == dedup_key("default", Signal(r.signal), r.body)
    assert len(srv.sink.stored) == len(reqs)
    assert (srv.sink.items("logs"), srv.sink.items("metrics"), srv.sink.items("traces")) == (32, 28, 26)
    assert srv.telemetry.sample("otelcol_receiver_accepted_spans_total", {"transport": "grpc"}) == 26
    assert srv.telemetry.sample("otelcol_receiver_requests_total", {"transport": "grpc", "status": "OK"}) == len(reqs)


def sdk_grpc_export(target: str, gzip: bool) -> tuple:
    """Export SDK-made telemetry with the SDK's OTLP/gRPC exporters (blocking; run in a thread)."""
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    spans, logs, metrics = sdk_telemetry()
    kw = {
        "endpoint": target,
        "insecure": True,
        "timeout": 5,
        "compression": grpc.Compression.Gzip if gzip else grpc.Compression.NoCompression,
    }
    return (
        OTLPSpanExporter(**kw).export(spans).name,
        OTLPLogExporter(**kw).export(logs).name,
        OTLPMetricExporter(**kw).export(metrics).name,
    )


@pytest.mark.parametrize("gzip", [False, True], ids=["identity", "gzip"])
async def test_sdk_grpc_exporters(start_grpc, gzip):
    srv = await start_grpc()
    assert await asyncio.to_thread(sdk_grpc_export, srv.target, gzip) == ("SUCCESS", "SUCCESS", "SUCCESS")
    assert (srv.sink.items("traces"), srv.sink.items("logs"), srv.sink.items("metrics")) == (2, 1, 2)


async def test_invalid_argument_on_garbage(start_grpc):
    srv = await start_grpc()
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await srv.method()(b"\xff\xff\xff\xffgarbage", timeout=5)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ExportTraceServiceRequest" in e.value.details()
    assert srv.sink.calls == 0
    await srv.method()(GOOD, timeout=5)
    assert len(srv.sink.stored) == 1


async def test_resource_exhausted_over_the_cap(start_grpc):
    cap = 64 * 1024
    srv = await start_grpc(max_recv_msg_size=cap)
    big = spans_request(*(os.urandom(8) for _ in range(3000))).SerializeToString()
    assert len(big) > cap
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await srv.method()(big, timeout=5)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # compressible: small on the wire, over the cap once decompressed
    zeros = spans_request(*(bytes([1]) * 8 for _ in range(3000))).SerializeToString()
    assert len(zeros) > cap
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await srv.method()(zeros, timeout=5, compression=grpc.Compression.Gzip)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert srv.sink.calls == 0
    await srv.method()(GOOD, timeout=5, compression=grpc.Compression.Gzip)
    assert srv.sink.stored[0].payload == GOOD


async def test_unauthenticated_and_tenant_from_metadata(start_grpc):
    cfg = RelayConfig.model_validate({"tenants": [{"name": "acme", "tokens": ["grpc-token"]}]})
    srv = await start_grpc(cfg)
    for metadata in [(), (("authorization", "Bearer nope"),)]:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await srv.method()(GOOD, metadata=metadata, timeout=5)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert srv.sink.calls == 0
    await srv.method()(GOOD, metadata=(("authorization", "Bearer grpc-token"),), timeout=5)
    assert srv.sink.stored[0].tenant == "acme"


async def test_unavailable_with_retry_info(start_grpc):
    srv = await start_grpc()
    srv.sink.refuse = IngestRefused("shutting down", retry_after=1.5)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await srv.method()(GOOD, timeout=5)
    err = e.value
    assert err.code() == grpc.StatusCode.UNAVAILABLE and "shutting down" in err.details()
    trailing = dict(err.trailing_metadata() or ())
    assert trailing["grpc-retry-pushback-ms"] == "1500"
    st = status_pb2.Status.FromString(trailing["grpc-status-details-bin"])
    info = error_details_pb2.RetryInfo()
    assert st.code == grpc.StatusCode.UNAVAILABLE.value[0] and st.details[0].Unpack(info)
    assert (info.retry_delay.seconds, info.retry_delay.nanos) == (1, 500_000_000)
    assert srv.telemetry.sample("otelcol_receiver_refused_spans_total", {"transport": "grpc"}) == 2
    srv.sink.refuse = None
    await srv.method()(GOOD, timeout=5)
    assert len(srv.sink.stored) == 1


async def test_partial_success_and_duplicates(start_grpc):
    srv = await start_grpc()
    body = spans_request(b"\1" * 8, bytes(8), b"\3" * 8).SerializeToString()
    resp = ExportTraceServiceResponse.FromString(await srv.method()(body, timeout=5))
    assert resp.partial_success.rejected_spans == 1 and "spanId" in resp.partial_success.error_message
    assert srv.sink.stored[0].items == 2
    assert await srv.method()(body, timeout=5) is not None  # byte-identical resend: OK, stored once
    assert len(srv.sink.stored) == 1 and srv.sink.calls == 2
    assert srv.telemetry.sample("relay_receiver_duplicate_requests_total", {"transport": "grpc"}) == 1


async def test_unknown_method_is_unimplemented(start_grpc):
    srv = await start_grpc()
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await srv.method("/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export")(b"", timeout=5)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_stop_finishes_in_flight_calls(start_grpc):
    srv = await start_grpc()
    srv.sink.delay = 0.2
    call = asyncio.ensure_future(srv.method()(GOOD, timeout=5))
    while srv.sink.calls == 0:
        await asyncio.sleep(0.005)
    await srv.receiver.shutdown(deadline_in(2.0))
    assert await call == b"" and len(srv.sink.stored) == 1
