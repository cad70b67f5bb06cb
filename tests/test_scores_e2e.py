"""Session and interaction scores end to end: Claude Code captures (both releases) and generated sessions in their
shapes replayed into a running relay, scores delivered to the fake Langfuse; each value is compared with ground truth
computed from the request bodies (``tests/support/scores_truth.py``), never with relay's own figures."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

import aiohttp
import pytest

from relay.model import UsageRecord
from relay.scores.figures import record_cost_usd
from tests.fakes.langfuse import FakeLangfuse
from tests.support.cc_traffic import CCTraffic
from tests.support.expected import events
from tests.support.inproc import replay, running_relay, settle
from tests.support.scores_truth import (
    events_of_bodies,
    interaction_truth,
    scores_settled,
    session_truth,
    truth_of_events,
)

FAST = {"scores": {"session_idle": "600ms", "check_interval": "50ms"}}
SCENARIOS = [
    "protobuf-text",
    "protobuf-text-nobeta",
    "protobuf-tools",
    "json-tools",
    "grpc-tools",
    "protobuf-err529",
    "protobuf-subagent",
    "protobuf-tools-2.1.332",
]


def by_subject(lf: FakeLangfuse, key: str) -> dict[str, dict[str, object]]:
    """subject id → {score name: value} of what Langfuse stores (last body per score id)."""
    out: dict[str, dict[str, object]] = {}
    for s in lf.stored_scores().values():
        if key in s:
            out.setdefault(s[key], {})[s["name"]] = s["value"]
    return out


#: The ledger's money unit: nano-USD once ``UsageRecord.cost_nanos`` exists, micro-USD before; costs in the truth
#: are exact decimals, the ledger rounds each call once to its unit.
LEDGER_UNIT = 1e-9 if "cost_nanos" in UsageRecord.__dataclass_fields__ else 1e-6


def assert_matches(got: dict, want: dict, calls: int = 1) -> None:
    for name, value in want.items():
        if value is None:
            assert name not in got, (name, got)
        elif isinstance(value, str):
            assert got[name] == value, name
        elif name == "cost_usd":
            assert got[name] == pytest.approx(value, abs=max(1e-9, LEDGER_UNIT / 2 * calls)), name
        else:
            assert got[name] == pytest.approx(value, abs=1e-9), name


@pytest.mark.parametrize("scenario", SCENARIOS)
async def test_capture_scores_match_the_request_bodies(tmp_path, scenario):
    async with FakeLangfuse() as lf:
        async with running_relay(tmp_path / "data", lf.base_url, FAST) as relay:
            assert set(await replay(relay, scenario)) == {200}
            await settle(relay)
            await scores_settled(relay)
            view = lf.view()
            ledger_cost = await ledger_costs(relay)
        evs = events(scenario)
        sessions = by_subject(lf, "sessionId")
        truth = session_truth(scenario)
        assert set(sessions) == set(truth)
        for sid, want in truth.items():
            assert_matches(sessions[sid], want, calls=len(evs))
            assert sessions[sid]["cost_usd"] == float(ledger_cost.get(sid, 0)), "session cost = ledger cost"
            for metric in ("lines_changed", "commits", "pull_requests"):
                assert (metric in sessions[sid]) == (metric in want), metric
        traces = by_subject(lf, "traceId")
        prompt_of = {t.id: t.metadata.get("claude_code.prompt_id") for t in view.traces.values()}
        itruth = interaction_truth(evs)
        assert {prompt_of[t] for t in traces} == set(itruth)
        for tid, got in traces.items():
            assert_matches(got, itruth[prompt_of[tid]], calls=len(evs))
            obs = [o for o in view.observations if o.trace_id == tid]
            latency = (max(o.end_ns for o in obs) - min(o.start_ns for o in obs)) / 1e9
            assert got["duration_s"] == pytest.approx(latency, abs=1e-6)
        # every score is typed by a config relay declared once, and fits it
        configs = {c["id"]: c for c in lf.rest.configs_of("project-test")}
        assert len({c["name"] for c in configs.values()}) == len(configs)
        assert all(s["configId"] in configs for s in lf.stored_scores().values())


async def ledger_costs(relay) -> dict:
    """session → exact ledger cost (Decimal USD), read through the LedgerStore interface."""
    out: dict = {}
    async for batch in relay.ledger.scan(0, 2**63 - 1):
        for r in batch:
            out[r.session_id] = out.get(r.session_id, Decimal(0)) + record_cost_usd(r)
    return out


async def _post(session: aiohttp.ClientSession, relay, body: bytes, sent: list[bytes] | None = None) -> None:
    if sent is not None:
        sent.append(body)
    async with session.post(
        f"http://127.0.0.1:{relay.http.port}/v1/logs", data=body, headers={"Content-Type": "application/x-protobuf"}
    ) as r:
        assert r.status == 200


def _tool(t: CCTraffic, decision: str, success: bool | None, source: str = "user_temporary"):
    tuid = f"toolu_{uuid.uuid4().hex[:20]}"
    out = [t.event("tool_decision", tool_use_id=tuid, decision=decision, source=source, tool_name="Bash")]
    if success is not None:
        extra = {} if success else {"error_type": "ShellError", "error": "exit 1"}
        out.append(
            t.event(
                "tool_result",
                tool_use_id=tuid,
                success="true" if success else "false",
                tool_name="Bash",
                duration_ms="12",
                **extra,
            )
        )
    return out


async def test_generated_sessions_rejects_failures_errors_and_a_resume(tmp_path):
    """Sessions the captures lack: rejected and failed tools, API errors with recovery, an abandoned interaction,
    and a ``--continue`` resume of a scored session (its scores are updated in place, never duplicated)."""
    recovered = CCTraffic()
    rejected = CCTraffic()
    resumed = CCTraffic()
    sent: list[bytes] = []

    def interaction(t: CCTraffic, *evs_groups):
        t.prompt = str(uuid.uuid4())
        evs = [t.event("user_prompt", prompt_length="12")]
        for g in evs_groups:
            evs += g if isinstance(g, list) else [g]
        body = t.request(*evs)
        sent.append(body)
        return body

    async with FakeLangfuse() as lf:
        async with running_relay(tmp_path / "data", lf.base_url, FAST) as relay:
            async with aiohttp.ClientSession() as s:
                # recovered: an API error, a failed tool, then success
                await _post(
                    s,
                    relay,
                    interaction(
                        recovered,
                        recovered.api_error(529, "Overloaded"),
                        recovered.api_request(0.0123, ttft_ms=800),
                        _tool(recovered, "accept", False),
                        recovered.api_request(0.0457, ttft_ms=400),
                    ),
                )
                await _post(
                    s,
                    relay,
                    interaction(
                        recovered,
                        recovered.api_request(0.001, ttft_ms=300),
                        _tool(recovered, "accept", True),
                        recovered.api_request(0.002, ttft_ms=200),
                    ),
                )
                # abandoned: two rejected tool uses, the user stops
                await _post(
                    s,
                    relay,
                    interaction(
                        rejected,
                        rejected.api_request(0.5, ttft_ms=1000),
                        _tool(rejected, "accept", True),
                        _tool(rejected, "reject", None),
                        rejected.api_request(0.25, ttft_ms=900),
                        _tool(rejected, "reject", None, "user_reject"),
                    ),
                )
                # clean, scored, then resumed with a failing end
                await _post(s, relay, interaction(resumed, resumed.api_request(0.1, ttft_ms=100)))
                await settle(relay)
                await scores_settled(relay)
                first = by_subject(lf, "sessionId")[resumed.session]
                assert first["outcome"] == "clean" and first["interactions"] == 1
                await _post(
                    s,
                    relay,
                    interaction(
                        resumed,
                        resumed.api_request(0.2, ttft_ms=100),
                        resumed.api_error(500),
                        resumed.api_error(500),
                        resumed.event("api_retries_exhausted", status_code=500, error="Internal server error"),
                    ),
                )
                await settle(relay)
                await scores_settled(relay)
    # ground truth from the request bodies, decoded independently
    sessions = by_subject(lf, "sessionId")
    assert set(sessions) == {recovered.session, rejected.session, resumed.session}
    truth = truth_of_events(events_of_bodies(sent))
    for sid, want in truth.items():
        assert_matches(sessions[sid], want, calls=10)
    itruth = interaction_truth(events_of_bodies(sent))
    traces = by_subject(lf, "traceId")
    prompt_of = {t.id: t.metadata.get("claude_code.prompt_id") for t in lf.view().traces.values()}
    assert len(traces) == len(itruth) == 5
    for tid, got in traces.items():
        assert_matches(got, itruth[prompt_of[tid]], calls=10)
    assert sessions[recovered.session]["outcome"] == "recovered"
    assert sessions[rejected.session]["outcome"] == "abandoned"
    assert sessions[resumed.session]["outcome"] == "failed"
    assert sessions[rejected.session]["tool_accept_rate"] == pytest.approx(1 / 3)
    # re-sent with the same ids: one stored score per (session, name), the resumed session's updated
    ids = [s["id"] for s in lf.scores() if s.get("sessionId") == resumed.session and s["name"] == "interactions"]
    assert len(set(ids)) == 1 and len(ids) == 2
    assert sessions[resumed.session]["interactions"] == 2


def _genai_trace(port: int) -> list:
    """Another agent (OpenTelemetry GenAI semantic conventions, the OTel SDK's own OTLP exporter): one trace with
    two chat calls, one failed; returns the spans as the SDK recorded them."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import Status, StatusCode

    memory = InMemorySpanExporter()
    tp = TracerProvider(resource=Resource.create({"service.name": "my-agent"}))
    tp.add_span_processor(SimpleSpanProcessor(memory))
    tp.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces")))
    tracer = tp.get_tracer("my-agent")
    with tracer.start_as_current_span(
        "invoke_agent researcher",
        attributes={"gen_ai.operation.name": "invoke_agent", "session.id": "sess-genai"},
    ):
        with tracer.start_as_current_span(
            "chat gpt-5",
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "gpt-5",
                "gen_ai.usage.input_tokens": 100,
                "gen_ai.usage.output_tokens": 10,
                "gen_ai.usage.cost": 0.0125,
            },
        ):
            pass
        with tracer.start_as_current_span(
            "chat gpt-5", attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-5"}
        ) as failed:
            failed.set_status(Status(StatusCode.ERROR, "rate limited"))
    tp.shutdown()
    return memory.get_finished_spans()


