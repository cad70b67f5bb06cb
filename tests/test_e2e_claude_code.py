"""End to end on the real wire: Claude Code's captured exports replayed byte for byte into a running relay, which
exports to a fake Langfuse; assertions are on what Langfuse would store (``tests/fakes/langfuse_oracle.py``).

Expectations are computed from the captures with an independent decoder (``tests/support/expected.py``).
"""

from __future__ import annotations

import time

import pytest

from relay.model import usd_to_nanos
from tests.fakes.langfuse import FakeLangfuse
from tests.support.expected import by_name, events
from tests.support.fixtures import load_scenario
from tests.support.inproc import replay, running_relay, settle

ALL_SCENARIOS = [
    "protobuf-text",
    "protobuf-text-nobeta",
    "protobuf-tools",
    "json-tools",
    "grpc-tools",
    "protobuf-gzip",
    "protobuf-err529",
    "protobuf-subagent",
    "protobuf-receiver-503",
]


async def run_scenario(tmp_path, scenario: str, *, overrides=None, headers=None, projects=None):
    async with FakeLangfuse(projects) as lf:
        async with running_relay(tmp_path / "data", lf.base_url, overrides) as relay:
            statuses = await replay(relay, scenario, headers)
            assert set(statuses) == {200}
            await settle(relay)
        return lf.view(), lf


def interactions(evs) -> set[str]:
    return {e.attrs["prompt.id"] for e in by_name(evs, "user_prompt")}


@pytest.mark.parametrize("scenario", ALL_SCENARIOS)
async def test_every_capture_gives_the_langfuse_picture(tmp_path, scenario):
    view, lf = await run_scenario(tmp_path, scenario)
    evs = events(scenario)

    # nothing exported twice, and every span carries the trace-level fields (Langfuse v4 reads them per span)
    assert lf.duplicate_span_ids() == {}
    assert all(o.session_id and o.trace_name and o.user_id for o in view.observations)

    # one session per Claude Code session, one trace per interaction
    sessions = {e.attrs["session.id"] for e in by_name(evs, "user_prompt")}
    assert set(view.sessions) == sessions
    assert len(view.traces) == len(interactions(evs))
    assert {t.name for t in view.traces.values()} == {"claude_code.interaction"}

    # one generation per successful api_request: model, tokens and cost equal to the event's
    requests = {e.attrs["request_id"]: e.attrs for e in by_name(evs, "api_request")}
    gens = [g for g in view.generations() if g.level != "ERROR"]
    assert len(gens) == len(requests)
    for g in gens:
        a = requests[g.metadata["request_id"]]
        assert g.model == a["model"]
        expected = {
            "input": int(a["input_tokens"]),
            "output": int(a["output_tokens"]),
            "cache_read_input_tokens": int(a["cache_read_tokens"]),
            "input_cache_creation_5m": int(a["cache_creation_5m_tokens"]),
            "input_cache_creation_1h": int(a["cache_creation_1h_tokens"]),
        }
        # each token bucket under exactly one key; Langfuse adds the total itself
        assert g.usage_details == {**expected, "total": sum(expected.values())}
        assert g.cost_details["total"] == pytest.approx(float(a["cost_usd"]), abs=1e-9)
    assert view.total_cost() == pytest.approx(sum(float(a["cost_usd"]) for a in requests.values()), abs=1e-9)

    # one tool observation per tool_result, level from success
    results = by_name(evs, "tool_result")
    tools = view.tools()
    assert len(tools) == len(results)
    assert sorted(t.name for t in tools) == sorted(e.attrs["tool_name"] for e in results)
    for t in tools:
        ok = next(e for e in results if e.attrs["tool_use_id"] == t.metadata["tool_use_id"]).attrs["success"] == "true"
        assert t.level == ("DEFAULT" if ok else "ERROR")

    # failures: ERROR observations carrying the API's message
    errors = by_name(evs, "api_error") + by_name(evs, "api_retries_exhausted")
    error_obs = [o for o in view.observations if o.level == "ERROR"]
    assert len(error_obs) == len(errors)
    for o in error_obs:
        assert o.status_message == errors[0].attrs["error"]


