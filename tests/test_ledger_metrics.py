"""Metric points in the ledger: Claude Code's cost/token metrics as usage records for metrics-only senders (DELTA and
CUMULATIVE, replays, late points, supersede by per-call records), and lines of code / commits / PRs as deltas.

Inputs are real OTLP ``ExportMetricsServiceRequest`` messages going through the pipeline's ``metric_rows``; expected
numbers are written out by hand."""

from __future__ import annotations

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from relay.model import UsageRecord
from relay.otlp.values import dict_to_attrs
from relay.pipeline.context import MappingContext
from relay.pipeline.metric_points import metric_rows
from relay.store.sqlite import SqliteDB
from relay.usage.metrics import SOURCE_METRIC
from relay.usage.pricing import Pricing
from relay.usage.sqlite_store import SqliteLedgerStore

S = 1_000_000_000  # ns per second
COST, TOKENS, LINES = "claude_code.cost.usage", "claude_code.token.usage", "claude_code.lines_of_code.count"
RESOURCE = {
    "service.name": "claude-code",
    "enduser.id": "alice@example.com",
    "team.id": "platform",
    "department": "engineering",
}
CTX = MappingContext(
    tenant="acme",
    user_attributes=["enduser.id", "user.id"],
    metadata_attributes=["team.id", "department"],
    labels={"project": "web", "department": "finance"},
)


def session_attrs(session="s1", **extra):
    """A cost group's point attributes; ``session=None`` as with ``OTEL_METRICS_INCLUDE_SESSION_ID=false``."""
    a = {
        "session.id": session,
        "user.id": "f" * 64,
        "model": "claude-sonnet-4-5",
        "query_source": "main",
        "effort": "medium",
        **extra,
    }
    return {k: v for k, v in a.items() if v is not None}


def usage(t, cost=None, start=None, session="s1", tokens=None, **extra):
    """Points of one export of one cost group: ``(name, attrs, start_s, time_s, value)``."""
    start = t - 1 if start is None else start
    a = session_attrs(session, **extra)
    pts = [] if cost is None else [(COST, a, start, t, cost)]
    for typ, n in (tokens or {}).items():
        pts.append((TOKENS, {**a, "type": typ}, start, t, float(n)))
    return pts


def request(points, temporality=1, resource=RESOURCE, kind="sum", monotonic=True) -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    dict_to_attrs(resource, rm.resource.attributes)
    sm = rm.scope_metrics.add()
    for name, attrs, start, t, value in points:
        m = sm.metrics.add(name=name, unit="USD" if name == COST else "")
        if kind == "sum":
            m.sum.aggregation_temporality = temporality
            m.sum.is_monotonic = monotonic
            p = m.sum.data_points.add()
        else:
            p = m.gauge.data_points.add()
        dict_to_attrs(attrs, p.attributes)
        p.start_time_unix_nano, p.time_unix_nano, p.as_double = int(start * S), int(t * S), value
    return req


@pytest.fixture
def store(tmp_path):
    db = SqliteDB(tmp_path / "relay.db")
    db.open()
    yield SqliteLedgerStore(db, Pricing.load())
    db.close()


async def send(store, points, **kw):
    rows, skipped = metric_rows("acme", request(points, **kw), CTX)
    assert skipped == 0
    return await store.write_metric_points(rows)


async def ledger(store) -> list[UsageRecord]:
    return [r async for b in store.scan(0, 2**62) for r in b]


