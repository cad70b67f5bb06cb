"""Other agents end to end: the OpenTelemetry SDK's own OTLP exporters (HTTP and gRPC) and the Langfuse SDK send to
a running relay, which forwards to a fake Langfuse; assertions are on what Langfuse would store."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode

from tests.fakes.langfuse import FakeLangfuse
from tests.support.inproc import running_relay, settle


def agent_run(exporter) -> None:
    """A GenAI-semconv agent run: invoke_agent → chat (tokens incl. cache) → execute_tool (failed); user and
    session only on the root span, as most agents do."""
    tp = TracerProvider(resource=Resource.create({"service.name": "my-agent", "team.id": "search"}))
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = tp.get_tracer("my-agent")
    with tracer.start_as_current_span(
        "invoke_agent researcher",
        attributes={"gen_ai.operation.name": "invoke_agent", "user.id": "alice", "session.id": "sess-42"},
    ):
        with tracer.start_as_current_span(
            "chat gpt-5",
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "gpt-5",
                "gen_ai.usage.input_tokens": 1200,
                "gen_ai.usage.output_tokens": 300,
                "gen_ai.usage.cache_read.input_tokens": 1000,
                "gen_ai.usage.cost": 0.0125,
            },
        ):
            pass
        with tracer.start_as_current_span(
            "execute_tool grep", attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "grep"}
        ) as tool:
            tool.set_status(Status(StatusCode.ERROR, "no such file"))
    tp.shutdown()


async def check_picture(lf) -> None:
    view = lf.view()
    assert lf.duplicate_span_ids() == {}
    assert len(view.observations) == 3
    assert {o.user_id for o in view.observations} == {"alice"}  # propagated to every span
    assert {o.session_id for o in view.observations} == {"sess-42"}
    [gen] = view.generations()
    assert gen.model == "gpt-5"
    assert gen.usage_details["input"] == 200 and gen.usage_details["output"] == 300  # cache not double counted
    assert gen.cost_details["total"] == pytest.approx(0.0125)
    [tool] = view.tools()
    assert tool.name == "grep" and tool.level == "ERROR" and tool.status_message == "no such file"
    [agent] = view.by_type("AGENT")
    assert agent.is_root


@pytest.mark.parametrize("transport", ["http", "http-gzip", "grpc", "grpc-gzip"])
async def test_otel_sdk_exporters_as_clients(tmp_path, transport):
    async with FakeLangfuse() as lf:
        async with running_relay(tmp_path / "data", lf.base_url) as relay:
            if transport.startswith("http"):
                from opentelemetry.exporter.otlp.proto.http import Compression
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

                exporter = OTLPSpanExporter(
                    endpoint=f"http://127.0.0.1:{relay.http.port}/v1/traces",
                    compression=Compression.Gzip if "gzip" in transport else Compression.NoCompression,
                )
            else:
                from grpc import Compression
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

                exporter = OTLPSpanExporter(
                    endpoint=f"127.0.0.1:{relay.grpc.port}",
                    insecure=True,
                    compression=Compression.Gzip if "gzip" in transport else None,
                )
            await asyncio.to_thread(agent_run, exporter)
            await settle(relay)
        await check_picture(lf)


async def test_otel_sdk_metrics_are_kept_for_the_ledger_not_sent_to_langfuse(tmp_path):
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    async with FakeLangfuse() as lf:
        async with running_relay(tmp_path / "data", lf.base_url) as relay:

            def emit():
                reader = PeriodicExportingMetricReader(
                    OTLPMetricExporter(endpoint=f"http://127.0.0.1:{relay.http.port}/v1/metrics"),
                    export_interval_millis=60_000,
                )
                mp = MeterProvider(metric_readers=[reader])
                mp.get_meter("agent").create_counter("tokens").add(7, {"type": "input"})
                mp.shutdown()

            await asyncio.to_thread(emit)
            await settle(relay)
            rows = await relay.spool.db.run(lambda c: c.execute("SELECT name, value FROM metric_points").fetchall())
        assert rows == [("tokens", 7.0)]
        assert lf.spans() == []


async def test_langfuse_sdk_can_use_relay_as_its_base_url(tmp_path):
    from langfuse import Langfuse

    async with FakeLangfuse() as lf:
        async with running_relay(tmp_path / "data", lf.base_url) as relay:

            def use_sdk():
                client = Langfuse(
                    public_key="pk-lf-app",
                    secret_key="sk-lf-app",
                    base_url=f"http://127.0.0.1:{relay.http.port}",
                    flush_interval=0.1,
                )
                with client.start_as_current_observation(
                    name="answer",
                    as_type="generation",
                    model="claude-sonnet-5",
                    usage_details={"input": 10, "output": 5},
                    cost_details={"total": 0.001},
                ):
                    client.update_current_span(output="done")
                client.flush()
                client.shutdown()

            await asyncio.to_thread(use_sdk)
            await settle(relay)
        [gen] = lf.view().generations()
        assert gen.name == "answer" and gen.model == "claude-sonnet-5"
        assert gen.usage_details["input"] == 10 and gen.cost_details["total"] == pytest.approx(0.001)
