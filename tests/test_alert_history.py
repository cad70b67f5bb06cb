"""The reports' alert history: firing episodes recorded from the alert feed, listed per period with their Jira
issue (from the Jira integration's saved state in the outbox's ``receiver_state``)."""

from __future__ import annotations

import json

from relay.alert import Alert, AlertState
from relay.reports.alert_history import AlertHistory
from relay.store.sqlite import SqliteDB


def alert(name: str, state: AlertState, fired: float, ends: float | None = None, tenant: str = "t1") -> Alert:
    return Alert(
        labels={"alertname": name, "tenant": tenant, "severity": "critical"},
        state=state,
        active_at=fired,
        fired_at=fired,
        ends_at=ends,
    )


async def test_episodes_overlapping_a_period_with_their_jira_issue(tmp_path):
    db = SqliteDB(tmp_path / "relay.db")
    db.open()
    try:
        h = AlertHistory(db)
        a = alert("Budget", AlertState.FIRING, 100.0)
        b = alert("Errors", AlertState.FIRING, 50.0)
        h.record(
            [
                a,
                b,
                alert("Other", AlertState.FIRING, 120.0, tenant="t2"),
                Alert(labels={"alertname": "P", "tenant": "t1"}, state=AlertState.PENDING, active_at=10.0),
            ]
        )
        h.record([alert("Errors", AlertState.RESOLVED, 50.0, ends=80.0)])  # same episode: resolved
        await h.flush()
        db.apply_schema(
            "CREATE TABLE IF NOT EXISTS receiver_state (integration TEXT, group_key TEXT, state TEXT, updated REAL);"
        )
        db.run_sync(
            lambda c: c.execute(
                "INSERT INTO receiver_state VALUES (?,?,?,?)",
                (
                    "ops/jira/0",
                    "{}:{}",
                    json.dumps({"issue": "OPS-7", "created_at": 101.0, "firing": [a.fingerprint], "action": "created"}),
                    101.0,
                ),
            )
        )
        got = await h.events("t1", 90.0, 200.0)  # Errors resolved at 80: before the period
        assert [(e.alertname, e.fired_at, e.resolved_at, e.jira_key, e.jira_opened_at) for e in got] == [
            ("Budget", 100.0, None, "OPS-7", 101.0)
        ]
        got = await h.events("t1", 0.0, 200.0)
        assert [(e.alertname, e.resolved_at, e.severity) for e in got] == [
            ("Errors", 80.0, "critical"),
            ("Budget", None, "critical"),
        ]
        assert [e.alertname for e in await h.events("t2", 0.0, 200.0)] == ["Other"]
        assert await h.events("t1", 0.0, 40.0) == []  # nothing had fired yet
    finally:
        db.close()
