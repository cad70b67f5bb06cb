"""relay.pipeline.genai: other agents' GenAI-semconv spans → Langfuse observations + ledger records.

Spans are produced by the real OpenTelemetry Python SDK and converted to OTLP protobuf with the OTLP exporter's
encoder, exactly as an agent would send them (Langfuse's attribute mapping,
https://langfuse.com/integrations/native/opentelemetry; OTLP/HTTP, https://opentelemetry.io/docs/specs/otlp/#otlphttp).
"""

from __future__ import annotations

import json

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_to_otlp
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanKind, Status, StatusCode, set_span_in_context

from relay.exporters.langfuse_encode import encode_request
from relay.model import Level, ObservationType, TraceInfo
from relay.otlp.values import attrs_to_dict
from relay.pipeline.context import MappingContext
from relay.pipeline.genai import map_spans, observation_type, usage_details_of
from relay.pipeline.records import iter_spans

SECRET = "sk-ant-api03-SECRETSECRETSECRET"
MESSAGES = json.dumps([{"role": "user", "parts": [{"type": "text", "content": f"deploy with key {SECRET}"}]}])


def _agent_run() -> ExportTraceServiceRequest:
    """invoke_agent → chat (tokens incl. cache) → execute_tool ok + execute_tool failed; user/session on root only."""
    exporter = InMemorySpanExporter()
    resource = Resource.create(
        {"service.name": "acme-agent", "deployment.environment.name": "Staging", "team.id": "core"}
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("acme.agent", "0.3.0")
    with tracer.start_as_current_span("invoke_agent coder", kind=SpanKind.INTERNAL) as root:
        root.set_attributes(
            {
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": "coder",
                "user.id": "alice",
                "session.id": "conv-42",
                "gen_ai.request.model": "claude-sonnet-4-5",
                "input.value": "deploy the service",
            }
        )
        with tracer.start_as_current_span("chat claude-sonnet-4-5", kind=SpanKind.CLIENT) as chat:
            chat.set_attributes(
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": "anthropic",
                    "gen_ai.request.model": "claude-sonnet-4-5",
                    "gen_ai.response.model": "claude-sonnet-4-5-20250929",
                    "gen_ai.request.temperature": 0.2,
                    "gen_ai.usage.input_tokens": 10_000,  # OTel: includes the cache tokens below
                    "gen_ai.usage.output_tokens": 250,
                    "gen_ai.usage.cache_read.input_tokens": 9_000,
                    "gen_ai.usage.cache_creation.input_tokens": 800,
                    "gen_ai.usage.cost": 0.0421,
                    "gen_ai.input.messages": MESSAGES,
                    "gen_ai.output.messages": json.dumps(
                        [{"role": "assistant", "parts": [{"type": "text", "content": "ok"}]}]
                    ),
                }
            )
            chat.add_event("gen_ai.content.prompt", {"gen_ai.prompt": f"use {SECRET}", "index": 0})
        with tracer.start_as_current_span("execute_tool read_file") as tool:
            tool.set_attributes(
                {
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": "read_file",
                    "gen_ai.tool.call.arguments": '{"path": "README.md"}',
                }
            )
        with tracer.start_as_current_span("execute_tool bash") as bad:
            bad.set_attributes(
                {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "bash", "error.type": "ExitCode"}
            )
            bad.set_status(Status(StatusCode.ERROR, "exit code 2"))
    provider.shutdown()
    return sdk_to_otlp(exporter.get_finished_spans())


def _ctx(**kw) -> MappingContext:
    return MappingContext(tenant="acme", redact_patterns=[r"sk-ant-[A-Za-z0-9_-]+"], labels={"org": "acme"}, **kw)


def _map(req=None, ctx=None, known=None):
    views = list(iter_spans(req or _agent_run()))
    mapped = map_spans(views, ctx or _ctx(), known)
    return views, mapped, {o.name: o for o in mapped.observations}


def test_types_model_usage_cost():
    views, mapped, by = _map()
    assert len(mapped.observations) == 4
    assert by["invoke_agent coder"].type == ObservationType.AGENT
    assert by["chat claude-sonnet-4-5"].type == ObservationType.GENERATION
    assert by["execute_tool read_file"].type == ObservationType.TOOL
    chat = by["chat claude-sonnet-4-5"]
    assert chat.model == "claude-sonnet-4-5-20250929"  # response model over request model
    assert chat.usage_details == {
        "input": 200,
        "output": 250,
        "cache_read_input_tokens": 9_000,
        "input_cache_creation_5m": 800,
    }
    assert chat.cost_details == {"total": 0.0421}
    assert chat.model_parameters == {"temperature": 0.2}
    assert all(v.outcome == "forwarded" for v in views)
    # ids, parent, times kept
    root = by["invoke_agent coder"]
    assert root.parent_id is None and chat.parent_id == root.id
    view = next(v for v in views if v.span_id == chat.id)
    assert (chat.start_ns, chat.end_ns, chat.trace_id) == (view.start_ns, view.end_ns, view.trace_id)


