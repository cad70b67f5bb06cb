"""Golden tests of the Claude Code interaction mapper (``relay.pipeline.claude_code``) on the captured fixtures.

Every scenario is decoded into record views, grouped the way the pipeline groups them (trace id, else
``prompt.id``) and mapped. Expectations are computed from the fixture events themselves where practical; the
"nobeta" variants strip spans and trace/span ids from the log records, which is what Claude Code sends without
``CLAUDE_CODE_ENHANCED_TELEMETRY_BETA`` (observed in Claude Code's exports, ``tests/fixtures/claude-code/``).
"""

from __future__ import annotations

import base64
import copy
import gzip
import json
import math
import random
from dataclasses import asdict, replace

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from relay.model import Level, Observation, ObservationType, TraceInfo
from relay.pipeline.claude_code import GENERATION_NAME, ROOT_NAME, TRACE_NAME, map_interaction
from relay.pipeline.context import MappedTrace, MappingContext
from relay.pipeline.records import LogView, SpanView, iter_logs, iter_spans
from tests.support.fixtures import load_scenario

USAGE_KEYS = {"input", "output", "cache_read_input_tokens", "input_cache_creation_5m", "input_cache_creation_1h"}
TOOL_SCENARIOS = ["protobuf-tools", "json-tools", "grpc-tools"]
ALL_SCENARIOS = [
    "protobuf-text",
    "protobuf-text-nobeta",
    *TOOL_SCENARIOS,
    "protobuf-gzip",
    "protobuf-err529",
    "protobuf-subagent",
    "protobuf-receiver-503",
]


# --- decoding and grouping (what the receiver and the assembler do) -----------------------------------------------


def _hex_ids_to_b64(node):
    if isinstance(node, dict):
        return {
            k: (
                base64.b64encode(bytes.fromhex(v)).decode()
                if k in ("traceId", "spanId", "parentSpanId") and isinstance(v, str)
                else _hex_ids_to_b64(v)
            )
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_hex_ids_to_b64(x) for x in node]
    return node


def _decode(req, cls):
    body = gzip.decompress(req.body) if req.content_encoding == "gzip" else req.body
    msg = cls()
    if "json" in req.content_type:
        json_format.ParseDict(_hex_ids_to_b64(json.loads(body)), msg, ignore_unknown_fields=True)
    else:
        msg.ParseFromString(body)
    return msg


def scenario_records(name: str) -> tuple[list[LogView], list[SpanView]]:
    """All log records and spans of a scenario, in arrival order."""
    logs: list[LogView] = []
    spans: list[SpanView] = []
    for i, req in enumerate(load_scenario(name)):
        if req.signal == "logs":
            logs.extend(iter_logs(_decode(req, ExportLogsServiceRequest), seq=i))
        elif req.signal == "traces":
            spans.extend(iter_spans(_decode(req, ExportTraceServiceRequest), seq=i))
    return logs, spans


def group(logs: list[LogView], spans: list[SpanView]) -> dict[str, tuple[list[LogView], list[SpanView]]]:
    """Records grouped by trace id, else ``prompt.id`` (records with neither belong to no interaction)."""
    out: dict[str, tuple[list[LogView], list[SpanView]]] = {}
    for v in logs:
        key = v.trace_id or v.attrs.get("prompt.id")
        if key:
            out.setdefault(key, ([], []))[0].append(v)
    for s in spans:
        out.setdefault(s.trace_id, ([], []))[1].append(s)
    return out


def strip_beta(logs: list[LogView]) -> list[LogView]:
    """Copies of the log records as Claude Code sends them without the traces beta: no trace/span ids."""
    return [replace(copy.deepcopy(v), trace_id=None, span_id=None, outcome=None) for v in logs]


def map_all(logs, spans, ctx: MappingContext | None = None) -> list[MappedTrace]:
    """Map every interaction of a record set, ordered by trace start."""
    ctx = ctx or MappingContext()
    results = [map_interaction(lg, sp, ctx) for lg, sp in group(logs, spans).values()]
    results = [r for r in results if r.trace is not None]
    return sorted(results, key=lambda r: r.observations[0].start_ns)


