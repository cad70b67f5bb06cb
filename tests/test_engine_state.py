"""Backfill from the ledger (one scan, changes during the scan counted once) and alert state that survives a
restart (SQLite): a firing alert is neither forgotten nor sent again as new; ``for:`` keeps counting."""

from __future__ import annotations

import sqlite3

import pytest

from relay.alert import AlertState
from relay.alerting.evaluation.engine import RuleEngine
from relay.alerting.evaluation.state import AlertStateStore
from relay.alerting.evaluation.windows import CalendarWindow
from relay.alerting.rules.load import RuleSet
from tests.support.clock import Clock
from tests.test_engine_support import T0, MemoryLedger, Sink, by, rec, write_rules

RULES = """\
groups:
  - name: g
    rules:
      - alert: TeamBudget
        kind: budget
        group_by: [team.id]
        limit_usd: 100
        window: {calendar: month, timezone: Europe/Berlin}
        thresholds: [{percent: 50, severity: info}, {percent: 100, severity: critical}]
      - alert: HourlySpend
        kind: threshold
        field: cost_usd
        window: 1h
        value: 30
        for: 10m
        labels: {severity: warning}
"""


async def start(tmp_path, clock, sink, ledger, *, db=None, text=RULES, **kw) -> RuleEngine:
    rules = RuleSet.load([write_rules(tmp_path / "rules.yaml", text)])
    state = AlertStateStore(db, resolved_retention=kw.get("resolved_retention", 3600.0)) if db is not None else None
    e = RuleEngine(rules, on_alerts=sink, now=clock, state=state, **kw)
    await e.restore(ledger)
    return e


def team(name: str) -> dict[str, str]:
    return {"team.id": name}


# ---------------------------------------------------------------------------------------------------- backfill


async def test_backfill_scans_once_from_the_oldest_window_start_and_fires(tmp_path):
    clock, sink, ledger = Clock(T0), Sink(), MemoryLedger()
    month_start = CalendarWindow("month", "Europe/Berlin").bounds(T0)[0]
    await ledger.write(
        [
            rec("old", month_start - 10, cost=500.0, labels=team("p")),
            rec("a", month_start + 10, cost=30.0, labels=team("p")),
            rec("b", T0 - 60, cost=30.0, labels=team("p")),
        ]
    )
    await start(tmp_path, clock, sink, ledger)
    assert len(ledger.scans) == 1 and ledger.scans[0][0] == round(month_start * 1e9)  # the month is the longest
    (a,) = sink.take()
    assert a.labels["threshold"] == "50" and a.values["spend"] == 60.0 and a.fired_at == T0
    # HourlySpend: $30 in the last hour is not above 30; the record of the month's start is outside the hour


async def test_writes_during_the_backfill_are_counted_once(tmp_path):
    clock, sink, ledger = Clock(T0), Sink(), MemoryLedger()
    recs = [rec(f"r{i}", T0 - 3000 + i, cost=1.0, labels=team("p")) for i in range(6)]
    recent = rec("g", T0 - 60, cost=1.0, labels=team("p"))
    await ledger.write([*recs, recent])
    rules = RuleSet.load([write_rules(tmp_path / "rules.yaml", RULES)])
    e = RuleEngine(rules, on_alerts=sink, now=clock)
    gap: list = []

    def again(r, cost):
        return rec(r.key, r.time_ns / 1e9, cost=cost, labels=team("p"))

    async def during(batch_no: int) -> None:  # the scan reads one record per batch, in time order
        if batch_no == 1:  # r0 was scanned
            # upgrade of a scanned record that also moves it later in time: the scan reads it a second time
            e.observe(await ledger.write([rec("r0", T0 - 30, cost=4.0, labels=team("p"))]))
            e.observe(await ledger.write([again(recs[4], 5.0)]))  # upgrade of a record not scanned yet
            e.observe(await ledger.retract("default", "r5"))  # retraction of a record not scanned yet
            e.observe(await ledger.write([rec("n1", T0 - 10, cost=7.0, labels=team("p"))]))  # new; the scan sees it
        elif batch_no == 5:  # next is g: written now, read by the scan, observed only after (the write/observe gap)
            gap.extend(await ledger.write([again(recent, 9.0)]))
        elif batch_no == 6:
            e.observe(gap)

    ledger.on_batch = during
    real_scan = ledger.scan

    def scan_one_by_one(start_ns, end_ns, tenant=None, batch=10_000):
        return real_scan(start_ns, end_ns, tenant, batch=1)

    ledger.scan = scan_one_by_one  # type: ignore[method-assign]
    await e.restore(ledger)
    assert len(ledger.scans) == 1 and not any(a.name == "TeamBudget" for a in e.alerts())
    # r0 4 + r1 1 + r2 1 + r3 1 + r4 5 + g 9 + n1 7 (r5 retracted) = 28; $22 more makes exactly 50 %
    e.observe(await ledger.write([rec("x", T0, cost=22.0, labels=team("p"))]))
    (a,) = [a for a in e.alerts() if a.name == "TeamBudget"]
    assert a.values["spend"] == 50.0
    (h,) = [a for a in e.alerts() if a.name == "HourlySpend"]
    assert h.state is AlertState.PENDING and h.values["value"] == 50.0


# ---------------------------------------------------------------------------------------------------- restarts