def test_trace_level_fields():
    _, mapped, _ = _map()
    t = mapped.trace
    assert (t.user_id, t.session_id, t.name) == ("alice", "conv-42", "invoke_agent coder")
    assert t.environment == "Staging"  # normalised by the encoder
    assert "team.id:core" in t.tags and t.metadata["team.id"] == "core" and t.metadata["relay.org"] == "acme"
    assert t.resource["service.name"] == "acme-agent"


def test_error_level_on_failed_tool():
    _, _, by = _map()
    bad = by["execute_tool bash"]
    assert bad.level == Level.ERROR and bad.status_error and bad.status_message == "exit code 2"
    assert by["execute_tool read_file"].level == Level.DEFAULT


def test_content_redaction_and_promotion():
    _, _, by = _map()
    chat = by["chat claude-sonnet-4-5"]
    assert SECRET not in chat.input and "[REDACTED]" in chat.input
    assert json.loads(chat.input)[0]["role"] == "user"
    assert "gen_ai.input.messages" not in chat.attributes  # promoted, not sent twice
    ((name, _, ev_attrs),) = chat.events
    assert name == "gen_ai.content.prompt" and ev_attrs == {"gen_ai.prompt": "use [REDACTED]", "index": 0}
    assert by["invoke_agent coder"].input == "deploy the service"
    assert by["execute_tool read_file"].input == '{"path": "README.md"}'
    # forwarding off: no content anywhere
    _, _, by = _map(ctx=_ctx(forward_content=False))
    chat = by["chat claude-sonnet-4-5"]
    assert chat.input is None and chat.output is None
    assert not [k for k in chat.attributes if "messages" in k]
    assert chat.events[0][2] == {"index": 0}


def test_usage_records():
    _, mapped, by = _map()
    llm = [u for u in mapped.usage if u.kind == "llm"]
    tools = {u.tool_name: u for u in mapped.usage if u.kind == "tool"}
    assert len(llm) == 1 and set(tools) == {"read_file", "bash"}
    rec, chat = llm[0], by["chat claude-sonnet-4-5"]
    assert rec.key == f"llm:{chat.trace_id}:{chat.id}"
    assert (rec.model, rec.input_tokens, rec.output_tokens) == ("claude-sonnet-4-5-20250929", 200, 250)
    assert (rec.cache_read_tokens, rec.cache_creation_tokens) == (9_000, 800)
    assert rec.cost_nanos == 42_100_000 and rec.cost_source == "reported"
    assert rec.user == "alice" and rec.session_id == "conv-42" and rec.tenant == "acme"
    assert rec.success and rec.duration_ms is not None and rec.duration_ms >= 0
    assert tools["bash"].success is False and tools["bash"].error_class == "ExitCode"
    assert tools["read_file"].success is True