def events(logs: list[LogView], name: str) -> list[LogView]:
    """Unique events of one name (the 503 scenario holds every batch twice)."""
    seen, out = set(), []
    for v in logs:
        key = (v.attrs.get("session.id"), v.attrs.get("event.sequence"), v.time_ns)
        if v.event_name == name and key not in seen:
            seen.add(key)
            out.append(v)
    return out


def obs_of(results: list[MappedTrace], type_: ObservationType | None = None) -> list[Observation]:
    return [o for r in results for o in r.observations if type_ is None or o.type == type_]


def generations(results, ok: bool = True) -> list[Observation]:
    return [o for o in obs_of(results, ObservationType.GENERATION) if (o.level != Level.ERROR) == ok]


def picture(results: list[MappedTrace]) -> list[tuple]:
    """The mode-independent Langfuse picture: everything but ids, times and beta-only data (metadata such as
    ``stop_reason``, and TOOL output, which only the beta's ``tool.output`` span event carries)."""
    out = []
    for r in results:
        by_id = {o.id: o for o in r.observations}
        for o in r.observations:
            parent = by_id.get(o.parent_id)
            out.append(
                (
                    r.trace.name,
                    o.type.value,
                    o.name,
                    o.level.value,
                    o.status_message,
                    o.model,
                    json.dumps(o.usage_details, sort_keys=True),
                    json.dumps(o.cost_details),
                    o.metadata.get("request_id"),
                    o.metadata.get("tool_use_id"),
                    (parent.type.value, parent.name) if parent else None,
                    str(o.input),
                    None if o.type == ObservationType.TOOL else str(o.output),
                )
            )
    return sorted(out)


def ledger(results: list[MappedTrace]) -> list[tuple]:
    return sorted(
        (
            u.key,
            u.kind,
            u.model,
            u.tool_name,
            u.input_tokens,
            u.output_tokens,
            u.cache_read_tokens,
            u.cache_creation_tokens,
            u.cache_creation_5m_tokens,
            u.cache_creation_1h_tokens,
            u.cost_nanos,
            u.cost_source,
            u.success,
            u.error_class,
            u.decision,
            u.decision_source,
            u.agent,
            u.user,
            u.session_id,
            u.prompt_id,
        )
        for r in results
        for u in r.usage
    )


# --- every scenario ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", ALL_SCENARIOS)
def test_every_scenario_maps_generations_tools_and_usage_from_events(scenario):
    logs, spans = scenario_records(scenario)
    results = map_all(logs, spans)
    requests, results_ev = events(logs, "api_request"), events(logs, "tool_result")
    prompts = {v.attrs["prompt.id"] for v in events(logs, "user_prompt")}
    assert len(results) == len(prompts)
    for r in results:
        assert r.trace.name == TRACE_NAME
        root = r.observations[0]
        assert (root.type, root.name, root.parent_id) == (ObservationType.AGENT, ROOT_NAME, None)
        assert sum(o.parent_id is None for o in r.observations) == 1
        ids = {o.id for o in r.observations}
        assert len(ids) == len(r.observations)
        assert all(o.parent_id in ids for o in r.observations[1:])
        assert all(len(o.id) == 16 and o.trace_id == r.trace.trace_id for o in r.observations)
    gens = generations(results)
    assert len(gens) == len(requests)
    by_rid = {g.metadata["request_id"]: g for g in gens}
    for ev in requests:
        a = ev.attrs
        g = by_rid[a["request_id"]]
        assert g.name == GENERATION_NAME and g.model == a["model"]
        assert set(g.usage_details) == USAGE_KEYS
        assert g.usage_details == {
            "input": a["input_tokens"],
            "output": a["output_tokens"],
            "cache_read_input_tokens": a["cache_read_tokens"],
            "input_cache_creation_5m": a["cache_creation_5m_tokens"],
            "input_cache_creation_1h": a["cache_creation_1h_tokens"],
        }
        assert g.cost_details["total"] == pytest.approx(
            float(a["cost_usd"]), abs=1e-9
        )  # the double, not rounded micros
        assert g.completion_start_ns is not None and g.start_ns <= g.completion_start_ns <= g.end_ns
    tools = obs_of(results, ObservationType.TOOL)
    assert [t.name for t in sorted(tools, key=lambda t: t.start_ns)] == [v.attrs["tool_name"] for v in results_ev]
    usage = [u for r in results for u in r.usage]
    assert sorted(u.key for u in usage if u.kind == "llm" and u.success) == sorted(
        "llm:" + v.attrs["request_id"] for v in requests
    )
    # nano-USD from the doubles Claude Code sent (its cost_usd_micros are rounded to whole micro-dollars)
    for u in usage:
        if u.kind == "llm" and u.success:
            v = next(v for v in requests if v.attrs.get("request_id") == u.key.removeprefix("llm:"))
            assert abs(u.cost_nanos - float(v.attrs["cost_usd"]) * 1e9) <= 0.5
    assert abs(sum(u.cost_nanos for u in usage) - math.fsum(float(v.attrs["cost_usd"]) for v in requests) * 1e9) <= 1
    assert sorted(u.key for u in usage if u.kind == "tool") == sorted(
        "tool:" + v.attrs["tool_use_id"] for v in results_ev
    )
    grouped = [v for lg, sp in group(logs, spans).values() for v in (*lg, *sp)]
    assert all(v.outcome in ("forwarded", "filtered") for v in grouped)
    assert all(v.outcome == "filtered" for v in grouped if getattr(v, "event_name", None) == "retention_sweep")
    forwarded_spans = {s.span_id for s in spans if s.outcome == "forwarded"}
    assert forwarded_spans == {s.span_id for s in spans}  # each span once (the 503 scenario holds them twice)


