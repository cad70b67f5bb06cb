"""Notifications whose answer was lost go out once (issue 15, items 7 and 8), through relay's real durable outbox
(SQLite) and the real notifiers against the loopback fakes:

- Slack: the post reached Slack but its answer was lost (connection reset after the call), the attempt was cancelled
  by the outbox's attempt timeout, or the outbox was stopped mid-call and a new one (a restart) took over → the
  message is found again with ``conversations.history`` / ``conversations.replies`` by the metadata relay set, and
  never posted twice — a parent or a thread reply.
- Jira Cloud: the create reached Jira but the attempt was cancelled (attempt timeout shorter than Jira's
  ``timeout``, or shutdown) → the pending create recorded before the request wakes the next attempt, in this
  process or a new one, to wait out ``search_lag`` and search before creating: one issue — also when Jira's search
  lags longer than relay's default wait (with ``search_lag`` configured above it). A create Jira refused clears
  the record.

The subprocess versions (``kill -9`` / SIGTERM) are in ``tests/test_e2e_notify_crash.py``.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from relay.alerting.dispatch.outbox import Outbox
from relay.component import deadline_in
from relay.notify.jira.notifier import JiraNotifier
from relay.notify.slack.config import SlackConfig
from relay.notify.slack.notifier import SlackNotifier
from relay.store.sqlite import SqliteDB
from tests.fakes.jira import FakeJira
from tests.fakes.jira_support import jira_config, make_notification
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_samples import budget_alert, notification
from tests.support.clock import Clock

TOKEN = "xoxb-test-token"
SLACK_KEY = "oncall/slack/0"
JIRA_KEY = "ops/jira/0"


@pytest.fixture
async def slack():
    async with FakeSlack((TOKEN,), channels={"C0ALERTS": "alerts"}) as fake:
        yield fake


def slack_notifier(fake: FakeSlack, channel: str = "C0ALERTS") -> SlackNotifier:
    return SlackNotifier("oncall", 0, SlackConfig(bot_token=TOKEN, channel=channel, api_url=fake.api_url, timeout=5))


def outbox(db, notifiers: dict, **kw) -> Outbox:
    return Outbox(db, notifiers, initial_backoff=0.05, max_backoff=0.2, jitter=0.0, **kw)


async def until(cond, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def drained(box: Outbox, timeout: float = 8.0) -> None:
    deadline = time.monotonic() + timeout
    while await box.pending():
        assert time.monotonic() < deadline, f"outbox not drained: {await box.pending()}"
        await asyncio.sleep(0.01)


def alice():
    return budget_alert(
        labels={"alertname": "TeamBudget", "severity": "critical", "team.id": "platform", "user": "alice"}
    )


def bob():
    return budget_alert(labels={"alertname": "TeamBudget", "severity": "warning", "team.id": "platform", "user": "bob"})


def parents(fake: FakeSlack) -> list:
    return fake.messages("C0ALERTS")


# ------------------------------------------------------------------------------------------------------ Slack
async def test_slack_parent_whose_answer_was_lost_is_found_not_reposted(db, slack):
    box = outbox(db, {SLACK_KEY: slack_notifier(slack)})
    await box.start()
    try:
        slack.reset_connection(method="chat.postMessage", after=True)  # posted, but relay never hears back
        await box.enqueue(SLACK_KEY, notification([alice()]))
        await drained(box)
        [parent] = parents(slack)
        assert (await box.state(SLACK_KEY, notification([alice()]).group_key))["ts"] == parent.ts
        lookups = slack.calls("conversations.history")
        assert len(lookups) == 1 and lookups[0].args["include_all_metadata"] in ("1", "true", True)
        assert len(slack.calls("chat.postMessage")) == 1

        # a thread reply whose answer is lost: found in the thread, not posted twice
        slack.reset_connection(method="chat.postMessage", after=True)
        await box.enqueue(SLACK_KEY, notification([alice(), bob()], seq=2))
        await drained(box)
        assert len(parents(slack)) == 1 and len(slack.thread("C0ALERTS", parent.ts)) == 1
        assert len(slack.calls("conversations.replies")) == 1
        state = await box.state(SLACK_KEY, notification([alice()]).group_key)
        assert state["ts"] == parent.ts and "pending_post" not in state
    finally:
        await box.shutdown(deadline_in(5))


async def test_slack_post_cancelled_by_the_attempt_timeout_is_posted_once(db, slack):
    box = outbox(db, {SLACK_KEY: slack_notifier(slack)}, attempt_timeout=0.3)
    await box.start()
    try:
        slack.hold(1.0, method="chat.postMessage")  # applied at once, answered after the attempt gave up
        await box.enqueue(SLACK_KEY, notification([alice()]))
        await drained(box)
        assert len(parents(slack)) == 1
    finally:
        await box.shutdown(deadline_in(5))


async def test_slack_post_in_flight_at_shutdown_is_not_reposted_by_the_next_process(db, slack):
    box = outbox(db, {SLACK_KEY: slack_notifier(slack)})
    await box.start()
    slack.hold(30.0, method="chat.postMessage")
    await box.enqueue(SLACK_KEY, notification([alice()]))
    await until(lambda: parents(slack), "the post to reach Slack")
    await box.shutdown(deadline_in(0.1))  # cancelled mid-call; the item stays queued
    slack.clear_faults()
    box2 = outbox(db, {SLACK_KEY: slack_notifier(slack)})  # the next process on the same database
    await box2.start()
    try:
        await drained(box2)
        assert len(parents(slack)) == 1 and len(slack.calls("conversations.history")) == 1
        state = await box2.state(SLACK_KEY, notification([alice()]).group_key)
        assert state["ts"] == parents(slack)[0].ts
    finally:
        await box2.shutdown(deadline_in(5))


async def test_slack_lookup_refused_falls_back_to_posting(db, slack):
    """Without ``channels:history`` the lookup is refused: relay posts again (at-least-once) instead of blocking."""
    box = outbox(db, {SLACK_KEY: slack_notifier(slack)})
    await box.start()
    try:
        slack.reset_connection(method="chat.postMessage", after=True)
        slack.error("missing_scope", method="conversations.history")
        await box.enqueue(SLACK_KEY, notification([alice()]))
        await drained(box)
        assert len(parents(slack)) == 2 and not await box.failed()
    finally:
        await box.shutdown(deadline_in(5))


# ------------------------------------------------------------------------------------------------------ Jira
async def jira_box(
    db, fake: FakeJira, clock: Clock, attempt_timeout: float = 300.0, **config
) -> tuple[Outbox, JiraNotifier]:
    notifier = JiraNotifier("ops", 0, jira_config(fake, **config), clock=clock)
    box = outbox(db, {JIRA_KEY: notifier}, now=clock, attempt_timeout=attempt_timeout)
    await box.start()
    return box, notifier


async def advance_until_delivered(box: Outbox, clock: Clock, step: float, limit: float) -> None:
    """Advance the shared manual clock by ``step`` seconds at a time (waking the outbox) until nothing is queued."""
    waited = 0.0
    while await box.pending():
        assert waited <= limit, f"still queued after {waited}s: {await box.pending()}"
        await asyncio.sleep(0.05)
        clock.advance(step)
        waited += step
        box.wake([JIRA_KEY])


@pytest.mark.parametrize("lag, search_lag", [(10.0, 12.0), (100.0, 120.0)])
async def test_jira_create_cancelled_by_the_attempt_timeout_opens_one_issue(db, lag, search_lag):
    """Jira's ``timeout`` (5 s) exceeds the outbox's attempt timeout (0.3 s): the create reaches Jira, the attempt
    is cancelled; the retry in the same process waits out the lag and finds the issue. The second case lags longer
    than relay's default ``search_lag`` (30 s), with ``search_lag`` configured above it."""
    clock = Clock()
    async with FakeJira("cloud", clock=clock, search_lag=lag) as jira:
        box, _ = await jira_box(db, jira, clock, attempt_timeout=0.3, timeout=5, search_lag=search_lag)
        try:
            jira.hold_response(2.0, method="POST", path="^issue$")
            await box.enqueue(JIRA_KEY, make_notification())
            await until(lambda: jira.issues(), "the create to reach Jira")
            await asyncio.sleep(0.6)  # the attempt timed out; its retry is scheduled
            state = await box.state(JIRA_KEY, make_notification().group_key)
            assert state["pending_create"]["by"] >= state["pending_create"]["at"] + 5
            await advance_until_delivered(box, clock, 5.0, search_lag + 20)
            assert len(jira.issues()) == 1, [i.key for i in jira.issues()]
            assert jira.requests("POST", "search/jql"), "the retry must search before creating"
            state = await box.state(JIRA_KEY, make_notification().group_key)
            assert state["issue"] == jira.issues()[0].key and "pending_create" not in state
            assert len(jira.requests("POST", "^issue$")) == 1
        finally:
            await box.shutdown(deadline_in(5))