def test_encoded_spans_follow_langfuse_rules():
    """encode → OTLP bytes → decode → apply Langfuse's attribute-mapping precedence by hand."""
    _, mapped, _ = _map()
    body = encode_request([(mapped.trace, mapped.observations)])
    req = ExportTraceServiceRequest.FromString(body)
    spans = [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert len(spans) == 4
    resource = attrs_to_dict(req.resource_spans[0].resource.attributes)

    def langfuse_user(a):  # Langfuse: langfuse.user.id > user.id > …
        return a.get("langfuse.user.id") or a.get("user.id")

    def langfuse_session(a):  # Langfuse: langfuse.session.id > session.id > gen_ai.conversation.id
        return a.get("langfuse.session.id") or a.get("session.id") or a.get("gen_ai.conversation.id")

    def langfuse_env(a):  # Langfuse: span then resource for each key; default "default"
        for key in ("langfuse.environment", "deployment.environment.name", "deployment.environment"):
            if v := a.get(key) or resource.get(key):
                return v
        return "default"

    for s in spans:
        a = attrs_to_dict(s.attributes)
        assert "langfuse.user.id" in a and langfuse_user(a) == "alice"
        assert langfuse_session(a) == "conv-42"
        assert a["langfuse.trace.name"] == "invoke_agent coder"  # v4: trace name only from this attribute
        assert langfuse_env(a) == "staging"
        assert a["langfuse.trace.metadata.team.id"] == "core"
    gen = next(attrs_to_dict(s.attributes) for s in spans if s.name.startswith("chat"))
    assert gen["langfuse.observation.type"] == "generation"
    assert json.loads(gen["langfuse.observation.usage_details"])["input"] == 200
    assert json.loads(gen["langfuse.observation.cost_details"]) == {"total": 0.0421}
    assert not [k for k in gen if k.startswith("gen_ai.usage.")]  # nothing left to re-normalise


def test_explicit_langfuse_attributes_win_and_known_fills_gaps():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("x")
    with tracer.start_as_current_span("parent"):
        pass
    parent = exporter.get_finished_spans()[0]
    late_ctx = set_span_in_context(NonRecordingSpan(parent.context))
    with tracer.start_as_current_span("late child", context=late_ctx) as s:
        s.set_attributes(
            {
                "langfuse.observation.type": "retriever",
                "langfuse.observation.usage_details": '{"input": 3, "output": 4}',
                "gen_ai.usage.input_tokens": 99,
                "langfuse.user.id": "bob",
                "user.id": "ignored",
                "langfuse.trace.tags": '["a", "b"]',
            }
        )
    provider.shutdown()
    child = exporter.get_finished_spans()[1:]
    known = TraceInfo(trace_id=format(parent.context.trace_id, "032x"), name="original", session_id="s-1", tags=["k"])
    _, mapped, by = _map(req=sdk_to_otlp(child), known=known)
    obs = by["late child"]
    assert obs.type == ObservationType.RETRIEVER
    assert obs.usage_details == {"input": 3, "output": 4}
    t = mapped.trace
    assert (t.user_id, t.session_id, t.name) == ("bob", "s-1", "original")  # root absent → known name
    assert t.tags == ["k", "a", "b"]
    assert mapped.usage == []


@pytest.mark.parametrize(
    "attrs, expected",
    [
        ({"gen_ai.operation.name": "embeddings"}, ObservationType.EMBEDDING),
        ({"gen_ai.operation.name": "text_completion"}, ObservationType.GENERATION),
        ({"gen_ai.operation.name": "create_agent"}, ObservationType.AGENT),
        ({"llm.model_name": "gpt-5"}, ObservationType.GENERATION),
        ({"openinference.span.kind": "RETRIEVER"}, ObservationType.RETRIEVER),
        ({"http.method": "GET"}, ObservationType.SPAN),
    ],
)
def test_observation_type(attrs, expected):
    assert observation_type(attrs) == expected


def test_legacy_usage_names_and_anthropic_meaning():
    assert usage_details_of({"gen_ai.usage.prompt_tokens": 7, "gen_ai.usage.completion_tokens": 3}) == {
        "input": 7,
        "output": 3,
    }
    # input smaller than the cache alone can only be Anthropic's meaning (cache excluded): nothing is subtracted
    assert usage_details_of({"gen_ai.usage.input_tokens": 5, "gen_ai.usage.cache_read.input_tokens": 9})["input"] == 5
    assert usage_details_of({"gen_ai.usage.input_tokens": 15, "gen_ai.usage.cache_read.input_tokens": 9})["input"] == 6
    assert usage_details_of({"gen_ai.request.model": "m"}) is None
    # a malformed explicit value passes through untouched (None = do not re-encode)
    assert usage_details_of({"langfuse.observation.usage_details": '{"input": "3"}'}) is None


def _one_trace(*specs: tuple[str, dict]) -> ExportTraceServiceRequest:
    """A root span and children (name, attributes) from the SDK."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    (root_name, root_attrs), *children = specs
    with tracer.start_as_current_span(root_name, attributes=root_attrs):
        for name, attrs in children:
            with tracer.start_as_current_span(name, attributes=attrs):
                pass
    provider.shutdown()
    return sdk_to_otlp(exporter.get_finished_spans())


def test_trace_name_metadata_and_conversation_id_from_any_span():
    req = _one_trace(
        ("root", {"enduser.id": "carol", "langfuse.trace.metadata.ticket": "OPS-1"}),
        (
            "chat",
            {
                "gen_ai.conversation.id": "conv-9",
                "langfuse.trace.name": "triage",
                "langfuse.trace.metadata": '{"ticket": "OPS-2", "repo": "relay"}',
                "langfuse.version": "2",
            },
        ),
    )
    _, mapped, _ = _map(req=req, ctx=MappingContext(release="r1", environment="prod"))
    t = mapped.trace
    assert (t.name, t.user_id, t.session_id, t.release, t.environment, t.version) == (
        "triage",
        "carol",
        "conv-9",
        "r1",
        "prod",
        "2",
    )
    assert t.metadata == {"ticket": "OPS-1", "repo": "relay"}  # root's value wins


def test_existing_langfuse_content_and_cost_kept():
    req = _one_trace(
        (
            "gen",
            {
                "langfuse.observation.input": "q",
                "langfuse.observation.output": "a",
                "langfuse.observation.cost_details": '{"input": 0.25, "output": 0.5}',
                "gen_ai.request.model": "gpt-5",
                "gen_ai.usage.cost": 9.0,
            },
        )
    )
    _, mapped, by = _map(req=req)
    gen = by["gen"]
    assert (gen.type, gen.input, gen.output, gen.model) == (ObservationType.GENERATION, "q", "a", "gpt-5")
    assert gen.cost_details == {"input": 0.25, "output": 0.5}
    (rec,) = mapped.usage
    assert rec.cost_nanos == 750_000_000 and rec.cost_source == "reported"  # total = sum when absent
    _, mapped, _ = _map(req=_one_trace(("gen", {"gen_ai.request.model": "gpt-5"})))
    assert mapped.usage[0].cost_source == "none" and mapped.usage[0].cost_nanos == 0


# ---------------------------------------------------------------------------------------------- counted once


def _pair(*, native_parent: bool, response_id: bool, fail: bool = False) -> ExportTraceServiceRequest:
    """An instrumentor's span and the Anthropic SDK's own span for ONE call (scopes as the real libraries name them),
    the SDK span as the child (create) or as an overlapping sibling (streams)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    outer_t = provider.get_tracer("openinference.instrumentation.anthropic", "3.1.0")
    sdk_t = provider.get_tracer("com.anthropic.sdk.python", "2.17.0")
    native = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude-sonnet-4-5-20250929",
        "gen_ai.usage.input_tokens": 1212,
        "gen_ai.usage.output_tokens": 30,
        "gen_ai.usage.cache_read.input_tokens": 1000,
        "gen_ai.usage.cache_write.input_tokens": 200,
        "http.response.status_code": 500 if fail else 200,
    }
    if response_id:
        native["gen_ai.response.id"] = "msg_01"
    instr = {
        "openinference.span.kind": "LLM",
        "llm.provider": "anthropic",
        "user.id": "alice",
        "session.id": "s-1",
        "llm.model_name": "claude-sonnet-4-5-20250929",
        "llm.token_count.prompt": 1212,
        "llm.token_count.completion": 31,
        "llm.token_count.prompt_details.cache_read": 1000,
    }
    with provider.get_tracer("app").start_as_current_span("agent") as agent:
        with outer_t.start_as_current_span("messages.create", attributes={} if fail else instr) as outer:
            if fail:
                outer.set_attributes({"openinference.span.kind": "LLM", "llm.provider": "anthropic"})
                outer.set_status(Status(StatusCode.ERROR, "500 stand-in failure"))
            ctx = None if native_parent else set_span_in_context(agent)  # a sibling, as for streams
            with sdk_t.start_as_current_span("anthropic.messages.create", context=ctx, attributes=native) as sdk:
                if fail:
                    sdk.set_status(Status(StatusCode.ERROR))
    provider.shutdown()
    return sdk_to_otlp(exporter.get_finished_spans())