@pytest.mark.parametrize(
    "scenario",
    [
        "protobuf-text",
        "protobuf-tools",
        "json-tools",
        "grpc-tools",
        "protobuf-err529",
        "protobuf-subagent",
        "protobuf-gzip",
    ],
)
def test_beta_and_nobeta_give_the_same_picture(scenario):
    logs, spans = scenario_records(scenario)
    beta, nobeta = map_all(logs, spans), map_all(strip_beta(logs), [])
    assert picture(beta) == picture(nobeta)
    assert ledger(beta) == ledger(nobeta)
    assert [r.trace.name for r in beta] == [r.trace.name for r in nobeta]
    assert [(r.trace.session_id, r.trace.user_id, r.trace.tags) for r in beta] == [
        (r.trace.session_id, r.trace.user_id, r.trace.tags) for r in nobeta
    ]


def test_ids_derive_from_claude_code_ids_so_event_and_span_of_a_call_share_one():
    logs, spans = scenario_records("protobuf-tools")
    [beta] = map_all(logs, spans)
    [nobeta] = map_all(strip_beta(logs), [])
    interaction = next(s for s in spans if s.name == "claude_code.interaction")
    assert beta.trace.trace_id == interaction.trace_id
    assert beta.observations[0].id == interaction.span_id
    assert len(nobeta.trace.trace_id) == 32 and nobeta.trace.trace_id != beta.trace.trace_id

    # generations and tools: ids come from request_id / tool_use_id, identical with and without spans, so an
    # api_request event and its llm_request span mapped in different calls still give one observation
    def calls(r):
        return {o.id for o in r.observations[1:]}

    assert calls(beta) == calls(nobeta)
    [spans_only] = map_all([], spans)
    assert {o.id for o in spans_only.observations if o.type.value in ("generation", "tool")} <= calls(beta)
    # beta: the helper spans are folded into their TOOL observation, never emitted
    helpers = {s.span_id for s in spans if s.name.startswith("claude_code.tool.")}
    assert not helpers & {o.id for o in beta.observations}
    bash = next(o for o in beta.observations if o.name == "Bash")
    assert {"blocked_on_user_ms", "execution_ms", "decision", "decision_source"} <= set(bash.metadata)
    assert bash.attributes.get("bash_argv0") == "echo" and "user.id" not in bash.attributes


# --- the named scenarios ----------------------------------------------------------------------------------------


