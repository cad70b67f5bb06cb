"""The batched ledger write (``SqliteLedgerStore._write``: one ``key IN (…)`` read per batch, executemany writes)
makes exactly the changes and rows of the record-by-record algorithm it replaced — inserts, cost upgrades, filled
identity fields, ignored worse copies, duplicate keys inside one batch, and the retraction of metric-derived
records by session and, without session ids, by user, model and window.

Property-based (Hypothesis, https://hypothesis.readthedocs.io): random sequences of record batches and Claude Code
cost metrics go to two ledgers — the store and a reference subclass running the former one-SELECT-per-record code —
and both must return the same change feed at every step and hold the same rows (ids included) at the end. The
final rows must also equal those of writing every record in its own call."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from relay.model import UsageRecord
from relay.store.sqlite import SqliteDB
from relay.usage.metrics import SOURCE_METRIC, derived_key
from relay.usage.pricing import Pricing
from relay.usage.sqlite_records import SELECT, put_record, record_of, select_record
from relay.usage.sqlite_store import COST_RANK, UNSESSIONED_SLACK_NS, SqliteLedgerStore, _fill_gaps
from relay.usage.store import LedgerChange
from tests.test_ledger_metrics import S, send, usage

PRICING = Pricing.load()


class OneByOne(SqliteLedgerStore):
    """The ledger write as it was before batching: one SELECT and one write per record, one INSERT OR IGNORE and
    one SELECT per session, one metric-delta query per LLM call."""

    def _write(self, conn, records: Sequence[UsageRecord]) -> list[LedgerChange]:
        changes: list[LedgerChange] = []
        for r in records:
            old = select_record(conn, r.tenant, r.key)
            if old is None or COST_RANK.get(r.cost_source, 0) > COST_RANK.get(old.cost_source, 0):
                put_record(conn, old, r)
                changes.append(LedgerChange(old, r))
            elif COST_RANK.get(r.cost_source, 0) == COST_RANK.get(old.cost_source, 0):
                filled = _fill_gaps(old, r)
                if filled != old:
                    put_record(conn, old, filled)
                    changes.append(LedgerChange(old, filled))
        sessions = {(r.tenant, r.session_id) for r in records if r.session_id and r.source != SOURCE_METRIC}
        for tenant, session in sorted(sessions):
            cur = conn.execute(
                "INSERT OR IGNORE INTO ledger_call_sessions(tenant, session_id, first_ns) VALUES (?,?,?)",
                (tenant, session, time.time_ns()),
            )
            if cur.rowcount == 0:
                continue
            rows = conn.execute(
                SELECT + " WHERE tenant=? AND session_id=? AND source=?", (tenant, session, SOURCE_METRIC)
            ).fetchall()
            for old in sorted(map(record_of, rows), key=lambda r: (r.time_ns, r.key)):
                put_record(conn, old, None)
                changes.append(LedgerChange(old, None))
        seen: set[str] = set()
        for r in records:
            if r.kind != "llm" or r.source == SOURCE_METRIC:
                continue
            rows = conn.execute(
                "SELECT DISTINCT grp, time_ns FROM metric_deltas WHERE tenant=? AND grp IS NOT NULL"
                " AND session_id IS NULL AND user_id IS ? AND model IS ? AND time_ns >= ? AND start_ns <= ?",
                (r.tenant, r.user, r.model, r.time_ns - UNSESSIONED_SLACK_NS, r.time_ns + UNSESSIONED_SLACK_NS),
            ).fetchall()
            for grp, t in rows:
                key = derived_key(grp, t)
                if key in seen:
                    continue
                seen.add(key)
                old = select_record(conn, r.tenant, key)
                if old is not None and old.source == SOURCE_METRIC:
                    put_record(conn, old, None)
                    changes.append(LedgerChange(old, None))
        return changes


MODELS = ("claude-sonnet-4-5", "claude-sonnet-4-5", "claude-opus-4-1", None)
records = st.builds(
    lambda key, kind, tenant, session, user, model, cost, source, trace, t, tokens: UsageRecord(
        key=key,
        kind=kind,
        time_ns=t * S // 2,
        tenant=tenant,
        session_id=session,
        trace_id=trace,
        user=user,
        model=model,
        input_tokens=tokens,
        cost_nanos=0 if cost == "none" else 40_000_000,
        cost_source=cost,
        source=source,
        labels={"team.id": "platform"} if trace else {},
    ),
    key=st.sampled_from(["llm:1", "llm:2", "llm:3", "tool:1"]),
    kind=st.sampled_from(["llm", "llm", "llm", "tool"]),
    tenant=st.sampled_from(["acme", "acme", "acme", "other"]),
    session=st.sampled_from([None, None, "s1", "s2", ""]),
    user=st.sampled_from(["alice@example.com", "alice@example.com", None, "bob"]),
    model=st.sampled_from(MODELS),
    cost=st.sampled_from(["none", "computed", "reported"]),
    source=st.sampled_from(["claude_code.event", "claude_code.span", "genai.span"]),
    trace=st.sampled_from([None, "t1"]),
    t=st.integers(14, 50),
    tokens=st.sampled_from([0, 1000]),
)
metrics = st.tuples(st.integers(8, 24), st.sampled_from([None, "s1", "s2"]), st.sampled_from([0.04, 0.5]))
steps = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.lists(records, min_size=1, max_size=8)), st.tuples(st.just("metric"), metrics)
    ),
    min_size=1,
    max_size=12,
)


async def _rows(db: SqliteDB) -> tuple[list, list]:
    def read(conn):
        rows = conn.execute("SELECT * FROM usage_records ORDER BY id").fetchall()
        sessions = conn.execute("SELECT tenant, session_id FROM ledger_call_sessions ORDER BY 1, 2").fetchall()
        return rows, sessions

    return await db.run(read)


async def _play(directory: Path, plan) -> None:
    dbs = [SqliteDB(directory / f"{n}.db") for n in ("batched", "reference", "single")]
    for db in dbs:
        db.open()
    try:
        batched, reference, single = SqliteLedgerStore(dbs[0], PRICING), OneByOne(dbs[1], PRICING), dbs[2]
        single_store = SqliteLedgerStore(single, PRICING)
        for kind, arg in plan:
            if kind == "write":
                got = await batched.write(arg)
                want = await reference.write(arg)
                assert got == want
                for r in arg:
                    await single_store.write([r])
            else:
                t, session, cost = arg
                points = usage(t, cost, session=session)
                assert await send(batched, points) == await send(reference, points)
                await send(single_store, points)
        assert await _rows(dbs[0]) == await _rows(dbs[1])
        # one record per call: the same records in the end (ids may differ: retractions happen in another order)
        got_rows, got_sessions = await _rows(dbs[0])
        one_rows, one_sessions = await _rows(single)
        assert sorted(r[1:] for r in got_rows) == sorted(r[1:] for r in one_rows)
        assert got_sessions == one_sessions
    finally:
        for db in dbs:
            db.close()


@settings(
    max_examples=int(os.environ.get("RELAY_FUZZ_EXAMPLES", 60)),
    deadline=None,
    database=None,
    derandomize=bool(os.environ.get("CI")),
    suppress_health_check=[HealthCheck.too_slow],
)
@given(plan=steps)
@example(  # a session's metric estimates stored out of time order, then retracted by one batch: in time order
    plan=[
        ("metric", (20, "s1", 0.04)),
        ("metric", (10, "s1", 0.5)),
        ("metric", (12, None, 0.5)),
        ("write", [UsageRecord(key="llm:1", kind="llm", time_ns=11 * S, tenant="acme", session_id="s1")]),
        (
            "write",
            [
                UsageRecord(
                    key="llm:2",
                    kind="llm",
                    time_ns=12 * S,
                    tenant="acme",
                    user="alice@example.com",
                    model="claude-sonnet-4-5",
                )
            ],
        ),
    ]
)
def test_batched_write_makes_the_changes_of_the_one_by_one_write(plan):
    with tempfile.TemporaryDirectory(prefix="relay-ledger-batch-") as d:
        asyncio.run(_play(Path(d), plan))


def test_a_batch_larger_than_one_in_list_reads_and_upgrades_every_record(tmp_path):
    """More keys than one ``IN (…)`` list holds (``relay.store.sqlite.IN_CHUNK``): every stored copy is found."""
    calls = [
        UsageRecord(key=f"llm:{i}", kind="llm", time_ns=i, tenant="acme", model="claude-sonnet-4-5", input_tokens=10)
        for i in range(1_234)
    ]

    async def main():
        db = SqliteDB(tmp_path / "relay.db")
        db.open()
        try:
            store = SqliteLedgerStore(db, PRICING)
            first = await store.write(calls)
            assert [c.old for c in first] == [None] * len(calls)
            assert await store.write(calls) == []  # the same records again: nothing changes
            reported = [UsageRecord(**{**c.__dict__, "cost_source": "reported", "cost_nanos": 7}) for c in calls]
            upgrades = await store.write(reported)
            assert [(c.old.cost_source, c.new.cost_source) for c in upgrades] == [("computed", "reported")] * len(calls)
        finally:
            db.close()

    asyncio.run(main())