async def test_jira_create_in_flight_at_shutdown_is_not_repeated_by_the_next_process(tmp_path):
    """SIGTERM-like: the outbox is stopped while Jira holds the create's answer; a new outbox (new process, new
    notifier: no memory) on the same database waits out the lag instead of creating a second issue."""
    clock = Clock()
    db = SqliteDB(tmp_path / "relay.db")
    db.open()
    try:
        async with FakeJira("cloud", clock=clock, search_lag=45.0) as jira:
            box, _ = await jira_box(db, jira, clock, search_lag="60s")
            jira.hold_response(30.0, method="POST", path="^issue$")
            await box.enqueue(JIRA_KEY, make_notification())
            await until(lambda: jira.issues(), "the create to reach Jira")
            await box.shutdown(deadline_in(0.1))
            jira.clear_faults()
            box2, _ = await jira_box(db, jira, clock, search_lag="60s")
            try:
                await asyncio.sleep(0.3)
                assert len(jira.issues()) == 1 and await box2.pending()  # waiting for the search, not creating
                await advance_until_delivered(box2, clock, 5.0, 90)
                assert len(jira.issues()) == 1 and len(jira.requests("POST", "^issue$")) == 1
                state = await box2.state(JIRA_KEY, make_notification().group_key)
                assert state["issue"] == jira.issues()[0].key
            finally:
                await box2.shutdown(deadline_in(5))
    finally:
        db.close()


async def test_jira_refused_create_clears_the_pending_record(db):
    clock = Clock()
    async with FakeJira("cloud", clock=clock, search_lag=30.0) as jira:
        box, _ = await jira_box(db, jira, clock, issue_type="Epic")  # not an issue type of OPS: 400
        try:
            await box.enqueue(JIRA_KEY, make_notification())
            await until(lambda: jira.requests("POST", "^issue$"), "the create")
            deadline = time.monotonic() + 5
            while not await box.failed():
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            state = await box.state(JIRA_KEY, make_notification().group_key)
            assert "pending_create" not in state
        finally:
            await box.shutdown(deadline_in(5))