def test_text_nobeta_one_trace_one_generation():
    logs, spans = scenario_records("protobuf-text-nobeta")
    assert spans == []
    [r] = map_all(logs, spans)
    [g] = generations([r])
    assert g.model == "claude-opus-5-5"
    assert g.usage_details == {
        "input": 12,
        "output": 18,
        "cache_read_input_tokens": 0,
        "input_cache_creation_5m": 12151,
        "input_cache_creation_1h": 0,
    }
    assert g.cost_details["total"] == pytest.approx(0.061163, abs=1e-9)
    [ev] = events(logs, "api_request")
    assert g.end_ns == ev.time_ns and g.end_ns - g.start_ns == ev.attrs["duration_ms"] * 1_000_000
    assert g.completion_start_ns == g.start_ns + ev.attrs["ttft_ms"] * 1_000_000
    root = r.observations[0]
    assert root.input is None and root.output is None  # <REDACTED> by Claude Code: nothing to forward
    assert g.parent_id == root.id
    [pid] = {v.attrs["prompt.id"] for v in events(logs, "user_prompt")}
    assert r.trace.metadata["claude_code.prompt_id"] == pid


def test_text_beta_root_carries_prompt_and_last_response():
    logs, spans = scenario_records("protobuf-text")
    [r] = map_all(logs, spans)
    root = r.observations[0]
    assert root.input == events(logs, "user_prompt")[0].attrs["prompt"]
    assert root.output == events(logs, "assistant_response")[-1].attrs["response"]
    [g] = generations([r])
    assert g.output == root.output
    assert r.trace.version == "2.1.329" and r.trace.metadata["terminal.type"] == "dumb"


@pytest.mark.parametrize("scenario", TOOL_SCENARIOS)
def test_tools_scenarios(scenario):
    logs, spans = scenario_records(scenario)
    [r] = map_all(logs, spans)
    assert len(generations([r])) == 7
    tools = sorted(obs_of([r], ObservationType.TOOL), key=lambda o: o.start_ns)
    assert [t.name for t in tools] == ["Bash", "Read", "Write", "Edit", "Bash", "Bash"]
    assert all(t.level == Level.DEFAULT and t.parent_id == r.observations[0].id for t in tools)
    decisions = {v.attrs["tool_use_id"]: v.attrs for v in events(logs, "tool_decision")}
    for t in tools:
        assert t.metadata["decision"] == decisions[t.metadata["tool_use_id"]]["decision"]
        assert t.metadata["decision_source"] == decisions[t.metadata["tool_use_id"]]["source"]
        assert t.input is not None  # OTEL_LOG_TOOL_DETAILS=1: tool_input forwarded
    costs = sorted(g.cost_details["total"] for g in generations([r]))
    assert costs == pytest.approx(sorted(float(v.attrs["cost_usd"]) for v in events(logs, "api_request")), abs=1e-9)


def test_err529_same_error_observations_with_and_without_spans():
    logs, spans = scenario_records("protobuf-err529")
    for results in (map_all(logs, spans), map_all(strip_beta(logs), [])):
        assert generations(results) == []
        errors = [o for o in obs_of(results) if o.level == Level.ERROR]
        assert sorted(o.type.value for o in errors) == ["event", "generation"]
        assert all(o.status_message == "Repeated 529 Overloaded errors" for o in errors)
        [gen] = [o for o in errors if o.type == ObservationType.GENERATION]
        assert gen.model == "claude-opus-5-5" and gen.usage_details is None and gen.cost_details is None
        [u] = [u for r in results for u in r.usage if u.kind == "llm"]
        assert (u.kind, u.success, u.error_class, u.cost_nanos, u.status_code) == ("llm", False, "overloaded", 0, None)
        [x] = [u for r in results for u in r.usage if u.kind == "retries_exhausted"]
        [ev] = events(logs, "api_retries_exhausted")
        assert (x.success, x.cost_nanos, x.time_ns, x.model) == (False, 0, ev.time_ns, ev.attrs.get("model"))
        assert x.key.startswith("retries:") and x.error == "Repeated 529 Overloaded errors"
    [beta] = map_all(logs, spans)
    failed = next(s for s in spans if s.name == "claude_code.llm_request")
    assert failed.span_id in {o.id for o in beta.observations}  # the ERROR span became the error generation