@pytest.mark.parametrize("native_parent, response_id", [(True, False), (False, False), (True, True)])
def test_sdk_native_span_and_instrumentor_span_count_once(native_parent, response_id):
    _, mapped, by = _map(req=_pair(native_parent=native_parent, response_id=response_id))
    [rec] = [u for u in mapped.usage if u.kind == "llm"]
    gen, sdk = by["messages.create"], by["anthropic.messages.create"]
    assert gen.type == ObservationType.GENERATION and sdk.type == ObservationType.SPAN
    # the SDK's counts win (it reads the response body; the instrumentor said 31 output and missed the cache write)
    assert gen.usage_details == {
        "input": 12,
        "output": 30,
        "cache_read_input_tokens": 1000,
        "input_cache_creation_5m": 200,
    }
    tokens = (rec.input_tokens, rec.output_tokens, rec.cache_read_tokens, rec.cache_creation_tokens)
    assert tokens == (12, 30, 1000, 200)
    assert sdk.usage_details is None and sdk.cost_details is None and sdk.metadata["relay.counted_in"] == gen.id
    assert not [k for k in sdk.attributes if k.startswith("gen_ai.usage.")]
    assert gen.scope == ("openinference.instrumentation.anthropic", "3.1.0")
    assert sdk.scope == ("com.anthropic.sdk.python", "2.17.0")
    assert (rec.user, rec.session_id) == ("alice", "s-1")
    if response_id:
        assert rec.key == "llm:anthropic:msg_01"


