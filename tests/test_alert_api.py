"""The alert API on a real loopback server: ``GET /api/v1/alerts`` (Prometheus envelope, camelCase, mute status),
``GET /api/v2/alerts/groups`` and ``POST /-/reload``."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web

from relay.alert import Alert, AlertState
from relay.alerting.api import alerting_routes
from relay.alerting.config import AlertingConfig
from relay.alerting.dispatch.dispatcher import Dispatcher
from relay.alerting.dispatch.outbox import Outbox
from relay.alerting.dispatch.silences import Silences
from relay.matchers import Matcher
from relay.store.sqlite import SqliteDB

T0 = 1_780_000_000.0  # 2026-05-28T20:26:40Z

CONFIG = AlertingConfig.model_validate(
    {
        "route": {"receiver": "team", "group_by": ["alertname", "team"]},
        "receivers": [{"name": "team"}],
        "inhibit_rules": [
            {
                "source_matchers": ['alertname="BudgetExceeded"'],
                "target_matchers": ['alertname="BudgetWarning"'],
                "equal": ["team"],
            }
        ],
    }
)

WARNING_A = Alert(
    labels={"alertname": "BudgetWarning", "team": "a", "severity": "warning"},
    annotations={"summary": "Team a at 85 % of its monthly budget"},
    state=AlertState.FIRING,
    active_at=T0,
    fired_at=T0 + 60,
    value=850.0,
    values={"spend": 850.0, "limit": 1000.0},
    links={"Langfuse": "https://lf.example/sessions/s1"},
    rule="budgets.yaml:team-monthly",
    window="month (UTC)",
)
EXCEEDED_A = Alert(
    labels={"alertname": "BudgetExceeded", "team": "a"}, state=AlertState.FIRING, active_at=T0, fired_at=T0
)
WARNING_B = Alert(
    labels={"alertname": "BudgetWarning", "team": "b"}, state=AlertState.FIRING, active_at=T0, fired_at=T0
)
PENDING_C = Alert(labels={"alertname": "ToolFailures", "team": "c"}, state=AlertState.PENDING, active_at=T0 + 30)
RESOLVED_D = Alert(
    labels={"alertname": "ToolFailures", "team": "d"},
    state=AlertState.RESOLVED,
    active_at=T0,
    fired_at=T0,
    ends_at=T0 + 90,
)


class Api:
    def __init__(self, url: str, dispatcher: Dispatcher, silences: Silences, reloads: list):
        self.url, self.dispatcher, self.silences, self.reloads = url, dispatcher, silences, reloads

    async def get(self, path: str, **params):
        async with aiohttp.ClientSession() as http:
            async with http.get(self.url + path, params=params) as r:
                return r.status, await r.json()


@pytest.fixture
async def api(aiohttp_server, tmp_path):
    db = SqliteDB(tmp_path / "relay.db")
    db.open()
    now = lambda: T0 + 120  # noqa: E731
    silences = Silences(db, now)
    dispatcher = Dispatcher(CONFIG, db=db, outbox=Outbox(db, {}, now), silences=silences, now=now)
    current = [WARNING_A, EXCEEDED_A, WARNING_B, PENDING_C, RESOLVED_D]
    dispatcher.put(current)
    reloads: list[str] = []

    async def reload():
        reloads.append("called")
        if len(reloads) > 1:
            return False, "rules/budgets.yaml:3: unknown field 'treshold'"
        return True, None

    app = web.Application()
    alerting_routes(app, alerts=lambda: current, dispatcher=dispatcher, silences=silences, reload=reload)
    server = await aiohttp_server(app)
    yield Api(f"http://127.0.0.1:{server.port}", dispatcher, silences, reloads)
    db.close()


async def test_alerts_lists_active_alerts_with_state_and_mute_status(api):
    sid = await api.silences.create([Matcher("team", "=", "b")], T0, T0 + 3600, "ann", "known")
    status, body = await api.get("/api/v1/alerts")
    assert status == 200 and body["status"] == "success"
    alerts = {a["labels"]["alertname"] + "/" + a["labels"]["team"]: a for a in body["data"]["alerts"]}
    assert set(alerts) == {"BudgetWarning/a", "BudgetExceeded/a", "BudgetWarning/b", "ToolFailures/c"}  # no resolved
    assert alerts["BudgetWarning/a"] == {
        "labels": {"alertname": "BudgetWarning", "team": "a", "severity": "warning"},
        "annotations": {"summary": "Team a at 85 % of its monthly budget"},
        "state": "firing",
        "activeAt": "2026-05-28T20:26:40.000Z",
        "firedAt": "2026-05-28T20:27:40.000Z",
        "value": 850.0,
        "values": {"spend": 850.0, "limit": 1000.0},
        "fingerprint": WARNING_A.fingerprint,
        "silencedBy": [],
        "inhibitedBy": [EXCEEDED_A.fingerprint],
        "rule": "budgets.yaml:team-monthly",
        "window": "month (UTC)",
        "links": {"Langfuse": "https://lf.example/sessions/s1"},
        "generatorURL": "",
    }
    assert alerts["BudgetWarning/b"]["silencedBy"] == [sid] and alerts["BudgetWarning/b"]["inhibitedBy"] == []
    assert alerts["ToolFailures/c"]["state"] == "pending" and alerts["ToolFailures/c"]["firedAt"] is None


async def test_alerts_filters_by_matchers_and_state(api):
    _, body = await api.get("/api/v1/alerts", filter='alertname="BudgetWarning"')
    assert sorted(a["labels"]["team"] for a in body["data"]["alerts"]) == ["a", "b"]
    _, body = await api.get("/api/v1/alerts", state="pending")
    assert [a["labels"]["team"] for a in body["data"]["alerts"]] == ["c"]
    status, body = await api.get("/api/v1/alerts", filter="team=~(")
    assert status == 400 and "invalid regex" in body
    status, _ = await api.get("/api/v1/alerts", state="resolved")
    assert status == 400


async def test_alert_groups_show_receivers_and_suppression(api):
    status, groups = await api.get("/api/v2/alerts/groups")
    assert status == 200
    by_labels = {(g["labels"]["alertname"], g["labels"]["team"]): g for g in groups}
    assert set(by_labels) == {
        ("BudgetWarning", "a"),
        ("BudgetExceeded", "a"),
        ("BudgetWarning", "b"),
        ("ToolFailures", "d"),
    }
    g = by_labels[("BudgetWarning", "a")]
    assert g["receiver"] == {"name": "team"} and g["groupKey"] == '{}:{alertname="BudgetWarning", team="a"}'
    (a,) = g["alerts"]
    assert a["status"] == {"state": "suppressed", "silencedBy": [], "inhibitedBy": [EXCEEDED_A.fingerprint]}
    assert a["startsAt"] == "2026-05-28T20:27:40.000Z" and a["fingerprint"] == WARNING_A.fingerprint
    assert by_labels[("BudgetWarning", "b")]["alerts"][0]["status"]["state"] == "active"


async def test_reload_reports_success_and_failure_like_alertmanager(api):
    async with aiohttp.ClientSession() as http:
        async with http.post(api.url + "/-/reload") as r:
            assert r.status == 200
        async with http.post(api.url + "/-/reload") as r:
            assert r.status == 500
            assert await r.text() == "failed to reload config: rules/budgets.yaml:3: unknown field 'treshold'\n"
    assert len(api.reloads) == 2


# ------------------------------------------------------------------ issue 16: amtool parity, as a user runs it
async def relay_cli(*argv: str) -> tuple[int, str, str]:
    """``python -m relay ARGV…`` as a subprocess (the API server runs in this test's loop)."""
    import asyncio
    import subprocess
    import sys
    from pathlib import Path

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "relay",
        *argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[1],
    )
    out, err = await proc.communicate()
    return proc.returncode, out.decode(), err.decode()


