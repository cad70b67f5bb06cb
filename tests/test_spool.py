"""The durable spool: group-committed appends, request dedup, size bound, outbound order, dead letters, kill -9."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading

import pytest

from relay.model import Signal, UsageRecord
from relay.spool import Spool, SpoolFull, TraceCommit


@pytest.fixture
def spool(tmp_path):
    s = Spool.open(tmp_path, max_size=1_000_000)
    yield s
    s.close()


async def test_appends_are_group_committed_and_read_in_order(spool):
    results = await asyncio.gather(
        *[spool.append("t", Signal.LOGS, bytes([i]) * 10, 1, bytes([i])) for i in range(100)]
    )
    assert all(results)
    assert spool.db.commits < 100  # concurrent appends share commits
    items = await spool.read_inbound(0, 1000)
    assert [i.payload[0] for i in items] == list(range(100))
    assert [i.seq for i in items] == sorted(i.seq for i in items)


async def test_duplicate_request_key_is_stored_once(spool):
    assert await spool.append("t", Signal.TRACES, b"body", 3, b"k1") is True
    assert await spool.append("t", Signal.TRACES, b"body", 3, b"k1") is False
    assert await spool.pending_inbound() == 1


async def test_full_spool_refuses_with_retry_after(tmp_path):
    s = Spool.open(tmp_path, max_size=100)
    try:
        await s.append("t", Signal.LOGS, b"x" * 80, 1, None)
        with pytest.raises(SpoolFull) as e:
            await s.append("t", Signal.LOGS, b"x" * 80, 1, None)
        assert e.value.retry_after > 0
        # processing frees space again
        items = await s.read_inbound(0)
        await s.done_inbound([i.seq for i in items])
        assert await s.append("t", Signal.LOGS, b"x" * 80, 1, None)
    finally:
        s.close()


async def test_outbound_is_per_tenant_in_order_with_dead_letters_and_requeue(spool):
    await spool.commit_traces(
        [
            TraceCommit(
                "a", "t1", b"a1", 2, ["o1", "o2"], {"trace_id": "t1"}, [UsageRecord(key="llm:1", kind="llm", time_ns=1)]
            ),
            TraceCommit("b", "t2", b"b1", 1, ["o3"], {"trace_id": "t2"}, []),
            TraceCommit(
                "a", "t3", b"a2", 1, ["o4"], {"trace_id": "t3"}, [UsageRecord(key="llm:1", kind="llm", time_ns=1)]
            ),
        ]
    )
    a = await spool.read_outbound("a", max_spans=10, max_bytes=10_000)
    assert [b.payload for b in a] == [b"a1", b"a2"]
    assert [b.payload for b in await spool.read_outbound("b", 10, 10_000)] == [b"b1"]
    assert len(await spool.read_outbound("a", max_spans=2, max_bytes=10_000)) == 1  # size-bounded, never empty
    await spool.dead_letter(a[:1], 400, "bad span")
    await spool.ack_outbound(a[1:])
    assert await spool.read_outbound("a", 10, 10_000) == []
    dl = await spool.dead_letters("a")
    assert [(d.status, d.reason, d.spans) for d in dl] == [(400, "bad span", 2)]
    assert await spool.requeue_dead_letters("a") == 1
    assert [b.payload for b in await spool.read_outbound("a", 10, 10_000)] == [b"a1"]
    assert await spool.trace_state("a", "t1") == ({"trace_id": "t1"}, {"o1", "o2"})
    # usage records ride along in TraceCommit for the ledger; the spool itself stores none (tests/test_ledger_store.py)
    assert (
        await spool.db.run(lambda c: c.execute("SELECT name FROM sqlite_master WHERE name='usage_records'").fetchall())
        == []
    )


def test_acknowledged_appends_survive_kill_9(tmp_path):
    """A child process appends and prints each acknowledged seq; we SIGKILL it mid-stream and reopen."""
    script = textwrap.dedent(f"""
        import asyncio, sys
        from pathlib import Path
        from relay.spool import Spool
        from relay.model import Signal
        async def main():
            s = Spool.open(Path({str(tmp_path)!r}))
            i = 0
            while True:
                await asyncio.gather(*[s.append("t", Signal.LOGS, b"p%d" % (i + j), 1, None) for j in range(10)])
                i += 10
                print(i, flush=True)
        asyncio.run(main())
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    acked = 0
    for line in proc.stdout:
        acked = int(line)
        if acked >= 300:
            break
    proc.kill()
    proc.wait()
    s = Spool.open(tmp_path)
    try:
        n = asyncio.run(s.pending_inbound())
    finally:
        s.close()
    assert n >= acked