async def test_delta_exports_become_one_record_per_cost_group_and_export(store):
    first = usage(10, 0.05, tokens={"input": 100, "output": 50, "cacheRead": 1000, "cacheCreation": 200})
    sub = usage(10, 0.02, query_source="subagent", **{"agent.name": "general-purpose"}, tokens={"input": 7})
    changes = await send(store, first + sub)
    assert [c.old for c in changes] == [None, None]
    main, agent = sorted((c.new for c in changes), key=lambda r: r.cost_nanos, reverse=True)
    assert (main.cost_nanos, main.cost_source, main.source, main.kind) == (50_000_000, "reported", SOURCE_METRIC, "llm")
    assert (
        main.input_tokens,
        main.output_tokens,
        main.cache_read_tokens,
        main.cache_creation_tokens,
        main.cache_creation_5m_tokens,
    ) == (100, 50, 1000, 200, 200)
    assert (main.session_id, main.model, main.time_ns, main.tenant, main.agent) == (
        "s1",
        "claude-sonnet-4-5",
        10 * S,
        "acme",
        None,
    )
    assert (agent.cost_nanos, agent.input_tokens, agent.agent) == (20_000_000, 7, "general-purpose")
    # identity like per-call records: user from enduser.id; the tenant's department wins over the sender's
    assert main.user == "alice@example.com"
    assert main.labels == {"team.id": "platform", "department": "finance", "project": "web"}

    assert await send(store, first + sub) == []  # the same export again adds nothing
    [c] = await send(store, usage(20, 0.01, start=10, tokens={"input": 10}))
    assert (c.old, c.new.cost_nanos, c.new.input_tokens, c.new.output_tokens) == (None, 10_000_000, 10, 0)
    assert sum(r.cost_nanos for r in await ledger(store)) == 80_000_000


CUMULATIVE_EXPORTS = [  # (start, time, cost USD, input tokens): one cost group, fixed start, then a restart
    (5, 10, 0.05, 100),
    (5, 20, 0.08, 160),
    (5, 30, 0.08, 160),  # unchanged at 30: no record
    (35, 40, 0.01, 5),  # new start time: counts from zero
    (35, 50, 0.004, 2),  # below the previous value with the same start: a reset, counts in full
]