async def test_alert_query_like_amtool(api):
    import json

    sid = await api.silences.create([Matcher("team", "=", "b")], T0, T0 + 3600, "ann", "known")
    code, out, _ = await relay_cli("alert", "--url", api.url, "query")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["Alertname", "Starts", "At", "Summary", "State"]
    names = sorted(ln.split()[0] for ln in lines[1:])
    assert names == ["BudgetExceeded", "ToolFailures"]  # silenced and inhibited ones hidden, like amtool
    code, out, _ = await relay_cli("alert", "--url", api.url, "query", "BudgetWarning", "-s", "-i", "-o", "json")
    got = json.loads(out)
    assert code == 0 and sorted(a["labels"]["team"] for a in got) == ["a", "b"]
    assert {a["labels"]["team"]: a["silencedBy"] for a in got} == {"a": [], "b": [sid]}
    code, out, _ = await relay_cli("alert", "--url", api.url, "query", "-i", 'team="a"')
    rows = {ln.split()[0]: ln for ln in out.splitlines()[1:]}
    assert "firing (inhibited)" in rows["BudgetWarning"] and "Team a at 85 %" in rows["BudgetWarning"]
    code, _, err = await relay_cli("alert", "--url", api.url, "query", 'team=~"("')
    assert code == 2 and "invalid regex" in err