async def test_error_scenario_is_visible_as_errors(tmp_path):
    view, _ = await run_scenario(tmp_path, "protobuf-err529")
    errs = [o for o in view.observations if o.level == "ERROR"]
    assert {o.type for o in errs} == {"GENERATION", "EVENT"}
    assert all("529" in o.status_message for o in errs)
    assert view.total_cost() == 0


async def test_beta_and_nobeta_give_the_same_picture(tmp_path):
    beta, _ = await run_scenario(tmp_path / "beta", "protobuf-text")
    nobeta, _ = await run_scenario(tmp_path / "nobeta", "protobuf-text-nobeta")

    def shape(view):
        return (
            len(view.sessions),
            len(view.traces),
            sorted((o.type, o.name, o.level, o.model or "", tuple(sorted(o.usage_details))) for o in view.observations),
            sorted(t.name for t in view.traces.values()),
        )

    assert shape(beta) == shape(nobeta)
    # the beta run logged the prompt; the nobeta run did not (Claude Code sent <REDACTED>), so only beta has input
    [root] = [o for o in beta.observations if o.is_root]
    assert root.input == "SCENARIO:text Say hello"
    [nroot] = [o for o in nobeta.observations if o.is_root]
    assert nroot.input is None


async def test_subagent_calls_nest_under_their_agent_tool(tmp_path):
    view, _ = await run_scenario(tmp_path, "protobuf-subagent")
    [agent] = [t for t in view.tools() if t.name == "Agent"]
    sub = [g for g in view.generations() if g.metadata.get("agent_id")]
    assert sub and all(g.parent_id == agent.id for g in sub)


async def test_identity_and_team_attributes_from_resource(tmp_path):
    view, _ = await run_scenario(
        tmp_path, "protobuf-tools", overrides={"pipeline": {"identity": {"user_attributes": ["team.id", "user.id"]}}}
    )
    [trace] = view.traces.values()
    assert trace.user_id == "platform"
    assert {"team.id:platform", "department:engineering"} <= set(trace.tags)
    assert trace.metadata.get("cost_center") == "eng-123"


async def test_tenant_token_routes_to_its_own_langfuse_project_only(tmp_path):
    projects = {"pk-lf-acme": ("sk-lf-acme", "project-acme"), "pk-lf-other": ("sk-lf-other", "project-other")}
    overrides = {
        "tenants": [
            {
                "name": "acme",
                "tokens": ["capture-token"],
                "langfuse": {"public_key": "pk-lf-acme", "secret_key": "sk-lf-acme"},
            },
            {
                "name": "other",
                "tokens": ["other-token"],
                "langfuse": {"public_key": "pk-lf-other", "secret_key": "sk-lf-other"},
            },
        ]
    }
    # protobuf-tools was captured with OTEL_EXPORTER_OTLP_HEADERS=Authorization=Bearer capture-token
    view, lf = await run_scenario(tmp_path, "protobuf-tools", overrides=overrides, projects=projects)
    assert lf.spans("project-acme") and not lf.spans("project-other")
    assert len(view.generations()) == len(by_name(events("protobuf-tools"), "api_request"))


async def test_requests_without_a_valid_token_get_401_and_store_nothing(tmp_path):
    overrides = {"tenants": [{"name": "acme", "tokens": ["right-token"]}]}
    async with running_relay(tmp_path / "data", None, overrides) as relay:
        statuses = await replay(relay, "protobuf-text", {"Authorization": "Bearer wrong"})
        assert set(statuses) == {401}
        assert await relay.spool.pending_inbound() == 0
        assert await relay.spool.db.run(lambda c: c.execute("SELECT COUNT(*) FROM usage_records").fetchone()[0]) == 0