def test_subagent_nested_under_agent_tool_in_both_modes():
    logs, spans = scenario_records("protobuf-subagent")
    completed = events(logs, "subagent_completed")[0].attrs
    for results in (map_all(logs, spans), map_all(strip_beta(logs), [])):
        assert len(results) == 2
        assert len(generations(results)) == 4
        first = results[0]
        [agent_tool] = [o for o in first.observations if o.type == ObservationType.TOOL and o.name == "Agent"]
        [sub] = [g for g in generations([first]) if g.metadata.get("agent_id")]
        assert sub.parent_id == agent_tool.id
        assert sub.metadata["query_source"].startswith("agent:")
        assert agent_tool.metadata["agent_type"] == completed["agent_type"]
        assert agent_tool.metadata["total_tokens"] == completed["total_tokens"]
        assert agent_tool.metadata["total_tool_uses"] == completed["total_tool_uses"]
        second = results[1]
        assert second.observations[0].input.startswith("<task-notification>")
        assert [u.agent for u in first.usage if u.kind == "llm" and u.agent] == [completed["agent_id"]]


# --- order, duplicates, late records ----------------------------------------------------------------------------


def _dump(results: list[MappedTrace]) -> list:
    return [(asdict(r.trace), [asdict(o) for o in r.observations], [asdict(u) for u in r.usage]) for r in results]


@pytest.mark.parametrize("scenario", ["protobuf-tools", "protobuf-subagent", "protobuf-err529"])
def test_input_order_does_not_matter(scenario):
    logs, spans = scenario_records(scenario)
    expected = _dump(map_all(logs, spans))
    assert _dump(map_all(logs[::-1], spans[::-1])) == expected
    rng = random.Random(7)
    for _ in range(3):
        l2, s2 = logs[:], spans[:]
        rng.shuffle(l2)
        rng.shuffle(s2)
        assert _dump(map_all(l2, s2)) == expected
    nobeta = strip_beta(logs)
    assert _dump(map_all(nobeta[::-1], [])) == _dump(map_all(nobeta, []))


def test_log_order_is_the_whole_key_order_with_attribute_json_only_for_ties():
    """``collect``'s log order: by (time, event.sequence, event name, the attributes' sorted JSON), the JSON made only
    for records that tie on the rest. Same-time records with different attributes and exact duplicates, in any
    input order, come out exactly as a sort by the whole key puts them."""
    from relay.pipeline.claude_code_events import _in_log_order, _log_order

    logs, _ = scenario_records("protobuf-receiver-503")  # each batch twice: exact duplicates
    twins = []
    for v in logs[:6]:
        t = copy.deepcopy(v)
        t.attrs = {**t.attrs, "zz.extra": "x"}  # ties on time, sequence and name; differs in its attributes
        twins.append(t)
    records = logs + twins
    rng = random.Random(12)
    for _ in range(5):
        rng.shuffle(records)
        whole = sorted(records, key=lambda v: (*_log_order(v), json.dumps(v.attrs, sort_keys=True, default=str)))
        assert [id(v) for v in _in_log_order(records)] == [id(v) for v in whole]


@pytest.mark.parametrize("scenario", ["protobuf-tools", "protobuf-receiver-503", "protobuf-subagent"])
def test_duplicates_do_not_double_anything(scenario):
    logs, spans = scenario_records(scenario)
    expected = _dump(map_all(logs, spans))
    dup_logs, dup_spans = logs + [copy.deepcopy(v) for v in logs], spans + [copy.deepcopy(s) for s in spans]
    assert _dump(map_all(dup_logs, dup_spans)) == expected
    forwarded = sum(v.outcome == "forwarded" for v in (*dup_logs, *dup_spans))
    map_all(logs, spans)
    assert forwarded == sum(v.outcome == "forwarded" for v in (*logs, *spans))
    assert _dump(map_all(strip_beta(dup_logs), [])) == _dump(map_all(strip_beta(logs), []))


