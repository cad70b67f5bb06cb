"""Issue 4 end to end, Jira: a running relay (in-process, real sockets) receives Claude Code telemetry over
OTLP/HTTP, its failure rules fire, and a fake Jira on loopback — Cloud (basic auth, REST v3 only, ADF bodies)
or Data Center (bearer PAT, REST v2, wiki markup), its search not showing new issues for 30 s — gets exactly the
issues, comments and transitions expected.

- The replayed ``protobuf-err529`` capture (a 529 ``api_error`` and an ``api_retries_exhausted``) fires a
  retries-exhausted rule over its own session → exactly one issue; the repeat reminders (``repeat_interval`` 1s)
  become comments on it, never a second issue, also across a restart of relay.
- Generated clones of that capture's error records (current time, team ``e2e-jira``) fire a short-window rule:
  one issue; the alert resolves when the records leave the window → resolved comment and the ``Done``
  transition; it fires again inside ``reopen_duration`` → the same issue is reopened (``Reopen``).
- Outside the reopen window (Jira's clock says the issue was resolved an hour ago) a refire opens a new issue;
  an issue a person closed as Won't Fix is left alone while the alert repeats, resolves and fires again.
- Jira creates an issue but its answer is lost and relay restarts before its retry: the retry
  must not open a second issue while Jira's search still lags.

The capture's events are dated 2026-11-21; the capture-driven rule uses a ten-year window so it still counts
them on later run dates, and the lifecycle is driven by generated events stamped with the current time.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.jira import FakeJira
from tests.fakes.langfuse import FakeLangfuse
from tests.support.cc_traffic import CCTraffic
from tests.support.expected import by_name, events
from tests.support.inproc import replay, running_relay

USER, TOKEN, PAT = "relay@example.com", "cloud-token", "dc-pat"
TEAM = "e2e-jira"
INTEGRATION = "jira/jira/0"  # <receiver>/<kind>/<index>


def fixture_session() -> str:
    """The session id of the capture's ``api_retries_exhausted`` event (decoded without relay's code)."""
    [ev] = by_name(events("protobuf-err529"), "api_retries_exhausted")
    return ev.attrs["session.id"]


def write_rules(path: Path, window: str = "3s") -> None:
    """Two retries-exhausted rules: one over the capture's session (ten-year window: the capture is from
    2026-11-21), one over team ``e2e-jira`` with a short window so it resolves within seconds."""
    common = {
        "kind": "error_rate",
        "errors": {"retries_exhausted": True},
        "count": 1,
        "min_count": 1,
        "annotations": {"summary": "{{ values.failed | int }} requests gave up after all retries"},
    }
    path.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "failures",
                        "rules": [
                            {
                                **common,
                                "alert": "CaptureRetriesExhausted",
                                "matchers": [f'session="{fixture_session()}"'],
                                "window": "3650d",
                                "labels": {"severity": "warning"},
                            },
                            {
                                **common,
                                "alert": "ApiRetriesExhausted",
                                "matchers": [f'team.id="{TEAM}"'],
                                "group_by": ["team.id"],
                                "window": window,
                                "labels": {"severity": "critical"},
                            },
                        ],
                    }
                ]
            }
        )
    )


def connection(jira: FakeJira) -> dict:
    """``jira_configs`` connection keys for the fake's flavour: Cloud (email + API token) or Data Center (PAT)."""
    if jira.flavor == "cloud":
        return {"flavor": "cloud", "api_url": jira.base_url, "user": USER, "api_token": TOKEN}
    return {"flavor": "datacenter", "api_url": jira.base_url, "personal_access_token": PAT}


def overrides(
    rules: Path, jira: FakeJira, reopen_duration: str = "10m", search_lag: str = "30s", timeout: str = "5s"
) -> dict:
    return {
        "pipeline": {"idle_timeout": "30s", "root_grace": "30s"},
        "rules": {"files": [str(rules)], "evaluation_interval": "200ms", "watch": False},
        "alerting": {
            "route": {
                "receiver": "jira",
                "group_by": ["alertname", "team.id"],
                "group_wait": "0s",
                "group_interval": "200ms",
                "repeat_interval": "1s",
            },
            "receivers": [
                {
                    "name": "jira",
                    "jira_configs": [
                        {
                            **connection(jira),
                            "project": "OPS",
                            "issue_type": "Bug",
                            "components": ["ai-usage"],
                            "reopen_transition": "Reopen",
                            "reopen_duration": reopen_duration,
                            "resolve_transition": "Done",
                            "search_lag": search_lag,
                            "timeout": timeout,
                        }
                    ],
                }
            ],
        },
    }