async def test_a_firing_alert_survives_a_restart_without_being_sent_again(tmp_path, db):
    clock, sink, ledger = Clock(T0), Sink(), MemoryLedger()
    e1 = await start(tmp_path, clock, sink, ledger, db=db)
    e1.observe(await ledger.write([rec("a", T0, cost=60.0, labels=team("p"))]))
    (fired,) = sink.take()
    await e1.drain()

    clock.advance(20)  # restart
    sink2 = Sink()
    e2 = await start(tmp_path, clock, sink2, ledger, db=db, resend_interval=60.0)
    (again,) = sink2.take()  # re-sent once for the dispatcher: the same alert, not a new one
    assert again.state is AlertState.FIRING and again.fingerprint == fired.fingerprint
    assert again.fired_at == fired.fired_at == T0 and again.active_at == T0
    (a,) = [x for x in e2.alerts() if x.name == "TeamBudget"]
    assert a.state is AlertState.FIRING and a.fired_at == T0
    clock.advance(30)
    e2.evaluate()
    assert sink2.take() == []  # then on the normal resend schedule
    # and it resolves normally: the spend is retracted
    e2.observe(await ledger.retract("default", "a"))
    (r,) = sink2.take()
    assert r.state is AlertState.RESOLVED and r.fired_at == T0
    await e2.drain()


async def test_a_restored_alert_whose_condition_no_longer_holds_resolves(tmp_path, db):
    clock, sink, ledger = Clock(T0), Sink(), MemoryLedger()
    e1 = await start(tmp_path, clock, sink, ledger, db=db)
    e1.observe(await ledger.write([rec("a", T0, cost=60.0, labels=team("p"))]))
    assert len(sink.take()) == 1
    await e1.drain()
    await ledger.retract("default", "a")  # e.g. the ledger changed while relay was down
    clock.advance(5)
    sink2 = Sink()
    e2 = await start(tmp_path, clock, sink2, ledger, db=db)
    (r,) = sink2.take()
    assert r.state is AlertState.RESOLVED and r.fired_at == T0 and r.ends_at == T0 + 5
    await e2.drain()


async def test_pending_for_keeps_counting_across_a_restart(tmp_path, db):
    clock, sink, ledger = Clock(T0), Sink(), MemoryLedger()
    e1 = await start(tmp_path, clock, sink, ledger, db=db)
    e1.observe(await ledger.write([rec("a", T0, cost=40.0)]))
    assert [a.state for a in e1.alerts() if a.name == "HourlySpend"] == [AlertState.PENDING]
    await e1.drain()
    clock.advance(300)
    sink2 = Sink()
    e2 = await start(tmp_path, clock, sink2, ledger, db=db)
    (p,) = [a for a in e2.alerts() if a.name == "HourlySpend"]
    assert p.state is AlertState.PENDING and p.active_at == T0
    assert e2.next_wakeup() <= T0 + 600
    clock.t = T0 + 600  # the original deadline, not restart + for
    e2.evaluate(due_only=True)
    (f,) = by(sink2.take(), alertname="HourlySpend")
    assert f.state is AlertState.FIRING and f.active_at == T0 and f.fired_at == T0 + 600
    await e2.drain()


async def test_alerts_of_a_rule_removed_while_down_resolve(tmp_path, db):
    clock, sink, ledger = Clock(T0), Sink(), MemoryLedger()
    e1 = await start(tmp_path, clock, sink, ledger, db=db)
    e1.observe(await ledger.write([rec("a", T0, cost=60.0, labels=team("p"))]))
    assert len(sink.take()) == 1
    await e1.drain()
    only_hourly = RULES[RULES.index("      - alert: HourlySpend") :]
    sink2 = Sink()
    e2 = await start(tmp_path, clock, sink2, ledger, db=db, text="groups:\n  - name: g\n    rules:\n" + only_hourly)
    (r,) = sink2.take()
    assert r.state is AlertState.RESOLVED and r.name == "TeamBudget"
    await e2.drain()


async def test_state_rows_dropped_pending_deleted_and_resolved_pruned(tmp_path, db):
    clock, sink, ledger = Clock(T0), Sink(), MemoryLedger()
    e = await start(tmp_path, clock, sink, ledger, db=db, resolved_retention=600.0)

    def rows() -> list[tuple[str, str]]:
        return db.run_sync(lambda c: c.execute("SELECT rule, state FROM alert_state ORDER BY state").fetchall())

    e.observe(await ledger.write([rec("a", T0, cost=40.0)]))  # HourlySpend pending, TeamBudget ($40 < 50) nothing
    await e.drain()
    assert [s for _, s in rows()] == ["pending"]
    e.observe(await ledger.retract("default", "a"))
    await e.drain()
    assert rows() == []  # the dropped pending alert is gone
    e.observe(await ledger.write([rec("b", T0, cost=60.0, labels=team("p"))]))
    await e.drain()
    assert sorted(s for _, s in rows()) == ["firing", "pending"]  # TeamBudget 50 %, HourlySpend pending
    clock.advance(60)
    e.observe(await ledger.retract("default", "b"))
    await e.drain()
    assert [s for _, s in rows()] == ["resolved"]  # kept for the retention
    clock.advance(601)
    e.observe(await ledger.write([rec("c", clock.t, cost=40.0, labels=team("q"))]))
    await e.drain()
    assert [s for _, s in rows()] == ["pending"]  # the resolved one was pruned after the retention
    with pytest.raises(sqlite3.IntegrityError):  # (rule, fingerprint) is the key
        db.run_sync(lambda c: c.execute("INSERT INTO alert_state SELECT * FROM alert_state"))