async def test_cumulative_points_are_counted_as_deltas(store):
    got = []
    for start, t, cost, tokens in CUMULATIVE_EXPORTS:
        changes = await send(store, usage(t, cost, start=start, tokens={"input": tokens}), temporality=2)
        assert all(c.old is None for c in changes)
        got += [(c.new.time_ns // S, c.new.cost_nanos, c.new.input_tokens) for c in changes]
    assert got == [(10, 50_000_000, 100), (20, 30_000_000, 60), (40, 10_000_000, 5), (50, 4_000_000, 2)]
    for start, t, cost, tokens in CUMULATIVE_EXPORTS:  # CUMULATIVE senders repeat series; a replay changes nothing
        assert await send(store, usage(t, cost, start=start, tokens={"input": tokens}), temporality=2) == []


async def test_a_late_cumulative_point_takes_its_share_from_the_next(store):
    exports = CUMULATIVE_EXPORTS[:3]
    for start, t, cost, tokens in [exports[1], exports[2], exports[0]]:  # 20 arrives first (e.g. a retried request)
        await send(store, usage(t, cost, start=start, tokens={"input": tokens}), temporality=2)
    rows = sorted((r.time_ns // S, r.cost_nanos, r.input_tokens) for r in await ledger(store))
    assert rows == [(10, 50_000_000, 100), (20, 30_000_000, 60)]
    total = await store.sum_metric(COST, 0, 100 * S)
    assert [round(s.value, 9) for s in total] == [0.08]


async def test_late_point_reports_the_upgrade_of_the_next_record(store):
    [c20] = await send(store, usage(20, 0.08, start=5), temporality=2)
    assert c20.new.cost_nanos == 80_000_000
    changes = await send(store, usage(10, 0.05, start=5), temporality=2)
    assert [(c.old and c.old.cost_nanos, c.new.cost_nanos) for c in changes] == [
        (None, 50_000_000),
        (80_000_000, 30_000_000),
    ]


async def test_tokens_before_cost_are_priced_then_replaced_by_the_reported_cost(store):
    # a 13-point request limit can split one export: token points first, the cost point in the next request
    [c1] = await send(store, usage(10, tokens={"input": 100, "output": 50, "cacheRead": 1000, "cacheCreation": 200}))
    # Sonnet 4.5 by hand: 100×3 + 50×15 + 1000×0.30 + 200×3.75 = 300 + 750 + 300 + 750
    assert (c1.new.cost_source, c1.new.cost_nanos) == ("computed", 2_100_000)
    [c2] = await send(store, usage(10, 0.0021))
    assert c2.old == c1.new and (c2.new.cost_source, c2.new.cost_nanos, c2.new.input_tokens) == (
        "reported",
        2_100_000,
        100,
    )


async def test_per_call_records_supersede_metric_estimates_of_their_session(store):
    await send(store, usage(10, 0.05, session="s1") + usage(10, 0.03, session="s2"))
    call = UsageRecord(
        key="llm:req_1",
        kind="llm",
        time_ns=9 * S,
        tenant="acme",
        session_id="s1",
        cost_nanos=50_000,
        cost_source="reported",
        model="claude-sonnet-4-5",
        source="claude_code.event",
    )
    changes = await store.write([call])
    assert changes[0].old is None and changes[0].new == call
    [retract] = changes[1:]
    assert retract.new is None and (retract.old.session_id, retract.old.cost_nanos) == ("s1", 50_000_000)
    # later metrics of s1 derive nothing; s2 (metrics only) still counts
    assert await send(store, usage(20, 0.01, start=10, session="s1")) == []
    [c] = await send(store, usage(20, 0.02, start=10, session="s2"))
    assert c.new.session_id == "s2"
    # a session whose per-call records came first never gets metric records
    await store.write(
        [
            UsageRecord(
                key="tool:x",
                kind="tool",
                time_ns=S,
                tenant="acme",
                session_id="s3",
                tool_name="Bash",
                source="claude_code.span",
            )
        ]
    )
    assert await send(store, usage(30, 0.5, session="s3")) == []
    # the second per-call record of s1 retracts nothing more
    assert (
        await store.write(
            [
                UsageRecord(
                    key="llm:req_2", kind="llm", time_ns=S, tenant="acme", session_id="s1", source="claude_code.event"
                )
            ]
        )
        != []
    )
    by_session = {}
    for r in await ledger(store):
        by_session.setdefault(r.session_id, []).append(r.source)
    assert by_session == {
        "s1": ["claude_code.event", "claude_code.event"],
        "s2": [SOURCE_METRIC, SOURCE_METRIC],
        "s3": ["claude_code.span"],
    }
    # the deltas stay for cross-checks and reports
    assert len(await store.sum_metric(COST, 0, 100 * S, by=("session",))) == 3


def call_record(key, t_s, *, model="claude-sonnet-4-5", user="alice@example.com", cost=0.04):
    """A per-call record as the pipeline writes it for an ``api_request`` without ``session.id``."""
    return UsageRecord(
        key=key,
        kind="llm",
        time_ns=int(t_s * S),
        tenant="acme",
        user=user,
        model=model,
        cost_nanos=round(cost * 1e9),
        cost_source="reported",
        source="claude_code.event",
    )


async def test_without_session_ids_calls_supersede_metric_estimates_by_user_model_and_window(store):
    # metrics first: the export (9 s, 10 s] of alice's sonnet usage is an estimate until its calls arrive
    [c] = await send(store, usage(10, 0.04, start=9, session=None))
    assert c.new.session_id is None and c.new.user == "alice@example.com"
    changes = await store.write([call_record("llm:a", 9.5)])
    assert [(x.old is None, x.new is None) for x in changes] == [(True, False), (False, True)]  # new call, retraction
    # calls first: a later export whose window holds a call derives nothing
    await store.write([call_record("llm:b", 19.5)])
    assert await send(store, usage(20, 0.04, start=19, session=None)) == []
    # another model, another user or a window without calls still counts from metrics
    [other_model] = await send(store, usage(20, 0.5, start=19, session=None, model="claude-opus-5-5"))
    [later] = await send(store, usage(40, 0.01, start=39, session=None))
    assert {other_model.new.model, later.new.model} == {"claude-opus-5-5", "claude-sonnet-4-5"}
    rows = await ledger(store)
    assert sorted((r.key.split(":")[0], r.model) for r in rows) == [
        ("llm", "claude-sonnet-4-5"),
        ("llm", "claude-sonnet-4-5"),
        ("metric", "claude-opus-5-5"),
        ("metric", "claude-sonnet-4-5"),
    ]
    assert sum(r.cost_nanos for r in rows) == 40_000_000 * 2 + 500_000_000 + 10_000_000  # nothing twice


async def test_lines_commits_and_prs_are_summed_by_any_attribute(store):
    alice = {"session.id": "s1", "model": "claude-opus-5-5"}
    bob_resource = {**RESOURCE, "enduser.id": "bob@example.com", "team.id": "data"}
    await send(
        store,
        [
            (LINES, {**alice, "type": "added"}, 9, 10, 7.0),
            (LINES, {**alice, "type": "removed"}, 9, 10, 2.0),
            ("claude_code.commit.count", {"session.id": "s1"}, 9, 10, 1.0),
            ("claude_code.pull_request.count", {"session.id": "s1"}, 9, 10, 1.0),
        ],
    )
    await send(store, [(LINES, {**alice, "type": "added"}, 10, 20, 4.0)])
    rows, _ = metric_rows(
        "acme",
        request(
            [
                (LINES, {"session.id": "s2", "type": "added"}, 0, 15, 30.0),
                (LINES, {"session.id": "s2", "type": "added"}, 0, 25, 33.0),
            ],
            temporality=2,
            resource=bob_resource,
        ),
        CTX,
    )
    await store.write_metric_points(rows)
    await store.write_metric_points(rows)  # replay

    def flat(sums):
        return {tuple(s.group.values()): s.value for s in sums}

    assert flat(await store.sum_metric(LINES, 0, 100 * S, by=("user", "type"))) == {
        ("alice@example.com", "added"): 11.0,
        ("alice@example.com", "removed"): 2.0,
        ("bob@example.com", "added"): 33.0,
    }
    assert flat(await store.sum_metric(LINES, 0, 100 * S, by=("team.id",))) == {("platform",): 13.0, ("data",): 33.0}
    assert flat(await store.sum_metric(LINES, 0, 100 * S, by=("project", "model"))) == {
        ("web", "claude-opus-5-5"): 13.0,
        ("web", None): 33.0,
    }  # a tenant label and a point attribute
    assert flat(await store.sum_metric(LINES, 12 * S, 22 * S, by=("type",))) == {("added",): 34.0}  # 4 + (33 − 30)
    assert flat(await store.sum_metric("claude_code.commit.count", 0, 100 * S)) == {(): 1.0}
    assert flat(await store.sum_metric("claude_code.pull_request.count", 0, 100 * S, tenant="other")) == {}
    assert await ledger(store) == []  # not usage


async def test_gauges_are_kept_raw_and_non_monotonic_sums_may_go_down(store):
    g = [("queue.depth", {"q": "a"}, 0, 10, 5.0)]
    assert await send(store, g, kind="gauge") == []
    assert await store.sum_metric("queue.depth", 0, 100 * S) == []
    updown = [("active.sessions", {}, 0, 10, 5.0)], [("active.sessions", {}, 0, 20, 3.0)]
    for pts in updown:
        await send(store, pts, temporality=2, monotonic=False)
    [total] = await store.sum_metric("active.sessions", 0, 100 * S)
    assert total.value == 3.0  # 5 then −2, not a reset
    raw = await store.db.run(lambda c: c.execute("SELECT COUNT(*) FROM metric_points").fetchone()[0])
    assert raw == 3