async def post_logs(relay, body: bytes) -> None:
    """POST an OTLP/HTTP protobuf logs request to relay (200 expected)."""
    async with aiohttp.ClientSession() as s:
        async with s.post(
            f"http://127.0.0.1:{relay.http.port}/v1/logs", data=body, headers={"Content-Type": "application/x-protobuf"}
        ) as r:
            assert r.status == 200, await r.text()


def burst(t: CCTraffic) -> bytes:
    """One request that gave up: clones of the capture's 529 ``api_error`` and ``api_retries_exhausted``
    records (no status code, as Claude Code sends 529s), stamped now."""
    return t.request(t.event("api_error"), t.event("api_retries_exhausted"))


class Keeper:
    """Keeps the team's alert firing: a burst every ``every`` seconds to the relay in ``self.relay``."""

    def __init__(self, every: float = 0.4):
        self.every = every
        self.relay = None
        self.traffic = CCTraffic(resource={"team.id": TEAM, "enduser.id": "jdoe"})
        self._task: asyncio.Task | None = None

    def start(self, relay) -> None:
        self.relay = relay
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            await post_logs(self.relay, burst(self.traffic))
            await asyncio.sleep(self.every)


async def until(cond, what: str, timeout: float = 8.0):
    """Poll ``cond()`` every 20 ms until it is truthy; returns its value (fails with ``what`` on timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def issue_of(jira: FakeJira, alertname: str):
    """The issues whose summary names ``alertname`` (the default summary template starts with it)."""
    return [i for i in jira.issues("OPS") if i.summary.startswith(alertname + " ") or i.summary == alertname]


def creates(jira: FakeJira) -> int:
    return len(jira.requests("POST", r"^issue$"))


async def jira_state(relay, group_team: str | None) -> dict:
    """The Jira notifier's persisted state of the team's group (``receiver_state``; read through relay's DB)."""

    def read(conn):
        return [
            json.loads(r[0])
            for r in conn.execute(
                "SELECT state FROM receiver_state WHERE integration = ? AND group_key LIKE ?",
                (INTEGRATION, f"%{group_team}%"),
            )
        ]

    rows = await relay.spool.db.run(read)
    assert len(rows) == 1, rows
    return rows[0]


async def state_is(relay, **expected) -> None:
    """Wait until the team group's persisted Jira state has the ``expected`` items (the outbox commits the state
    just after the notifier's last HTTP call, so the fake may already show the effect)."""

    async def check() -> bool:
        state = await jira_state(relay, TEAM)
        return all(state.get(k) == v for k, v in expected.items())

    await until_async(check, f"Jira state {expected}", 5)


async def alert(relay, name: str) -> dict:
    """The one alert called ``name`` from relay's ``GET /api/v1/alerts`` (admin endpoint)."""
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{relay.admin_port}/api/v1/alerts") as r:
            assert r.status == 200
            body = await r.json()
    [a] = [a for a in body["data"]["alerts"] if a["labels"]["alertname"] == name]
    return a


async def until_async(cond, what: str, timeout: float = 8.0) -> None:
    """Poll the coroutine function ``cond()`` every 50 ms until it returns a truthy value."""
    deadline = time.monotonic() + timeout
    while not await cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def delivered(relay, at_least: float) -> bool:
    """At least ``at_least`` Jira notifications attempted and none left in the outbox (``/metrics``)."""
    return (
        await metric(relay, "alertmanager_notifications_total", integration="jira") >= at_least
        and await metric(relay, "relay_outbox_queue_size") == 0
    )


async def team_group_gone(relay) -> bool:
    """The team's aggregation group was flushed after its alert resolved (the dispatcher dropped it)."""
    return not [g for g in relay.alerting.dispatcher.groups() if g.group_labels.get("team.id") == TEAM]


async def metric(relay, name: str, **labels: str) -> float:
    """A sample of relay's ``/metrics`` (admin endpoint, Prometheus text format); 0 when absent."""
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{relay.admin_port}/metrics") as r:
            text = await r.text()
    total = 0.0
    for fam in text_string_to_metric_families(text):
        for smp in fam.samples:
            if smp.name == name and all(smp.labels.get(k) == v for k, v in labels.items()):
                total += smp.value
    return total


@pytest.mark.timeout(60)
@pytest.mark.parametrize("flavor", ["cloud", "datacenter"])
async def test_one_issue_comments_restart_resolve_reopen(tmp_path, flavor):
    rules = tmp_path / "rules.yaml"
    write_rules(rules)
    data = tmp_path / "data"
    keeper = Keeper()
    search = r"^search/jql$" if flavor == "cloud" else r"^search$"
    async with FakeLangfuse() as lf, FakeJira(flavor, user=USER, api_token=TOKEN, pat=PAT, search_lag=30.0) as jira:
        ov = overrides(rules, jira)
        async with running_relay(data, lf.base_url, ov) as relay:
            # the capture replayed twice (an exporter retry): its one retries_exhausted event → one issue
            assert set(await replay(relay, "protobuf-err529")) == {200}
            assert set(await replay(relay, "protobuf-err529")) == {200}
            [capture] = await until(lambda: issue_of(jira, "CaptureRetriesExhausted"), "the capture's issue")
            assert capture.priority == "High" and capture.components == ["ai-usage"]
            assert any(lb.startswith("relay-") for lb in capture.labels)  # the group's dedup key
            assert "1 requests gave up" in capture.description_text
            assert (await alert(relay, "CaptureRetriesExhausted"))["values"]["failed"] == 1  # counted once

            # generated clones of the capture's error records (team e2e-jira) fire the short-window rule
            keeper.start(relay)
            [team] = await until(lambda: issue_of(jira, "ApiRetriesExhausted"), "the team's issue")
            assert team.priority == "Highest" and f"team.id={TEAM}" in team.summary
            # repeat reminders (repeat_interval 1s) become comments, never a second issue
            await until(
                lambda: len(jira.comments(capture.key)) >= 2 and len(jira.comments(team.key)) >= 1, "repeat comments"
            )
            assert creates(jira) == 2 and len(jira.issues()) == 2
            assert all("still firing" in c.text.lower() for c in jira.comments(capture.key))
            # a search only before each group's first issue (nothing known yet); afterwards relay's own state
            assert len(jira.requests("POST", search)) == 2
            await keeper.stop()
        before = {capture.key: len(jira.comments(capture.key)), team.key: len(jira.comments(team.key))}

        # restart while both fire: relay finds its issues from its own state (Jira's search would not show them
        # for 30 s), so the reminders keep landing on the same issues
        async with running_relay(data, lf.base_url, ov) as relay:
            keeper.start(relay)
            await until(lambda: all(len(jira.comments(k)) > n for k, n in before.items()), "comments after restart")
            assert creates(jira) == 2 and len(jira.issues()) == 2
            assert len(jira.requests("POST", search)) == 2  # no search after the restart either
            assert (await alert(relay, "CaptureRetriesExhausted"))["state"] == "firing"
            await keeper.stop()

            # no more failures: the alert resolves → a resolved comment and the Done transition
            await until(lambda: jira.issue(team.key).status == "Done", "the team's issue resolved", 10)
            assert jira.issue(team.key).resolution == "Done"
            assert "RESOLVED" in jira.comments(team.key)[-1].text
            assert [t.name for t in jira.transitions_applied(team.key)] == ["Done"]
            await state_is(relay, issue=team.key, action="resolved")

            # it fires again inside reopen_duration (10m): the same issue is reopened, with a comment
            comments = len(jira.comments(team.key))
            await post_logs(relay, burst(keeper.traffic))
            await until(lambda: jira.issue(team.key).status == "To Do", "the team's issue reopened")
            assert [t.name for t in jira.transitions_applied(team.key)] == ["Done", "Reopen"]
            await until(lambda: len(jira.comments(team.key)) > comments, "the reopening comment")
            assert "FIRING" in jira.comments(team.key)[-1].text
            await state_is(relay, issue=team.key, action="reopened")

            # the capture's alert never stopped: still one open issue for it; two issues ever created
            assert jira.issue(capture.key).status == "To Do" and not jira.transitions_applied(capture.key)
            assert creates(jira) == 2 and len(jira.issues()) == 2
            assert await metric(relay, "alertmanager_notifications_failed_total", integration="jira") == 0


@pytest.mark.timeout(60)
async def test_refire_outside_reopen_window_and_wont_fix(tmp_path):
    rules = tmp_path / "rules.yaml"
    write_rules(rules, window="2s")
    skew = [-3600.0]  # Jira's clock: the first issue lives (and is resolved) an hour in the past
    jira_clock = lambda: time.time() + skew[0]  # noqa: E731
    keeper = Keeper()
    async with (
        FakeLangfuse() as lf,
        FakeJira("cloud", user=USER, api_token=TOKEN, search_lag=30.0, clock=jira_clock) as jira,
    ):
        async with running_relay(tmp_path / "data", lf.base_url, overrides(rules, jira)) as relay:
            keeper.start(relay)
            [first] = await until(lambda: issue_of(jira, "ApiRetriesExhausted"), "the first issue")
            await keeper.stop()
            await until(lambda: jira.issue(first.key).status == "Done", "the first issue resolved", 10)
            resolved_at = jira.issue(first.key).resolutiondate
            skew[0] = 0.0  # an hour later: the resolution is older than reopen_duration (10m)
            assert time.time() - resolved_at > 600

            # refire outside the reopen window → a new issue; the old one stays closed
            await post_logs(relay, burst(keeper.traffic))
            second = (
                await until(
                    lambda: [i for i in issue_of(jira, "ApiRetriesExhausted") if i.key != first.key], "a second issue"
                )
            )[0]
            assert jira.issue(first.key).status == "Done"
            assert [t.name for t in jira.transitions_applied(first.key)] == ["Done"]
            assert second.labels == first.labels  # same group, same dedup key
            await state_is(relay, issue=second.key, action="created")

            # a person closes the new issue as Won't Fix while the alert keeps firing
            jira.set_status(second.key, "Done", resolution="Won't Fix")
            mark = len(jira.requests())
            sent = await metric(relay, "alertmanager_notifications_total", integration="jira")
            keeper.start(relay)
            # repeat reminders arrive and are dropped: no comment, no reopen, no new issue
            await until_async(lambda: delivered(relay, sent + 1), "a reminder delivered")
            await state_is(relay, issue=second.key, action="wont_fix")
            await keeper.stop()

            # the alert resolves: nothing is done on a won't-fix issue
            await until_async(lambda: team_group_gone(relay), "the resolved notification flushed", 10)
            await until_async(lambda: delivered(relay, 0), "the outbox drained")
            # it fires again within reopen_duration: still nothing, and no new issue
            sent = await metric(relay, "alertmanager_notifications_total", integration="jira")
            await post_logs(relay, burst(keeper.traffic))
            await until_async(lambda: delivered(relay, sent + 1), "the refire delivered")
            after = jira.requests()[mark:]
            assert after and all(r.method == "GET" for r in after), [(r.method, r.path) for r in after]
            issue = jira.issue(second.key)
            assert (issue.status, issue.resolution) == ("Done", "Won't Fix")
            assert creates(jira) == 2 and len(jira.issues()) == 2
            await state_is(relay, issue=second.key, action="wont_fix")
            assert await metric(relay, "alertmanager_notifications_failed_total", integration="jira") == 0


@pytest.mark.timeout(60)
async def test_restart_after_a_lost_create_response_opens_no_second_issue(tmp_path):
    rules = tmp_path / "rules.yaml"
    write_rules(rules, window="30s")  # one burst keeps the team's alert firing for the whole test
    data = tmp_path / "data"
    traffic = CCTraffic(resource={"team.id": TEAM})
    async with FakeLangfuse() as lf, FakeJira("cloud", user=USER, api_token=TOKEN, search_lag=10.0) as jira:
        ov = overrides(rules, jira, search_lag="12s")  # relay's bound of Jira's search lag covers the fake's 10 s
        jira.drop_response(1, method="POST", path=r"^issue$")  # Jira creates the issue; the answer is lost
        async with running_relay(data, lf.base_url, ov) as relay:
            await post_logs(relay, burst(traffic))
            await until(lambda: jira.issues(), "the create to reach Jira")
            await jira.outage()  # relay's retries fail to connect until after its restart
        async with running_relay(data, lf.base_url, ov) as relay:
            await jira.restore()
            await until_async(lambda: delivered(relay, 1), "the retried notification delivered", 25)
            assert len(jira.issues()) == 1, [(i.key, i.summary) for i in jira.issues()]
            await state_is(relay, issue=jira.issues()[0].key)
