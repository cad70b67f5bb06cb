"""Hot reload (``RulesManager``): a broken file keeps the old rules and says why; unchanged rules keep their
state; changed rules keep alerts whose labels did not change; new aggregations are backfilled; removed rules'
alerts resolve; file changes and SIGHUP-style requests trigger reloads."""

from __future__ import annotations

import asyncio
import logging

from relay.alert import AlertState
from relay.alerting.evaluation.engine import RuleEngine
from relay.alerting.evaluation.manager import RulesManager
from relay.alerting.evaluation.windows import RollingWindow
from relay.alerting.rules.load import RuleSet
from relay.component import deadline_in
from tests.support.clock import Clock
from tests.test_engine_support import T0, MemoryLedger, Sink, by, rec, write_rules

RULES = """\
groups:
  - name: g
    rules:
      - alert: Budget
        kind: budget
        group_by: [team.id]
        limit_usd: 100
        window: 1d
        thresholds: [{percent: 50, severity: info}]
      - alert: Hourly
        kind: threshold
        field: cost_usd
        window: 1h
        value: 10
        labels: {severity: warning}
"""


async def setup(tmp_path, text=RULES):
    path = write_rules(tmp_path / "rules.yaml", text)
    clock, sink, ledger = Clock(T0), Sink(), MemoryLedger()
    engine = RuleEngine(RuleSet.load([path]), on_alerts=sink, now=clock)
    await engine.restore(ledger)
    manager = RulesManager([path], engine, ledger, watch_interval=0.02, watch=True)
    return path, clock, sink, ledger, engine, manager


async def fire_both(engine, ledger, sink):
    engine.observe(await ledger.write([rec("a", T0, cost=60.0, labels={"team.id": "p"})]))
    sent = sink.take()
    assert sorted(a.name for a in sent) == ["Budget", "Hourly"]
    return {a.name: a for a in sent}


async def test_a_broken_file_keeps_the_old_rules_and_says_why(tmp_path, caplog):
    path, clock, sink, ledger, engine, manager = await setup(tmp_path)
    await fire_both(engine, ledger, sink)
    ids = engine.rule_ids()
    write_rules(tmp_path / "rules.yaml", RULES.replace("limit_usd: 100", "limit_usd: nope"))
    with caplog.at_level(logging.ERROR, logger="relay.alerting"):
        ok, error = await manager.reload()
    assert not ok and error == (
        f'{path}:7: group "g", rule "Budget": limit_usd: Input should be a valid number, '
        "unable to parse string as a number"
    )
    assert "keeping the previous rules" in caplog.text and error in caplog.text
    status = manager.last_reload
    assert status.ok is False and status.error == error and status.rules == 2 and status.files == [path]
    assert engine.rule_ids() == ids and sink.take() == []
    engine.observe(await ledger.write([rec("b", T0, cost=1.0, labels={"team.id": "q"})]))  # still evaluating
    assert len([a for a in engine.alerts() if a.state is AlertState.FIRING]) == 2


async def test_unchanged_rules_keep_state_and_changed_rules_keep_alerts_with_the_same_labels(tmp_path):
    path, clock, sink, ledger, engine, manager = await setup(tmp_path)
    fired = await fire_both(engine, ledger, sink)
    clock.advance(5)
    # Hourly: new threshold, same labels and aggregation; Budget unchanged
    write_rules(tmp_path / "rules.yaml", RULES.replace("value: 10", "value: 20"))
    scans = len(ledger.scans)
    assert await manager.reload() == (True, None)
    assert len(ledger.scans) == scans  # no aggregation changed: nothing to backfill
    assert sink.take() == []  # nothing resolved, nothing sent again as new
    now = {a.name: a for a in engine.alerts()}
    assert now["Hourly"].fired_at == fired["Hourly"].fired_at and now["Budget"].fired_at == fired["Budget"].fired_at
    # Hourly's condition under the new threshold: 60 > 20 still holds. Raise it above the spend: resolves.
    write_rules(tmp_path / "rules.yaml", RULES.replace("value: 10", "value: 100"))
    assert await manager.reload() == (True, None)
    (r,) = sink.take()
    assert r.name == "Hourly" and r.state is AlertState.RESOLVED and r.fired_at == T0
    assert manager.last_reload.ok and manager.last_reload.rules == 2


async def test_a_changed_aggregation_is_backfilled_and_its_alerts_continue(tmp_path):
    path, clock, sink, ledger, engine, manager = await setup(tmp_path)
    fired = await fire_both(engine, ledger, sink)
    clock.advance(5)
    write_rules(tmp_path / "rules.yaml", RULES.replace("window: 1d", "window: 2d"))
    scans = len(ledger.scans)
    assert await manager.reload() == (True, None)
    assert len(ledger.scans) == scans + 1
    assert ledger.scans[-1][0] == int(RollingWindow(2 * 86400).oldest_needed(clock.t) * 1e9)  # only the new window
    assert sink.take() == []  # refilled from the ledger: still $60, same labels, same alert
    (b,) = by(engine.alerts(), alertname="Budget")
    assert b.state is AlertState.FIRING and b.fired_at == fired["Budget"].fired_at and b.values["spend"] == 60.0


async def test_a_removed_rule_resolves_its_alerts(tmp_path):
    path, clock, sink, ledger, engine, manager = await setup(tmp_path)
    await fire_both(engine, ledger, sink)
    write_rules(tmp_path / "rules.yaml", RULES[: RULES.index("      - alert: Hourly")])
    assert await manager.reload() == (True, None)
    (r,) = sink.take()
    assert r.name == "Hourly" and r.state is AlertState.RESOLVED
    assert [x.split(":")[-1] for x in engine.rule_ids()] == ["Budget"]


async def test_file_changes_and_sighup_requests_reload(tmp_path):
    path, clock, sink, ledger, engine, manager = await setup(tmp_path)
    await manager.start()
    try:
        write_rules(tmp_path / "extra.yaml", "groups: []\n")  # not matched by the configured path: ignored
        write_rules(tmp_path / "rules.yaml", RULES[: RULES.index("      - alert: Hourly")])
        for _ in range(250):
            await asyncio.sleep(0.02)
            if len(engine.rule_ids()) == 1:
                break
        assert len(engine.rule_ids()) == 1 and manager.last_reload.ok
        manager.files.append(str(tmp_path / "more-*.yaml"))
        write_rules(tmp_path / "more-1.yaml", RULES.replace("Budget", "Budget2").replace("Hourly", "Hourly2"))
        for _ in range(250):  # a new file matching a glob is a change too
            await asyncio.sleep(0.02)
            if len(engine.rule_ids()) == 3:
                break
        assert len(engine.rule_ids()) == 3
        await manager.shutdown(deadline_in(5))
        write_rules(tmp_path / "rules.yaml", RULES)
        manager.request_reload()  # what the SIGHUP handler calls
        for _ in range(250):
            await asyncio.sleep(0.01)
            if len(engine.rule_ids()) == 4:
                break
        assert len(engine.rule_ids()) == 4
    finally:
        await manager.shutdown(deadline_in(5))
