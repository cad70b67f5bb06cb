"""The dispatcher with an injected clock: group_wait / group_interval / repeat_interval, resolve handling,
inhibition, silences, the notification log across restarts, and the one-job atomicity of outbox + nflog."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest

from relay.alert import Alert, AlertState
from relay.alerting.config import AlertingConfig
from relay.alerting.dispatch.dispatcher import Dispatcher
from relay.alerting.dispatch.outbox import Outbox
from relay.alerting.dispatch.silences import Silences
from relay.component import deadline_in
from relay.matchers import Matcher
from relay.notify.base import Notifier
from relay.store.sqlite import SqliteDB
from tests.support.clock import Clock

T0 = 1_780_000_000.0
HOOK = "http://127.0.0.1:9/hook"


def config(**route) -> AlertingConfig:
    """Receiver ``team`` has a webhook (send_resolved) and a Slack webhook with send_resolved off."""
    return AlertingConfig.model_validate(
        {
            "external_url": "http://relay:8888",
            "route": {"receiver": "team", "group_by": ["alertname", "team"], **route},
            "receivers": [
                {
                    "name": "team",
                    "webhook_configs": [{"url": HOOK}],
                    "slack_configs": [{"webhook_url": "http://127.0.0.1:9/slack", "send_resolved": False}],
                },
                {"name": "oncall", "webhook_configs": [{"url": HOOK}]},
            ],
            "inhibit_rules": [
                {
                    "source_matchers": ['alertname="BudgetExceeded"'],
                    "target_matchers": ['alertname="BudgetWarning"'],
                    "equal": ["team"],
                }
            ],
        }
    )


HOOK_ID, SLACK_ID, ONCALL_ID = "team/webhook/0", "team/slack/0", "oncall/webhook/0"


def alert(name: str = "BudgetWarning", state: AlertState = AlertState.FIRING, at: float = T0, **labels: str) -> Alert:
    return Alert(
        labels={"alertname": name, **labels},
        state=state,
        active_at=at,
        fired_at=None if state is AlertState.PENDING else at,
        ends_at=at if state is AlertState.RESOLVED else None,
        value=0.8,
    )


def resolved(a: Alert, at: float) -> Alert:
    return Alert(labels=a.labels, state=AlertState.RESOLVED, active_at=a.active_at, fired_at=a.fired_at, ends_at=at)


class Env:
    """A dispatcher with its outbox (not started: notifications stay queued for inspection) and silences."""

    def __init__(self, path, clock: Clock, cfg: AlertingConfig):
        self.path, self.clock, self.cfg = path, clock, cfg
        self.open()

    def open(self) -> None:
        self.db = SqliteDB(self.path)
        self.db.open()
        self.outbox = Outbox(self.db, {}, self.clock)
        self.silences = Silences(self.db, self.clock)
        self.d = Dispatcher(self.cfg, db=self.db, outbox=self.outbox, silences=self.silences, now=self.clock)

    def restart(self) -> None:
        self.db.close()
        self.open()

    async def at(self, offset: float) -> None:
        """Move the clock to T0 + offset and run the due flushes."""
        self.clock.t = T0 + offset
        await self.d.flush_due()

    async def sent(self, integration: str = HOOK_ID):
        """Queued notifications of one integration (delivery is not running), then forget them."""
        items = await self.outbox.pending(integration)
        await self.db.run(lambda c: c.execute("DELETE FROM outbox WHERE integration = ?", (integration,)))
        return [i.notification for i in items]


@pytest.fixture
def env(tmp_path):
    e = Env(tmp_path / "relay.db", Clock(), config())
    yield e
    e.db.close()


async def test_group_wait_collects_siblings_into_one_notification(env):
    env.d.put([alert(team="a", user="u1")])
    await env.at(5)
    env.d.put([alert(team="a", user="u2", at=T0 + 5)])
    await env.at(29.9)
    assert await env.sent() == []
    await env.at(30)
    (n,) = await env.sent()
    assert n.status == "firing" and n.seq == 1 and not n.repeat
    assert sorted(a.labels["user"] for a in n.alerts) == ["u1", "u2"]
    assert n.group_labels == {"alertname": "BudgetWarning", "team": "a"}
    assert n.group_key == '{}:{alertname="BudgetWarning", team="a"}' and n.receiver == "team"
    assert n.external_url == "http://relay:8888" and n.created_at == T0 + 30
    assert [x.group_key for x in await env.sent(SLACK_ID)] == [n.group_key]


async def test_group_interval_only_sends_changes_and_repeat_interval_reminds(env):
    env.d.put([alert(team="a", user="u1")])
    await env.at(30)
    assert len(await env.sent()) == 1
    env.d.put([alert(team="a", user="u1")])  # the engine re-sends a firing alert: nothing changes
    for t in (330, 630):
        await env.at(t)
        assert await env.sent() == []
    env.d.put([alert(team="a", user="u2", at=T0 + 700)])  # new alert in a flushed group waits for the interval
    await env.at(900)
    assert await env.sent() == []
    await env.at(930)
    (n,) = await env.sent()
    assert n.seq == 2 and not n.repeat and len(n.firing) == 2
    # unchanged for repeat_interval (4h) → a reminder at the first interval after it
    await env.at(930 + 4 * 3600 - 300)
    assert await env.sent() == []
    await env.at(930 + 4 * 3600)
    (n,) = await env.sent()
    assert n.repeat and n.seq == 3 and len(n.firing) == 2


async def test_alert_resolved_within_group_wait_produces_nothing(env):
    a = alert(team="a")
    env.d.put([a])
    await env.at(10)
    env.d.put([resolved(a, T0 + 10)])
    await env.at(30)
    assert await env.sent() == [] and await env.sent(SLACK_ID) == []
    assert env.d.groups() == []


async def test_resolution_notifies_send_resolved_receivers_only_and_removes_the_group(env):
    a, b = alert(team="a", user="u1"), alert(team="a", user="u2")
    env.d.put([a, b])
    await env.at(30)
    assert len(await env.sent()) == 1 and len(await env.sent(SLACK_ID)) == 1
    env.d.put([resolved(a, T0 + 100)])
    await env.at(330)
    (n,) = await env.sent()  # webhook: send_resolved → one firing, one resolved
    assert n.status == "firing" and [x.labels["user"] for x in n.firing] == ["u2"]
    assert [x.labels["user"] for x in n.resolved] == ["u1"] and n.seq == 2
    assert await env.sent(SLACK_ID) == []  # Slack without send_resolved: firing set shrank → nothing
    env.d.put([resolved(b, T0 + 400)])
    await env.at(630)
    (n,) = await env.sent()
    assert n.status == "resolved" and [x.labels["user"] for x in n.resolved] == ["u2"] and n.firing == []
    assert await env.sent(SLACK_ID) == []  # all resolved: logged, not sent
    assert env.d.groups() == []
    assert env.d.nflog.get(SLACK_ID, n.group_key).firing == frozenset()
    # the same group firing again is a new episode: seq starts at 1 again
    env.d.put([alert(team="a", user="u1", at=T0 + 700)])
    await env.at(730)
    (n,) = await env.sent()
    assert n.seq == 1 and not n.repeat


async def test_pending_alerts_are_not_routed(env):
    env.d.put([alert(team="a", state=AlertState.PENDING)])
    await env.at(3600)
    assert env.d.groups() == [] and await env.sent() == []


async def test_budget_exceeded_inhibits_the_warning_of_the_same_team_only(env):
    env.d.put([alert("BudgetWarning", team="a"), alert("BudgetWarning", team="b"), alert("BudgetExceeded", team="a")])
    await env.at(30)
    sent = {(n.group_labels["alertname"], n.group_labels["team"]) for n in await env.sent()}
    assert sent == {("BudgetWarning", "b"), ("BudgetExceeded", "a")}
    assert env.d.inhibited_by({"alertname": "BudgetWarning", "team": "a"}) == [
        alert("BudgetExceeded", team="a").fingerprint
    ]
    assert env.d.inhibited_by({"alertname": "BudgetWarning", "team": "b"}) == []
    # the 100 % alert resolves: the 80 % one is no longer muted and is notified at its next interval
    env.d.put([resolved(alert("BudgetExceeded", team="a"), T0 + 100)])
    await env.at(330)
    sent = {(n.group_labels["alertname"], n.status) for n in await env.sent()}
    assert sent == {("BudgetWarning", "firing"), ("BudgetExceeded", "resolved")}


async def test_the_resolved_message_leaves_out_an_alert_inhibited_all_along(tmp_path):
    env = Env(tmp_path / "relay.db", Clock(), config(group_by=["team"]))  # warning and exceeded in one group
    try:
        warning, exceeded = alert("BudgetWarning", team="a"), alert("BudgetExceeded", team="a")
        env.d.put([exceeded, warning])  # the 100 % alert mutes the 80 % one from the start
        await env.at(30)
        (n,) = await env.sent()
        assert [a.name for a in n.alerts] == ["BudgetExceeded"]
        env.d.put([resolved(exceeded, T0 + 100), resolved(warning, T0 + 100)])  # the window rolled over
        await env.at(330)
        (n,) = await env.sent()
        assert n.status == "resolved" and [a.name for a in n.alerts] == ["BudgetExceeded"]  # never announced: left out
    finally:
        env.db.close()


async def test_silenced_alerts_are_muted_until_the_silence_expires(env):
    sid = await env.silences.create([Matcher("team", "=", "a")], T0, T0 + 600, "ops", "maintenance")
    env.d.put([alert(team="a"), alert(team="b")])
    await env.at(30)
    assert [n.group_labels["team"] for n in await env.sent()] == ["b"]
    assert env.d.silenced_by({"alertname": "x", "team": "a"}) == [sid]
    await env.at(330)
    assert await env.sent() == []
    await env.at(630)  # expired at T0+600: no longer muted
    (n,) = await env.sent()
    assert n.group_labels["team"] == "a" and n.seq == 1


async def test_restart_does_not_renotify_the_same_firing_set(env):
    a = alert(team="a")
    env.d.put([a])
    await env.at(30)
    assert len(await env.sent()) == 1 and len(await env.sent(SLACK_ID)) == 1
    env.clock.t = T0 + 1000
    env.restart()
    env.d.put([a])  # the rules engine re-puts its firing alerts at start-up
    assert await env.d.flush_due() == 1  # fired long ago: the group flushes at once…
    assert await env.sent() == [] and await env.sent(SLACK_ID) == []  # …and the nflog says "already sent"
    await env.at(30 + 4 * 3600)
    (n,) = await env.sent()
    assert n.repeat and n.seq == 2


async def test_alert_resolved_while_relay_was_down_is_notified_after_restart(env):
    a = alert(team="a")
    env.d.put([a])
    await env.at(30)
    await env.sent()
    env.clock.t = T0 + 500
    env.restart()
    env.d.put([resolved(a, T0 + 400)])
    await env.d.flush_due()
    (n,) = await env.sent()
    assert n.status == "resolved" and n.seq == 2
    assert env.d.groups() == []


async def test_outbox_item_and_nflog_entry_commit_together(env):
    env.d.put([alert(team="a")])
    await env.db.run(lambda c: c.execute("ALTER TABLE outbox RENAME TO outbox_gone"))
    env.clock.t = T0 + 30
    with pytest.raises(sqlite3.OperationalError):
        await env.d.flush_due()
    rows = await env.db.run(lambda c: c.execute("SELECT COUNT(*) FROM nflog").fetchone()[0])
    assert rows == 0  # the failed job wrote nothing, not even the nflog entry
    await env.db.run(lambda c: c.execute("ALTER TABLE outbox_gone RENAME TO outbox"))
    await env.at(330)  # retried at the next group_interval
    assert len(await env.sent()) == 1


async def test_continue_routes_to_several_receivers_with_their_own_groups(tmp_path):
    e = Env(
        tmp_path / "r.db",
        Clock(),
        config(
            routes=[
                {"matchers": ['severity="critical"'], "receiver": "oncall", "continue": True, "group_wait": "0s"},
                {"matchers": ['team="a"'], "receiver": "team"},
            ]
        ),
    )
    try:
        e.d.put([alert(team="a", severity="critical")])
        await e.d.flush_due()
        (n,) = await e.sent(ONCALL_ID)
        assert n.receiver == "oncall" and n.group_key.startswith('{}/{severity="critical"}:')
        await e.at(30)
        (n,) = await e.sent(HOOK_ID)
        assert n.receiver == "team" and n.group_key.startswith('{}/{team="a"}:')
        assert {g.receiver for g in e.d.groups()} == {"team", "oncall"}
        # without a later matching sibling, "continue" does not fall back to the parent
        e.d.put([alert(team="b", severity="critical", at=T0 + 30)])
        await e.at(60)
        assert len(await e.sent(ONCALL_ID)) == 1 and await e.sent(HOOK_ID) == []
    finally:
        e.db.close()


async def test_reload_reroutes_alerts_without_renotifying(env):
    env.d.put([alert(team="a")])
    await env.at(30)
    assert len(await env.sent()) == 1
    env.d.reload(config(routes=[{"matchers": ['team="a"'], "receiver": "oncall"}]))
    await env.at(40)
    (n,) = await env.sent(ONCALL_ID)  # new route → new group key → first notification there
    assert n.receiver == "oncall"
    env.d.reload(config())
    await env.at(50)
    assert await env.sent() == []  # back on the old route: same group key, already notified


async def test_no_receivers_means_nothing_is_grouped_or_sent(tmp_path):
    e = Env(tmp_path / "r.db", Clock(), AlertingConfig())
    try:
        e.d.put([alert(team="a")])
        await e.at(3600)
        assert e.d.groups() == [] and await e.outbox.pending() == []
    finally:
        e.db.close()


async def test_with_group_wait_zero_a_firing_alert_reaches_the_outbox_within_milliseconds(tmp_path):
    e = Env(tmp_path / "r.db", time.time, config(group_wait="0s"))
    try:
        await e.d.start()
        await asyncio.sleep(0.01)
        t0 = time.monotonic()
        e.d.put([alert(team="a", at=time.time())])
        while not await e.outbox.pending(HOOK_ID):
            assert time.monotonic() - t0 < 0.2, "not queued within 200 ms"
            await asyncio.sleep(0.001)
        took = time.monotonic() - t0
        assert took < 0.2
        # and the group's next flush is group_interval later, not a busy loop
        (g,) = e.d.groups()
        assert g.next_flush >= time.time() + 290
    finally:
        await e.d.shutdown(deadline_in(5))
        e.db.close()


async def test_running_dispatcher_and_outbox_deliver_a_new_firing_alert_within_a_second(tmp_path):
    delivered: list[tuple[float, object]] = []

    class Recorder(Notifier):
        receiver, integration, send_resolved = "team", "webhook/0", True

        async def notify(self, notification, state):
            delivered.append((time.monotonic(), notification))
            return {}

    db = SqliteDB(tmp_path / "r.db")
    db.open()
    outbox = Outbox(db, {HOOK_ID: Recorder()})
    d = Dispatcher(config(group_wait="0s"), db=db, outbox=outbox, silences=Silences(db), now=time.time)
    await outbox.start()
    await d.start()
    try:
        t0 = time.monotonic()
        d.put([alert(team="a", at=time.time())])
        while not delivered:
            assert time.monotonic() - t0 < 1.0, "not delivered within a second"
            await asyncio.sleep(0.002)
        took, n = delivered[0][0] - t0, delivered[0][1]
        assert took < 1.0 and n.status == "firing" and n.seq == 1
    finally:
        await d.shutdown(deadline_in(5))
        await outbox.shutdown(deadline_in(5))
        db.close()