def test_late_records_reuse_ids_and_known_trace_info():
    logs, spans = scenario_records("protobuf-tools")
    ctx = MappingContext()
    for lg, sp in ((strip_beta(logs), []), (logs, spans)):
        [full] = map_all(lg, sp, ctx)
        # what the pipeline does: map the first batches, then the rest with the earlier trace info as ``known``
        reqs = sorted({v.seq for v in (*lg, *sp)})
        cut = reqs[len(reqs) // 2]
        early = [v for v in lg if v.seq < cut], [s for s in sp if s.seq < cut]
        late = [v for v in lg if v.seq >= cut], [s for s in sp if s.seq >= cut]
        [first] = map_all(*early, ctx)
        known = TraceInfo(**asdict(first.trace))
        second = map_interaction(*late, ctx, known)
        assert second.trace.trace_id == first.trace.trace_id == full.trace.trace_id
        assert second.trace.session_id == full.trace.session_id and second.trace.tags == full.trace.tags
        assert second.observations[0].id == full.observations[0].id  # same root, skipped by export-once
        ids = {o.id for o in first.observations} | {o.id for o in second.observations}
        assert ids == {o.id for o in full.observations}
        assert all(o.parent_id in ids for o in second.observations[1:])
        keys = [u.key for u in first.usage] + [u.key for u in second.usage]
        assert sorted(keys) == sorted(u.key for u in full.usage)


# --- partial data and edge cases --------------------------------------------------------------------------------


def test_span_only_calls_still_give_one_generation_without_cost():
    logs, spans = scenario_records("protobuf-tools")
    no_requests = [v for v in logs if v.event_name != "api_request"]
    [r] = map_all(no_requests, spans)
    gens = generations([r])
    assert len(gens) == 7 and all(g.cost_details is None for g in gens)
    by_rid = {g.metadata["request_id"]: g for g in gens}
    for ev in events(logs, "api_request"):
        u = by_rid[ev.attrs["request_id"]].usage_details
        assert u["input"] == ev.attrs["input_tokens"] and u["output"] == ev.attrs["output_tokens"]
        assert u["input_cache_creation_5m"] + u["input_cache_creation_1h"] == ev.attrs["cache_creation_tokens"]
    llm = [u for u in r.usage if u.kind == "llm"]
    assert len(llm) == 7 and {u.cost_source for u in llm} == {"none"} and sum(u.cost_nanos for u in llm) == 0


def _tool_events(logs, name):
    return next(v for v in logs if v.event_name == name)


def test_failed_and_rejected_tools():
    logs, _ = scenario_records("protobuf-tools")
    logs = strip_beta(logs)
    result = _tool_events(logs, "tool_result")
    result.attrs.update(success="false", error_type="ShellError", error="exit code 1")
    result.attrs.pop("tool_result_size_bytes")
    rejected_id = [v for v in logs if v.event_name == "tool_result"][1].attrs["tool_use_id"]
    logs = [v for v in logs if not (v.event_name == "tool_result" and v.attrs["tool_use_id"] == rejected_id)]
    decision = next(v for v in logs if v.event_name == "tool_decision" and v.attrs["tool_use_id"] == rejected_id)
    decision.attrs.update(decision="reject", source="user_reject")
    [r] = map_all(logs, [])
    tools = {o.metadata["tool_use_id"]: o for o in obs_of([r], ObservationType.TOOL)}
    failed = tools[result.attrs["tool_use_id"]]
    assert (failed.level, failed.status_message) == (Level.ERROR, "ShellError: exit code 1")
    rej = tools[rejected_id]
    assert (rej.level, rej.status_message, rej.name) == (Level.WARNING, "rejected by user_reject", "Read")
    usage = {u.key: u for u in r.usage}
    assert usage["tool:" + result.attrs["tool_use_id"]].success is False
    assert (usage["tool:" + rejected_id].decision, usage["tool:" + rejected_id].error_class) == ("reject", "rejected")


def test_failed_tool_execution_span_sets_error_level():
    logs, spans = scenario_records("protobuf-tools")
    spans = copy.deepcopy(spans)
    exe = next(s for s in spans if s.name == "claude_code.tool.execution")
    exe.status_code, exe.status_message = 2, "ShellError"
    no_results = [v for v in logs if v.event_name != "tool_result"]
    [r] = map_all(no_results, spans)
    tuid = exe.attrs["tool_use_id"]
    tool = next(o for o in r.observations if o.metadata.get("tool_use_id") == tuid)
    assert (tool.level, tool.status_message) == (Level.ERROR, "ShellError")


def test_mid_turn_prompt_does_not_create_a_second_root():
    logs, spans = scenario_records("protobuf-text")
    prompt = events(logs, "user_prompt")[0]
    injected = copy.deepcopy(prompt)
    injected.attrs.update({"event.sequence": 99, "delivery.mode": "mid_turn", "prompt": "also this"})
    injected.time_ns += 10_000_000
    for lg, sp in ((logs + [injected], spans), (strip_beta(logs + [injected]), [])):
        [r] = map_all(lg, sp)
        assert [o.type for o in r.observations].count(ObservationType.AGENT) == 1
        root = r.observations[0]
        assert root.input == prompt.attrs["prompt"]
        assert root.events == [("user_prompt", injected.time_ns, {"delivery.mode": "mid_turn", "prompt": "also this"})]


def test_only_startup_events_map_to_nothing():
    logs, _ = scenario_records("protobuf-text")
    startup = [v for v in logs if v.event_name in ("plugin_loaded", "managed_settings_resolved")]
    r = map_interaction(startup, [], MappingContext())
    assert r.trace is None and r.observations == [] and r.usage == []
    assert {v.outcome for v in startup} == {"filtered"}


# --- context: content and identity ------------------------------------------------------------------------------


def test_content_is_not_forwarded_when_disabled():
    logs, spans = scenario_records("protobuf-tools")
    results = map_all(logs, spans, MappingContext(forward_content=False))
    for o in obs_of(results):
        assert o.input is None and o.output is None
        assert not {"full_command", "file_path"} & set(o.attributes)
    redacting = map_all(logs, spans, MappingContext(redact_patterns=[r"hello\.txt"]))
    read = next(o for o in obs_of(redacting) if o.name == "Read")
    assert "hello.txt" not in read.input and "[REDACTED]" in read.input


def test_identity_from_resource_attributes():
    logs, spans = scenario_records("protobuf-tools")
    [r] = map_all(logs, spans)
    assert r.trace.tags == ["team.id:platform", "department:engineering"]
    assert {
        "team.id": "platform",
        "department": "engineering",
        "cost_center": "eng-123",
    }.items() <= r.trace.metadata.items()
    assert all(u.labels.get("team.id") == "platform" for u in r.usage)
    with_user = [replace(v, resource={**v.resource, "enduser.id": "alice@example.com"}) for v in logs]
    span_user = [replace(s, resource={**s.resource, "enduser.id": "alice@example.com"}) for s in spans]
    [r] = map_all(with_user, span_user)
    assert r.trace.user_id == "alice@example.com"
    assert {u.user for u in r.usage} == {"alice@example.com"}
    [r] = map_all(logs, spans, MappingContext(user_attributes=["team.id"], environment="prod", release="r1"))
    assert (r.trace.user_id, r.trace.environment, r.trace.release) == ("platform", "prod", "r1")


# --- synthetic records: cases the captures do not cover --------------------------------------------------------

_T0 = 1_795_000_000_000_000_000
_RESOURCE = {"service.name": "claude-code", "service.version": "2.1.329"}


def _event(name: str, t_ms: int, seq: int, **attrs) -> LogView:
    """A nobeta Claude Code event at ``_T0 + t_ms`` (ms), as Claude Code shapes it (observed)."""
    base = {
        "event.name": name,
        "event.sequence": seq,
        "session.id": "s-1",
        "user.id": "u" * 64,
        "prompt.id": "p-1",
        "terminal.type": "dumb",
    }
    return LogView(
        resource=dict(_RESOURCE),
        scope_name="com.anthropic.claude_code.events",
        scope_version="2.1.329",
        time_ns=_T0 + t_ms * 1_000_000,
        trace_id=None,
        span_id=None,
        body=f"claude_code.{name}",
        attrs={**base, **attrs},
        event_name=name,
    )


def _api_request(t_ms: int, seq: int, rid: str, **attrs) -> LogView:
    return _event(
        "api_request",
        t_ms,
        seq,
        **{
            "model": "claude-opus-5-5",
            "input_tokens": 1,
            "output_tokens": 2,
            "cache_read_tokens": 0,
            "cache_creation_tokens": 0,
            "cost_usd_micros": 10,
            "duration_ms": 50,
            "ttft_ms": 10,
            "request_id": rid,
            "query_source": "sdk",
            **attrs,
        },
    )


def _agent_result(t_ms: int, seq: int, tuid: str) -> LogView:
    return _event(
        "tool_result",
        t_ms,
        seq,
        tool_name="Agent",
        tool_use_id=tuid,
        success="true",
        duration_ms="5",
        request_id="req-main",
    )


def test_nobeta_subagents_matched_to_agent_calls_by_time_order():
    sub = {"query_source": "agent:builtin:general-purpose"}
    logs = [
        _event("user_prompt", 0, 1, prompt="go", prompt_length="2"),
        _api_request(90, 2, "req-main"),
        _agent_result(100, 3, "toolu-A"),
        _agent_result(110, 4, "toolu-B"),
        _api_request(300, 5, "req-x", agent_id="agent-x", **sub),
        _api_request(350, 6, "req-y", agent_id="agent-y", **sub),
        _api_request(400, 7, "req-x2", agent_id="agent-x", **sub),
        _event(
            "subagent_completed",
            500,
            8,
            agent_id="agent-y",
            agent_type="general-purpose",
            total_tokens="9",
            total_tool_uses="0",
        ),
        _api_request(600, 9, "req-orphan", agent_id="agent-z", **sub),
    ]
    [r] = map_all(logs, [])
    tools = {o.metadata["tool_use_id"]: o for o in obs_of([r], ObservationType.TOOL)}
    parent = {g.metadata["request_id"]: g.parent_id for g in generations([r])}
    root = r.observations[0].id
    assert parent == {
        "req-main": root,
        "req-x": tools["toolu-A"].id,
        "req-x2": tools["toolu-A"].id,
        "req-y": tools["toolu-B"].id,
        "req-orphan": root,
    }
    assert tools["toolu-B"].metadata["total_tokens"] == 9 and "total_tokens" not in tools["toolu-A"].metadata
    assert {v.outcome for v in logs} == {"forwarded"}


def test_nobeta_mcp_tool_named_from_tool_parameters():
    params = json.dumps({"mcp_server_name": "github", "mcp_tool_name": "create_issue"})
    logs = [
        _event("user_prompt", 0, 1, prompt="go"),
        _event(
            "tool_result",
            100,
            2,
            tool_name="mcp_tool",
            tool_use_id="toolu-M",
            success="false",
            duration_ms="7",
            error_type="McpToolCallError",
            tool_parameters=params,
        ),
    ]
    [r] = map_all(logs, [])
    [tool] = obs_of([r], ObservationType.TOOL)
    assert (tool.name, tool.level, tool.status_message) == ("create_issue", Level.ERROR, "McpToolCallError")
    assert tool.end_ns - tool.start_ns == 7_000_000


@pytest.mark.parametrize(
    "status,text,expected",
    [
        (429, "rate limited", "rate_limit"),
        (500, "boom 529", "server_error"),
        (400, "bad", "client_error"),
        (None, "Repeated 529 Overloaded errors", "overloaded"),
        (None, "Request timed out", "timeout"),
    ],
)
def test_api_error_classes_and_keys(status, text, expected):
    extra = {"status_code": status, "request_id": "req-e"} if status else {}
    logs = [
        _event("user_prompt", 0, 1, prompt="go"),
        _event("api_error", 100, 2, model="claude-opus-5-5", error=text, duration_ms=20, attempt=1, **extra),
    ]
    [r] = map_all(logs, [])
    [gen] = obs_of([r], ObservationType.GENERATION)
    assert (gen.level, gen.status_message, gen.metadata["error_class"]) == (Level.ERROR, text, expected)
    [u] = r.usage
    assert (u.success, u.error_class, u.status_code, u.cost_nanos) == (False, expected, status, 0)
    assert u.key == ("llm-error:req-e" if status else f"llm-error:s-1:2:{logs[1].time_ns}")
    assert all(isinstance(v, str) for v in r.trace.metadata.values())
    json.dumps([o.metadata for o in r.observations])