async def test_genai_trace_scores_are_off_by_default_claude_code_scores_stay(tmp_path):
    """``scores.genai_traces`` off (the default): no three requests per GenAI trace; Claude Code is still scored, and
    a restart does not pick the unscored GenAI traces up as missed ones."""
    off = FAST
    async with FakeLangfuse() as lf:
        for _ in range(2):  # the second start runs the scorer's catch-up over the same ledger
            async with running_relay(tmp_path / "data", lf.base_url, off) as relay:
                if not lf.scores():
                    spans = await asyncio.to_thread(_genai_trace, relay.http.port)
                    await replay(relay, "protobuf-tools")
                await settle(relay)
                await scores_settled(relay)
                genai_records = await relay.spool.db.run(
                    lambda c: c.execute("SELECT COUNT(*) FROM usage_records WHERE source='otel.genai'").fetchone()[0]
                )
                assert genai_records == 2  # the GenAI calls are in the ledger all the same
    genai_trace = format(spans[0].context.trace_id, "032x")
    assert genai_trace not in by_subject(lf, "traceId")
    assert by_subject(lf, "traceId") and by_subject(lf, "sessionId")  # Claude Code's interaction and session


async def test_genai_traces_get_error_rate_cost_and_latency(tmp_path):
    """Another agent's GenAI trace (``_genai_trace``), with ``scores.genai_traces`` on: scores per trace from the
    spans as the SDK recorded them."""
    from opentelemetry.trace import StatusCode

    on = {"scores": {**FAST["scores"], "genai_traces": True}}
    async with FakeLangfuse() as lf:
        async with running_relay(tmp_path / "data", lf.base_url, on) as relay:
            spans = await asyncio.to_thread(_genai_trace, relay.http.port)
            await settle(relay)
            await scores_settled(relay)
    trace_id = format(spans[0].context.trace_id, "032x")
    got = by_subject(lf, "traceId")[trace_id]
    chats = [s for s in spans if s.attributes.get("gen_ai.operation.name") == "chat"]
    failed = [s for s in chats if s.status.status_code == StatusCode.ERROR]
    assert got["error_rate"] == pytest.approx(len(failed) / len(chats))
    assert got["cost_usd"] == pytest.approx(sum(s.attributes.get("gen_ai.usage.cost", 0) for s in chats), abs=1e-9)
    latency = (max(s.end_time for s in spans) - min(s.start_time for s in spans)) / 1e9
    assert got["latency_s"] == pytest.approx(latency, abs=1e-6)
    assert set(got) == {"error_rate", "cost_usd", "latency_s"}
    assert "sess-genai" not in by_subject(lf, "sessionId")  # session scores are Claude Code's
