"""SqliteLedgerStore: idempotent writes, cost-source upgrade rules, the change feed, scan order, labels, the upgrade
from issue 2's table layout."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
from dataclasses import replace

import pytest

from relay.model import UsageRecord
from relay.store.sqlite import SqliteDB
from relay.usage.pricing import Pricing
from relay.usage.sqlite_store import SqliteLedgerStore
from relay.usage.store import LedgerChange

SONNET = "claude-sonnet-4-5-20250929"  # $3 in / $15 out per 1M tokens


@pytest.fixture
def store(db):
    return SqliteLedgerStore(db, Pricing.load())


def call(key="llm:r1", *, t=1_000, tenant="acme", session="s1", source="claude_code.event", **kw) -> UsageRecord:
    base = dict(
        key=key,
        kind="llm",
        time_ns=t,
        tenant=tenant,
        session_id=session,
        trace_id="t" * 32,
        prompt_id="p1",
        user="alice",
        labels={"team.id": "platform", "project": "web"},
        agent=None,
        model=SONNET,
        input_tokens=1000,
        output_tokens=100,
        cache_read_tokens=0,
        cache_creation_tokens=0,
        duration_ms=1234.5,
        ttft_ms=300.0,
        source=source,
    )
    base.update(kw)
    return UsageRecord(**base)


async def all_rows(store, tenant=None):
    return [r for batch in [b async for b in store.scan(0, 2**62, tenant)] for r in batch]


async def test_new_records_round_trip_and_rewrites_change_nothing(store):
    tool = UsageRecord(
        key="tool:tu1",
        kind="tool",
        time_ns=2_000,
        tenant="acme",
        session_id="s1",
        tool_name="Bash",
        success=False,
        error_class="ShellError",
        error="exit 1",
        decision="accept",
        decision_source="config",
        duration_ms=12.0,
        labels={"team.id": "platform"},
        source="claude_code.event",
    )
    reported = call(cost_nanos=4567, cost_source="reported", status_code=None)
    changes = await store.write([reported, tool])
    assert changes == [LedgerChange(None, reported), LedgerChange(None, tool)]
    assert await store.get("acme", "llm:r1") == reported
    assert await store.get("acme", "tool:tu1") == tool
    assert await store.write([reported, tool]) == []  # idempotent
    assert await store.write([replace(reported, cost_nanos=1)]) == []  # equal cost source: first one stays
    assert (await store.get("acme", "llm:r1")).cost_nanos == 4567


async def test_cost_is_computed_when_not_reported_and_upgraded_by_a_report(store):
    span = call(source="claude_code.span", duration_ms=None, ttft_ms=None)  # beta span: tokens, no cost
    [c1] = await store.write([span])
    assert c1.old is None and c1.new.cost_source == "computed"
    assert c1.new.cost_nanos == (3 * 1000 + 15 * 100) * 1000  # by hand: Sonnet 4.5 list prices
    assert span.cost_source == "none"  # the caller's record is not modified

    event = call(cost_nanos=4600, cost_source="reported")  # its api_request event, later
    [c2] = await store.write([event])
    assert c2 == LedgerChange(c1.new, event)
    assert await store.write([span]) == []  # the span again (replay): worse source, ignored
    assert (await store.get("acme", "llm:r1")).cost_nanos == 4600


async def test_none_upgrades_to_computed_and_unknown_models_keep_none(store):
    bare = call("llm:r2", model=None)  # no model: cannot be priced
    [c1] = await store.write([bare])
    assert (c1.new.cost_source, c1.new.cost_nanos) == ("none", 0)
    [c2] = await store.write([call("llm:r2", model="gpt-4.1", input_tokens=1000, output_tokens=0)])
    assert c2.old == bare and (c2.new.cost_source, c2.new.cost_nanos) == ("computed", 2_000_000)
    # failed calls carry no tokens: no computed zero cost
    [c3] = await store.write([call("llm-error:x", input_tokens=0, output_tokens=0, success=False, status_code=500)])
    assert c3.new.cost_source == "none"
    # reported first, computed later: ignored
    await store.write([call("llm:r3", cost_nanos=5, cost_source="reported")])
    assert await store.write([call("llm:r3", source="claude_code.span")]) == []


async def test_tenants_are_separate_key_spaces(store):
    a, b = call(tenant="a"), call(tenant="b")
    assert len(await store.write([a, b])) == 2
    assert [r.tenant for r in await all_rows(store, "b")] == ["b"]


async def test_concurrent_writers_of_the_same_calls_see_each_change_once(store):
    """Two pipelines (or a crash-retry) writing the same records at once: the ledger reports each new record once."""
    records = [call(f"llm:{i}", t=i) for i in range(50)]
    results = await asyncio.gather(*(store.write(records) for _ in range(8)))
    news = [c for changes in results for c in changes if c.old is None]
    assert sorted(c.new.key for c in news) == sorted(r.key for r in records)


async def test_scan_is_in_time_order_within_bounds_in_batches(store):
    rng = random.Random(7)
    records = [
        call(f"llm:{i}", t=rng.choice([100, 200, 200, 200, 300, 400, 500]), tenant=rng.choice("ab")) for i in range(60)
    ]
    rng.shuffle(records)
    for i in range(0, len(records), 7):
        await store.write(records[i : i + 7])
    batches = [b async for b in store.scan(200, 500, batch=4)]
    assert all(len(b) == 4 for b in batches[:-1]) and 0 < len(batches[-1]) <= 4
    got = [r for b in batches for r in b]
    expected = [r for r in records if 200 <= r.time_ns < 500]
    assert [r.time_ns for r in got] == sorted(r.time_ns for r in expected)
    assert sorted(r.key for r in got) == sorted(r.key for r in expected)  # ties: none lost, none twice
    only_a = [r for b in [b async for b in store.scan(0, 10**9, "a", batch=3)] for r in b]
    assert {r.tenant for r in only_a} == {"a"} and len(only_a) == sum(r.tenant == "a" for r in records)
    assert [b async for b in store.scan(600, 700)] == []


async def test_scanned_records_have_their_own_label_dicts(store):
    await store.write([call("llm:1", t=1), call("llm:2", t=2)])
    r1, r2 = await all_rows(store)
    r1.labels["x"] = "y"
    assert "x" not in r2.labels and r2.labels == {"team.id": "platform", "project": "web"}


async def test_labels_and_dimensions_are_plain_columns_for_reports(store, db):
    await store.write(
        [
            call("llm:1", cost_nanos=10, cost_source="reported"),
            call("llm:2", user="bob", labels={"team.id": "data"}, cost_nanos=5, cost_source="reported"),
        ]
    )
    rows = await db.run(
        lambda c: c.execute(
            "SELECT json_extract(labels, '$.\"team.id\"'), user_id, SUM(cost_nanos), SUM(input_tokens) FROM usage_records "
            "WHERE tenant='acme' GROUP BY 1, 2 ORDER BY 1"
        ).fetchall()
    )
    assert rows == [("data", "bob", 5, 1000), ("platform", "alice", 10, 1000)]


def test_upgrade_from_the_issue_2_layout(tmp_path):
    """A database written by issue 2 (usage_records with a JSON record column) is converted in place."""
    path = tmp_path / "relay.db"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE usage_records (
            tenant TEXT NOT NULL, key TEXT NOT NULL, kind TEXT NOT NULL, time_ns INTEGER NOT NULL,
            session_id TEXT, trace_id TEXT, user_id TEXT, model TEXT, tool_name TEXT,
            cost_micros INTEGER NOT NULL DEFAULT 0, cost_source TEXT NOT NULL, success INTEGER NOT NULL,
            record TEXT NOT NULL, PRIMARY KEY (tenant, key)) WITHOUT ROWID;
        CREATE INDEX usage_time ON usage_records(tenant, time_ns);""")
    rec = call(cost_nanos=77, cost_source="reported")
    legacy = {k: v for k, v in rec.__dict__.items() if k != "cost_nanos"}
    # issue 2 stored the record (cost in whole micro-USD) before the tenant was set
    blob = json.dumps({**legacy, "cost_micros": 77, "tenant": ""})
    rec = replace(rec, cost_nanos=77_000)
    old.execute(
        "INSERT INTO usage_records VALUES ('acme','llm:r1','llm',1000,'s1',NULL,'alice',?,NULL,77,'reported',1,?)",
        (SONNET, blob),
    )
    old.commit()
    old.close()

    db = SqliteDB(path)
    db.open()
    try:
        store = SqliteLedgerStore(db, Pricing.load())
        assert db.run_sync(
            lambda c: c.execute("SELECT tenant, key, cost_nanos, input_tokens FROM usage_records").fetchall()
        ) == [("acme", "llm:r1", 77_000, 1000)]
        got = db.run_sync(lambda c: c.execute("SELECT session_id FROM ledger_call_sessions").fetchall())
        assert got == [("s1",)]
        assert asyncio.run(store.write([rec])) == []  # already there
        SqliteLedgerStore(db, Pricing.load())  # a second start changes nothing
        assert db.run_sync(lambda c: c.execute("SELECT COUNT(*) FROM usage_records").fetchone()[0]) == 1
    finally:
        db.close()