def test_a_failed_pair_is_one_error_generation_and_one_failed_record_with_its_model():
    _, mapped, by = _map(req=_pair(native_parent=True, response_id=False, fail=True))
    [rec] = [u for u in mapped.usage if u.kind == "llm"]
    gen = by["messages.create"]
    assert gen.level == Level.ERROR and gen.model == "claude-sonnet-4-5-20250929"  # from the SDK span
    assert (rec.success, rec.model, rec.status_code, rec.cost_nanos) == (False, "claude-sonnet-4-5-20250929", 500, 0)


def test_the_same_response_in_two_batches_has_one_ledger_key():
    views = list(iter_spans(_pair(native_parent=True, response_id=True)))
    sdk = [v for v in views if v.scope_name.startswith("com.anthropic.sdk")]
    first = map_spans(sdk, _ctx())  # the SDK span alone (its instrumentor span arrives in a later batch)
    second = map_spans(views, _ctx())
    assert {u.key for u in first.usage if u.kind == "llm"} == {u.key for u in second.usage if u.kind == "llm"}


def test_an_errored_call_without_a_model_attribute_takes_it_from_the_span_name():
    req = _one_trace(("chat gpt-4o-mini", {"gen_ai.operation.name": "chat", "error.type": "RateLimitError"}))
    for span in req.resource_spans[0].scope_spans[0].spans:
        span.status.code = 2
    _, mapped, by = _map(req=req)
    gen = by["chat gpt-4o-mini"]
    assert gen.type == ObservationType.GENERATION and gen.level == Level.ERROR and gen.model == "gpt-4o-mini"
    [rec] = mapped.usage
    assert (rec.success, rec.model, rec.error_class) == (False, "gpt-4o-mini", "RateLimitError")


@pytest.mark.parametrize("scope, generation", [("openlit.instrumentation.anthropic", True), ("myapp.routes", False)])
def test_an_errored_span_without_any_attribute_is_a_call_when_its_scope_names_a_provider(scope, generation):
    """OpenLIT 1.45's Anthropic instrumentation leaves a failed call's span with nothing but its name and status."""
    req = _one_trace(("agent run", {}), ("chat claude-sonnet-4-5", {}))
    for ss in req.resource_spans[0].scope_spans:
        ss.scope.name = scope
        for span in ss.spans:
            span.status.code = 2 if span.name.startswith("chat") else 0
    _, mapped, by = _map(req=req)
    gen = by["chat claude-sonnet-4-5"]
    if not generation:  # a span named like a call by a scope that is no LLM instrumentation stays a SPAN
        assert gen.type == ObservationType.SPAN and not mapped.usage
        return
    assert gen.type == ObservationType.GENERATION and gen.level == Level.ERROR and gen.model == "claude-sonnet-4-5"
    [rec] = mapped.usage
    assert (rec.success, rec.model, rec.cost_nanos) == (False, "claude-sonnet-4-5", 0)


def test_zero_cost_with_tokens_is_priced_by_relay_and_langfuse_gets_the_same_figure():
    from relay.usage.pricing import Pricing

    req = _one_trace(
        (
            "chat gpt-4o-mini",
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.usage.input_tokens": 1000,
                "gen_ai.usage.output_tokens": 100,
                "gen_ai.usage.cost": 0,
            },
        )
    )
    _, mapped, by = _map(req=req, ctx=MappingContext(tenant="acme", pricing=Pricing.load()))
    [rec] = mapped.usage
    # gpt-4o-mini by hand: 1000 × $0.15 + 100 × $0.60 per 1M tokens = 210 µ$
    assert (rec.cost_source, rec.cost_nanos) == ("computed", 210_000)
    assert by["chat gpt-4o-mini"].cost_details == {"total": 210_000 / 1e9}