async def test_prune_forgets_old_keys_in_batches_and_keeps_recent_ones(spool):
    await spool.append("t", Signal.LOGS, b"a", 1, b"old")
    for i in range(25):  # one exported-ids row per trace commit
        await spool.commit_traces([TraceCommit("t", "tr", None, 0, [f"o{i}"], {}, [])])
    await spool.db.run(lambda c: c.execute("UPDATE request_keys SET created_ns = 0"))
    await spool.db.run(lambda c: c.execute("UPDATE exported_ids SET created_ns = 0 WHERE obs_ids != 'o0'"))
    await spool.append("t", Signal.LOGS, b"b", 1, b"new")
    assert await spool.prune(batch=10) == 1 + 24
    assert (await spool.trace_state("t", "tr"))[1] == {"o0"}
    assert await spool.append("t", Signal.LOGS, b"a", 1, b"old") is True  # forgotten: stored again
    assert await spool.append("t", Signal.LOGS, b"b", 1, b"new") is False


async def test_resync_sees_what_another_process_requeued(tmp_path):
    a = Spool.open(tmp_path)
    b = Spool.open(tmp_path)  # e.g. `relay replay` in another process
    try:
        await b.commit_traces([TraceCommit("t", "tr", b"xyz", 4, ["o"], {}, [])])
        assert a.outbound_spans.get("t", 0) == 0
        await a.resync()
        assert a.outbound_spans["t"] == 4 and a.outbound_bytes == 3
    finally:
        a.close()
        b.close()


async def test_trace_states_reads_a_batch_like_trace_state_one_by_one(spool):
    """The pipeline reads the state of a whole close batch in one job; it must agree with ``trace_state``."""
    await spool.commit_traces(
        [
            TraceCommit("a", "t1", b"x", 2, ["o1", "o2"], {"trace_id": "t1", "name": "n"}, []),
            TraceCommit("b", "t1", None, 0, ["o9"], {"trace_id": "t1"}, []),
        ]
    )
    keys = [("a", "t1"), ("b", "t1"), ("a", "unknown"), ("a", "t1")]
    states = await spool.trace_states(keys)
    assert states == {
        ("a", "t1"): ({"trace_id": "t1", "name": "n"}, {"o1", "o2"}),
        ("b", "t1"): ({"trace_id": "t1"}, {"o9"}),
    }
    for k in set(keys):
        assert states.get(k, (None, set())) == await spool.trace_state(*k)
    assert await spool.trace_states([]) == {}


async def test_read_inbound_stops_at_max_bytes_but_returns_at_least_one(spool):
    for i in range(5):
        await spool.append("t", Signal.TRACES, bytes(100) + bytes([i]), 1, None)
    assert len(await spool.read_inbound(0, 64, max_bytes=250)) == 3  # 101 + 101 + 101 ≥ 250: stops after the third
    assert len(await spool.read_inbound(0, 64, max_bytes=1)) == 1
    assert len(await spool.read_inbound(0, 64)) == 5
    assert len(await spool.read_inbound(0, 2, max_bytes=10_000)) == 2