async def test_export_off_still_keeps_the_ledger(tmp_path):
    async with running_relay(tmp_path / "data") as relay:
        await replay(relay, "protobuf-tools")
        await settle(relay)
        rows = await relay.spool.db.run(
            lambda c: c.execute(
                "SELECT kind, COUNT(*), SUM(cost_nanos) FROM usage_records GROUP BY kind ORDER BY kind"
            ).fetchall()
        )
        metrics = await relay.spool.db.run(lambda c: c.execute("SELECT COUNT(*) FROM metric_points").fetchone()[0])
    evs = events("protobuf-tools")
    requests = by_name(evs, "api_request")
    assert rows == [
        ("llm", len(requests), sum(usd_to_nanos(float(e.attrs["cost_usd"])) for e in requests)),
        ("tool", len(by_name(evs, "tool_result")), 0),
    ]
    assert metrics > 0


async def test_client_retries_are_counted_once(tmp_path):
    view, lf = await run_scenario(tmp_path, "protobuf-receiver-503")
    assert lf.duplicate_span_ids() == {}
    assert len(view.generations()) == 1


@pytest.mark.parametrize("scenario", ["protobuf-tools", "protobuf-receiver-503", "grpc-tools"])
async def test_every_accepted_item_ends_in_exactly_one_outcome(tmp_path, scenario):
    """Receivers count accepted items; each ends in one outcome of relay_items_total (forwarded when Langfuse
    acknowledged its span, filtered otherwise here). Per signal: accepted == sum of outcomes, and every queued span
    was sent."""
    async with FakeLangfuse() as lf:
        async with running_relay(tmp_path / "data", lf.base_url) as relay:
            await replay(relay, scenario)
            await settle(relay)
            t = relay.telemetry
            for signal, item in (("traces", "spans"), ("logs", "log_records"), ("metrics", "metric_points")):
                accepted = t.sample(f"otelcol_receiver_accepted_{item}_total")
                outcomes = {
                    o: t.sample("relay_items_total", {"signal": signal, "outcome": o})
                    for o in ("forwarded", "filtered", "invalid", "dead_lettered", "quarantined")
                }
                assert accepted == sum(outcomes.values()), (signal, accepted, outcomes)
                assert outcomes["filtered"] + outcomes["forwarded"] == accepted
            assert t.sample("relay_items_total", {"signal": "traces", "outcome": "forwarded"}) > 0
            sent = t.sample("otelcol_exporter_sent_spans_total")
            assert sent == t.sample("relay_pipeline_spans_queued_total") == len(lf.spans())
            if scenario == "protobuf-receiver-503":  # each body was sent twice; the resends are duplicates
                assert t.sample("relay_receiver_duplicate_requests_total") == len(load_scenario(scenario)) / 2


async def test_backpressure_closes_traces_early_without_losing_or_duplicating(tmp_path):
    """With a tiny bound on held records, traces close early and later parts join them by id: same picture.

    The timers are long next to the replay (a few ms), so parts closing before them is backpressure's doing; a
    last part read after the others (timing) closes on the idle timer."""
    overrides = {"pipeline": {"max_open_records": 3, "idle_timeout": "3s", "root_grace": "3s"}}
    async with FakeLangfuse() as lf:
        async with running_relay(tmp_path / "data", lf.base_url, overrides) as relay:
            relay.pipeline.read_batch = 1  # one request per step, as when they arrive apart (the replay takes ms)
            t0 = time.monotonic()
            assert set(await replay(relay, "protobuf-tools")) == {200}
            await settle(relay)
            parts = relay.telemetry.sample("relay_pipeline_traces_total", {"tenant": "default"})
        view = lf.view()
    assert parts > 2, "the interaction should have been committed in several parts"
    assert time.monotonic() - t0 < 15
    evs = events("protobuf-tools")
    assert lf.duplicate_span_ids() == {}
    assert len(view.traces) == 1
    assert len(view.generations()) == len(by_name(evs, "api_request"))
    assert len(view.tools()) == len(by_name(evs, "tool_result"))