async def test_silence_query_with_matchers_and_json(api):
    import json

    s1 = await api.silences.create([Matcher("team", "=", "b")], T0, T0 + 3600, "ann", "team b")
    s2 = await api.silences.create(
        [Matcher("alertname", "=~", "Budget.*"), Matcher("team", "=", "c")], T0, T0 + 3600, "bob", "budgets of c"
    )
    code, out, _ = await relay_cli("silence", "--url", api.url, "query", "-q", 'team="b"')
    assert code == 0 and out.split() == [s1]
    code, out, _ = await relay_cli("silence", "--url", api.url, "query", "-q", "BudgetWarning")  # alertname=…
    assert out.split() == [s2]
    code, out, _ = await relay_cli("silence", "--url", api.url, "query", "-o", "json")
    assert code == 0 and sorted(s["id"] for s in json.loads(out)) == sorted([s1, s2])
    assert await relay_cli("silence", "--url", api.url, "expire", s1) == (0, "", "")
    code, out, _ = await relay_cli("silence", "--url", api.url, "query", "-q")
    assert out.split() == [s2]


def test_routes_test_names_the_receiver_like_amtool(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    cfg = tmp_path / "c.yaml"
    cfg.write_text("""\
alerting:
  route:
    receiver: team-slack
    routes:
      - matchers: ['severity="critical"']
        receiver: oncall
        continue: true
      - matchers: ['team.id="data"']
        receiver: data-jira
  receivers:
    - name: team-slack
      slack_configs: [{bot_token: '${env:SLACK_BOT_TOKEN}', channel: C0ALERTS}]
    - name: oncall
      webhook_configs: [{url: 'http://127.0.0.1:9/page'}]
    - name: data-jira
      webhook_configs: [{url: 'http://127.0.0.1:9/jira'}]
""")

    def routes(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "relay", "routes", "test", "--config", str(cfg), *argv],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parents[1],
            timeout=60,
            env={"PATH": "/usr/bin:/bin"},
        )  # no SLACK_BOT_TOKEN: routing needs no secret

    r = routes("alertname=TeamBudget", "team.id=platform")
    assert r.returncode == 0 and r.stdout.strip() == "team-slack", r.stderr
    r = routes("severity=critical", "team.id=data")
    assert r.stdout.strip() == "oncall,data-jira"
    r = routes("team.id=data", "--verify-receivers", "team-slack")
    assert r.returncode == 1 and "expected receivers 'team-slack' but got 'data-jira'" in r.stderr