@pytest.mark.parametrize("interval", [0.05, None])
async def test_the_checkpointer_copies_commits_into_the_database_file_off_the_writer(tmp_path, interval):
    """With a checkpoint interval, a thread of its own copies committed pages from the WAL into the database file
    (a PASSIVE checkpoint); the writer's automatic checkpoint, at ``WAL_AUTOCHECKPOINT`` pages, is then the
    fallback only. Seen by reading the database file alone (``immutable=1`` ignores the WAL): the rows are there
    soon after the commit with the checkpointer, and not without it (a few pages never reach the writer's
    threshold)."""
    from relay.store.sqlite import SqliteDB

    path = tmp_path / "c.db"
    db = SqliteDB(path, schema="CREATE TABLE IF NOT EXISTS t(v TEXT);", checkpoint_interval=interval)
    db.open()

    def rows_in_the_file() -> int:
        import sqlite3

        main = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
        try:
            return main.execute("SELECT count(*) FROM t").fetchone()[0]
        except sqlite3.OperationalError:  # no such table: the schema is still in the WAL only
            return 0
        finally:
            main.close()

    try:
        await db.run(lambda conn: conn.executemany("INSERT INTO t VALUES (?)", [("x" * 100,)] * 50))
        for _ in range(100):
            if rows_in_the_file():
                break
            await asyncio.sleep(0.02)
        assert rows_in_the_file() == (50 if interval else 0)
        names = {t.name for t in threading.enumerate()}
        assert ("sqlite-checkpoint:c.db" in names) == bool(interval)
    finally:
        db.close()
    assert "sqlite-checkpoint:c.db" not in {t.name for t in threading.enumerate()}
    assert rows_in_the_file() == 50  # closing the last connection checkpoints the rest


async def test_an_urgent_job_commits_before_the_jobs_queued_with_it(tmp_path):
    """``SqliteDB.run(urgent=True)`` (the spool append an acknowledgement waits for) is committed in its own group,
    ahead of the other jobs waiting at the same time."""
    import threading

    from relay.store.sqlite import SqliteDB

    db = SqliteDB(tmp_path / "u.db", schema="CREATE TABLE IF NOT EXISTS t(name TEXT);")
    db.open()
    try:
        gate = threading.Event()
        order: list[str] = []

        def blocker(conn):
            gate.wait(5)  # holds the writer thread while the next jobs queue up

        def job(name):
            def fn(conn):
                order.append(name)
                conn.execute("INSERT INTO t VALUES (?)", (name,))
                return db.commits

            return fn

        first = asyncio.ensure_future(db.run(blocker))
        await asyncio.sleep(0.05)
        normal = [asyncio.ensure_future(db.run(job(f"normal-{i}"))) for i in range(3)]
        await asyncio.sleep(0.05)
        urgent = asyncio.ensure_future(db.run(job("urgent"), urgent=True))
        await asyncio.sleep(0.05)
        gate.set()
        await first
        commits_at = {n: await f for n, f in [*(("normal", f) for f in normal), ("urgent", urgent)]}
        assert order == ["urgent", "normal-0", "normal-1", "normal-2"]
        assert commits_at["urgent"] < commits_at["normal"]  # a group (and commit) of its own, before the others
    finally:
        db.close()


def test_an_older_database_is_upgraded_in_place_keeping_exported_ids_and_send_state(tmp_path):
    """A database of a relay before issue 12 (``exported``: one row per observation id, hex text; send state in
    ``outbound.sent_ns``) is upgraded at open: export-once still skips the ids, prune still forgets them by age,
    the old table is gone, and a batch marked as sent is still read as possibly delivered (reconciled before a
    re-send). The old layout is written by plain sqlite3 with the former DDL."""
    import sqlite3

    old = sqlite3.connect(tmp_path / "relay.db")
    old.executescript("""
        CREATE TABLE exported (
            tenant TEXT NOT NULL, trace_id TEXT NOT NULL, obs_id TEXT NOT NULL, created_ns INTEGER NOT NULL,
            PRIMARY KEY (tenant, trace_id, obs_id)) WITHOUT ROWID;
        CREATE INDEX exported_age ON exported(created_ns);
        CREATE TABLE trace_meta (
            tenant TEXT NOT NULL, trace_id TEXT NOT NULL, info TEXT NOT NULL, updated_ns INTEGER NOT NULL,
            PRIMARY KEY (tenant, trace_id)) WITHOUT ROWID;
        CREATE TABLE outbound (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            tenant TEXT NOT NULL, payload BLOB NOT NULL, spans INTEGER NOT NULL, created_ns INTEGER NOT NULL,
            items TEXT NOT NULL DEFAULT '{}', sent_ns INTEGER);
        INSERT INTO outbound(tenant, payload, spans, created_ns, items, sent_ns)
            VALUES ('a', x'0102', 2, 1, '{"traces": 2}', 123), ('a', x'03', 1, 2, '{}', NULL);""")
    span_ids = ["00f067aa0ba902b7", "b7ad6b7169203331"]
    now = 2**62  # far future: recent whatever the clock says
    old.executemany(
        "INSERT INTO exported VALUES (?,?,?,?)",
        [("a", "tr1", span_ids[0], now), ("a", "tr1", span_ids[1], now), ("a", "tr1", "tool:x", 5)]
        + [("b", "tr1", "o1", now), ("a", "tr2", "llm-1", 7)],
    )
    old.execute("INSERT INTO trace_meta VALUES ('a', 'tr1', '{\"name\": \"n\"}', ?)", (now,))
    old.commit()
    old.close()

    async def check():
        s = Spool.open(tmp_path, dedup_retention=3600)
        try:
            assert await s.trace_state("a", "tr1") == ({"name": "n"}, {*span_ids, "tool:x"})
            assert await s.trace_states([("a", "tr1"), ("b", "tr1"), ("a", "tr2"), ("a", "none")]) == {
                ("a", "tr1"): ({"name": "n"}, {*span_ids, "tool:x"}),
                ("b", "tr1"): (None, {"o1"}),
                ("a", "tr2"): (None, {"llm-1"}),
            }
            rows = await s.db.run(
                lambda c: c.execute(
                    "SELECT tenant, trace_id, created_ns, obs_ids FROM exported_ids ORDER BY created_ns, tenant"
                ).fetchall()
            )
            # one row per (trace, commit time); span ids packed as 8 bytes each
            assert rows == [
                ("a", "tr1", 5, "tool:x"),
                ("a", "tr2", 7, "llm-1"),
                ("a", "tr1", now, bytes.fromhex("".join(span_ids))),
                ("b", "tr1", now, "o1"),
            ]
            tables = await s.db.run(
                lambda c: c.execute("SELECT name FROM sqlite_master WHERE name LIKE 'exported%'").fetchall()
            )
            assert sorted(t for (t,) in tables) == ["exported_ids", "exported_ids_age", "exported_ids_trace"]
            first, second = await s.read_outbound("a", 10, 10_000)
            assert (first.payload, first.sent_ns, first.items, second.sent_ns) == (
                b"\x01\x02",
                123,
                {"traces": 2},
                None,
            )
            await s.mark_sending([second])
            await s.ack_outbound([first])
            [left] = await s.read_outbound("a", 10, 10_000)
            assert left.id == second.id and left.sent_ns is not None
            await s.replace_outbound_state([left])
            assert [b.sent_ns for b in await s.read_outbound("a", 10, 10_000)] == [None]
            assert await s.prune() == 2  # the two old commits (ages 5 and 7 ns) are forgotten, the rest kept
            assert await s.trace_state("a", "tr1") == ({"name": "n"}, set(span_ids))
            assert await s.trace_state("a", "tr2") == (None, set())
        finally:
            s.close()

    asyncio.run(check())
    s = Spool.open(tmp_path)  # opening again changes nothing (the migration ran once)
    try:
        assert asyncio.run(s.trace_state("b", "tr1")) == (None, {"o1"})
    finally:
        s.close()


def test_exported_ids_pack_span_ids_as_bytes_and_anything_else_as_text():
    from relay.store.schema import pack_ids, unpack_ids

    spans = ["00f067aa0ba902b7", "ffffffffffffffff"]
    assert pack_ids(spans) == bytes.fromhex("00f067aa0ba902b7ffffffffffffffff")
    for ids in (spans, ["00F067AA0BA902B7"], ["o1", "o2"], [*spans, "tool:1"], ["0" * 15], ["g" * 16], []):
        assert unpack_ids(pack_ids(ids)) == ids
