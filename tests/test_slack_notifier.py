"""SlackNotifier against the loopback fake Slack (real HTTP through slack-sdk's async clients): first post, thread
updates with parent edits, resolve, re-fire, deleted parents, webhook mode, error mapping for the outbox
(429 + Retry-After, outages, timeouts → retryable; bad token / channel / blocks → permanent), reports with a file
upload (files_upload_v2) and the test message."""

from __future__ import annotations

import pytest

from relay.notify.base import NotifyError
from relay.notify.slack.config import SlackConfig
from relay.notify.slack.notifier import METADATA_EVENT_TYPE, REPLY_EVENT_TYPE, SlackNotifier, SlackNotifyError
from tests.fakes.slack import FakeSlack
from tests.fakes.slack_samples import T0, budget_alert, error_rate_alert, notification, resolved

TOKEN = "xoxb-test-token"


@pytest.fixture
async def slack():
    async with FakeSlack((TOKEN,), channels={"C0ALERTS": "alerts", "C0OTHER": "other"}, not_member={"C0OTHER"}) as fake:
        yield fake


def bot(fake: FakeSlack, **kw) -> SlackNotifier:
    """A bot-mode notifier posting to #alerts of ``fake`` (``kw`` overrides config keys)."""
    cfg = {
        "bot_token": TOKEN,
        "channel": "#alerts",
        "api_url": fake.api_url,
        "mention_critical": "@here",
        "timeout": 5,
        **kw,
    }
    return SlackNotifier("oncall", 0, SlackConfig(**cfg))


@pytest.fixture
async def notifier(slack):
    n = bot(slack)
    yield n
    await n.close()


def alice():
    """A critical budget alert for user alice of team platform."""
    return budget_alert(
        labels={"alertname": "TeamBudget", "severity": "critical", "team.id": "platform", "user": "alice"}
    )


def bob(severity="warning"):
    """A budget alert for user bob of team platform."""
    return budget_alert(labels={"alertname": "TeamBudget", "severity": severity, "team.id": "platform", "user": "bob"})


GROUP = {"team.id": "platform"}


async def test_first_notification_posts_the_group_message(slack, notifier):
    assert notifier.integration == "slack/0" and notifier.receiver == "oncall" and notifier.send_resolved
    state = await notifier.notify(notification([alice()], group_labels=GROUP), {})
    assert state == {"channel": "C0ALERTS", "ts": state["ts"], "firing": [alice().fingerprint], "resolved": False}
    [msg] = slack.messages("C0ALERTS")
    assert msg.ts == state["ts"]
    assert msg.header == ":red_circle: [FIRING:1] TeamBudget · team.id=platform"
    assert msg.color == "#D92D20"
    assert msg.text.startswith("<!here> [FIRING:1] TeamBudget")
    assert msg.metadata["event_type"] == METADATA_EVENT_TYPE
    assert msg.metadata["event_payload"]["group_key"] == notification([alice()]).group_key
    [call] = slack.calls("chat.postMessage")
    assert call.token == TOKEN and call.headers["authorization"] == f"Bearer {TOKEN}"


async def test_updates_go_to_the_thread_and_edit_the_parent(slack, notifier):
    state = await notifier.notify(notification([alice()], group_labels=GROUP), {})
    state2 = await notifier.notify(notification([alice(), bob("critical")], group_labels=GROUP, seq=2), state)
    assert state2["ts"] == state["ts"] and state2["channel"] == "C0ALERTS"
    assert state2["firing"] == sorted([alice().fingerprint, bob("critical").fingerprint])
    [parent] = slack.messages("C0ALERTS")
    assert parent.edits == 1
    assert parent.header == ":red_circle: [FIRING:2] TeamBudget · team.id=platform"
    [reply] = slack.thread("C0ALERTS", state["ts"])
    assert reply.thread_ts == state["ts"]
    assert "1 new alert firing" in reply.content() and "`user=bob`" in reply.content()
    assert reply.text.startswith("<!here>")  # a new critical alert pings
    assert [c.args.get("channel") for c in slack.calls("chat.update")] == ["C0ALERTS"]  # the ID, not "#alerts"

    # a repeat reminder: same firing set
    state3 = await notifier.notify(
        notification([alice(), bob("critical")], group_labels=GROUP, seq=3, repeat=True), state2
    )
    assert state3 == state2
    replies = slack.thread("C0ALERTS", state["ts"])
    assert len(replies) == 2 and "Still firing" in replies[1].content()
    assert not replies[1].text.startswith("<!here>")

    # bob resolves, alice still fires
    state4 = await notifier.notify(
        notification([alice(), resolved(bob("critical"))], group_labels=GROUP, seq=4), state3
    )
    assert state4["firing"] == [alice().fingerprint]
    replies = slack.thread("C0ALERTS", state["ts"])
    assert len(replies) == 3 and "1 resolved" in replies[2].content() and "`user=bob`" in replies[2].content()
    assert slack.message("C0ALERTS", state["ts"]).header.startswith(":red_circle: [FIRING:1]")
    assert len(slack.messages("C0ALERTS")) == 1


async def test_resolve_edits_the_parent_and_notes_it_in_the_thread(slack, notifier):
    state = await notifier.notify(notification([alice()], group_labels=GROUP), {})
    final = notification([resolved(alice())], group_labels=GROUP, seq=2, created_at=T0 + 5000)
    assert final.status == "resolved"
    state2 = await notifier.notify(final, state)
    assert state2 == {"channel": "C0ALERTS", "ts": state["ts"], "firing": [], "resolved": True}
    parent = slack.message("C0ALERTS", state["ts"])
    assert parent.header == ":white_check_mark: [RESOLVED] TeamBudget · team.id=platform"
    assert parent.color == "#12B76A"
    assert "relay silence" not in parent.content()
    assert "FIRING" in parent.history[0]["attachments"][0]["blocks"][0]["text"]["text"]
    [note] = slack.thread("C0ALERTS", state["ts"])
    assert "*Resolved* after 1h 11m" in note.content()

    # the same resolved notification again (e.g. re-sent after a restart): the parent is re-applied, no 2nd note
    assert await notifier.notify(final, state2) == state2
    assert len(slack.thread("C0ALERTS", state["ts"])) == 1

    # firing again after the resolve: a new incident gets a new parent message
    state3 = await notifier.notify(notification([alice()], group_labels=GROUP, seq=3), state2)
    assert state3["ts"] != state["ts"] and not state3["resolved"]
    assert [m.ts for m in slack.messages("C0ALERTS")] == [state["ts"], state3["ts"]]


async def test_first_notification_already_resolved_posts_resolved_look(slack, notifier):
    state = await notifier.notify(notification([resolved(alice())], group_labels=GROUP), {})
    assert state["resolved"] is True
    [msg] = slack.messages("C0ALERTS")
    assert msg.color == "#12B76A" and not msg.replies


async def test_deleted_parent_gets_a_fresh_one(slack, notifier):
    state = await notifier.notify(notification([alice()], group_labels=GROUP), {})
    slack.delete_message("C0ALERTS", state["ts"])
    state2 = await notifier.notify(notification([alice(), bob()], group_labels=GROUP, seq=2), state)
    assert state2["ts"] != state["ts"]
    [msg] = slack.messages("C0ALERTS")
    assert msg.ts == state2["ts"] and msg.header.startswith(":red_circle: [FIRING:2]")
    assert [c.response["error"] for c in slack.calls("chat.update")] == ["message_not_found"]


async def test_failed_thread_reply_is_retried_without_a_second_parent(slack, notifier):
    state = await notifier.notify(notification([alice()], group_labels=GROUP), {})
    update = notification([alice(), bob()], group_labels=GROUP, seq=2)
    slack.rate_limit(retry_after=7, method="chat.postMessage")  # the parent edit passes, the reply is limited
    with pytest.raises(NotifyError) as err:
        await notifier.notify(update, state)
    assert err.value.retryable and err.value.retry_after == 7.0 and err.value.status == 429
    assert slack.message("C0ALERTS", state["ts"]).edits == 1 and not slack.thread("C0ALERTS", state["ts"])
    # the outbox retries with the state it kept
    state2 = await notifier.notify(update, state)
    assert state2["ts"] == state["ts"]
    assert len(slack.messages("C0ALERTS")) == 1
    assert len(slack.thread("C0ALERTS", state["ts"])) == 1
    assert slack.message("C0ALERTS", state["ts"]).edits == 2  # re-applied, same content
    parent = slack.message("C0ALERTS", state["ts"])
    assert parent.history[1]["attachments"] == parent.attachments


async def test_rate_limit_on_first_post_is_retryable_and_posts_nothing(slack, notifier):
    slack.rate_limit(retry_after=30)
    with pytest.raises(SlackNotifyError) as err:
        await notifier.notify(notification([alice()]), {})
    e = err.value
    assert (e.retryable, e.retry_after, e.status, e.error) == (True, 30.0, 429, "ratelimited")
    assert slack.messages("C0ALERTS") == []
    await notifier.notify(notification([alice()]), {})
    assert len(slack.messages("C0ALERTS")) == 1


async def test_ratelimited_error_code_is_retryable(slack, notifier):
    slack.error("ratelimited")
    with pytest.raises(SlackNotifyError) as err:
        await notifier.notify(notification([alice()]), {})
    assert err.value.retryable and err.value.error == "ratelimited"


@pytest.mark.parametrize(
    "code, retryable",
    [
        ("internal_error", True),
        ("fatal_error", True),
        ("service_unavailable", True),
        ("request_timeout", True),
        ("is_archived", False),
        ("missing_scope", False),
        ("msg_too_long", False),
    ],
)
async def test_error_codes_map_to_retryable_or_permanent(slack, notifier, code, retryable):
    slack.error(code)
    with pytest.raises(SlackNotifyError) as err:
        await notifier.notify(notification([alice()]), {})
    assert err.value.retryable is retryable and err.value.error == code and code in str(err.value)


async def test_outages_are_retryable(slack, notifier):
    await slack.outage()  # connection refused
    with pytest.raises(SlackNotifyError) as err:
        await notifier.notify(notification([alice()]), {})
    assert err.value.retryable and err.value.status is None
    await slack.restore()
    await slack.outage(503)  # up but failing, HTML error page
    with pytest.raises(SlackNotifyError) as err:
        await notifier.notify(notification([alice()]), {})
    assert err.value.retryable and err.value.status == 503
    await slack.restore()
    slack.reset_connection()
    with pytest.raises(SlackNotifyError) as err:
        await notifier.notify(notification([alice()]), {})
    assert err.value.retryable
    assert (await notifier.notify(notification([alice()]), {}))["ts"]
    assert len(slack.messages("C0ALERTS")) == 1


async def test_timeout_is_retryable(slack):
    n = bot(slack, timeout=0.2)
    slack.slow(1.0)
    try:
        with pytest.raises(SlackNotifyError) as err:
            await n.notify(notification([alice()]), {})
        assert err.value.retryable
    finally:
        await n.close()


class Kept:
    """What the outbox keeps for a group: the last returned or checkpointed state."""

    def __init__(self) -> None:
        self.state: dict = {}

    async def checkpoint(self, state: dict) -> None:
        self.state = state


async def test_lost_answer_without_a_checkpoint_duplicates_the_parent(slack, notifier):
    """Called without the outbox's checkpoint nothing records the post as pending: the retry posts again."""
    slack.reset_connection(method="chat.postMessage", after=True)
    with pytest.raises(SlackNotifyError) as err:
        await notifier.notify(notification([alice()]), {})
    assert err.value.retryable
    await notifier.notify(notification([alice()]), {})
    assert len(slack.messages("C0ALERTS")) == 2


async def test_lost_answer_is_found_by_metadata_in_a_channel_named_by_name(slack, notifier):
    """``channel: "#alerts"``: the retry finds the channel's ID with ``conversations.list`` and the post with
    ``conversations.history`` (``include_all_metadata``), so nothing is posted twice."""
    kept = Kept()
    slack.reset_connection(method="chat.postMessage", after=True)
    with pytest.raises(SlackNotifyError):
        await notifier.deliver(notification([alice()]), kept.state, kept.checkpoint)
    assert kept.state["pending_post"]["channel"] is None  # the ID was not known yet
    restarted = bot(slack)  # a new process: nothing in memory
    try:
        state = await restarted.deliver(notification([alice()]), kept.state, kept.checkpoint)
    finally:
        await restarted.close()
    [parent] = slack.messages("C0ALERTS")
    assert state == {"channel": "C0ALERTS", "ts": parent.ts, "firing": [alice().fingerprint], "resolved": False}
    assert parent.metadata["event_payload"]["ref"] and len(slack.calls("conversations.list")) == 1
    [history] = slack.calls("conversations.history")
    assert history.args["channel"] == "C0ALERTS" and history.args["include_all_metadata"] in ("1", "true")


async def test_lost_reply_is_found_in_the_thread(slack, notifier):
    kept = Kept()
    kept.state = await notifier.deliver(notification([alice()], group_labels=GROUP), {}, kept.checkpoint)
    update = notification([alice(), bob()], group_labels=GROUP, seq=2)
    slack.reset_connection(method="chat.postMessage", after=True)
    with pytest.raises(SlackNotifyError):
        await notifier.deliver(update, kept.state, kept.checkpoint)
    assert kept.state["pending_post"]["thread_ts"] == kept.state["ts"]
    state = await notifier.deliver(update, kept.state, kept.checkpoint)
    assert "pending_post" not in state and len(slack.messages("C0ALERTS")) == 1
    [reply] = slack.thread("C0ALERTS", state["ts"])
    assert reply.metadata["event_type"] == REPLY_EVENT_TYPE
    assert len(slack.calls("conversations.replies")) == 1
    # the next notification has another ref: it is posted, not mistaken for the earlier one
    state = await notifier.deliver(
        notification([alice()], group_labels=GROUP, seq=3, repeat=True), state, kept.checkpoint
    )
    assert len(slack.thread("C0ALERTS", state["ts"])) == 2


async def test_invalid_token_is_permanent(slack):
    n = bot(slack, bot_token="xoxb-wrong")
    try:
        with pytest.raises(SlackNotifyError) as err:
            await n.notify(notification([alice()]), {})
        assert not err.value.retryable and err.value.error == "invalid_auth"
        assert "xoxb-wrong" not in str(err.value)
    finally:
        await n.close()


@pytest.mark.parametrize("channel, code", [("#nope", "channel_not_found"), ("C0OTHER", "not_in_channel")])
async def test_bad_channel_is_permanent(slack, channel, code):
    n = bot(slack, channel=channel)
    try:
        with pytest.raises(SlackNotifyError) as err:
            await n.notify(notification([alice()]), {})
        assert not err.value.retryable and err.value.error == code and code in str(err.value)
    finally:
        await n.close()


async def test_invalid_blocks_are_permanent_with_details(slack, notifier):
    bad = [{"type": "header", "text": {"type": "plain_text", "text": "x" * 151}}]
    with pytest.raises(SlackNotifyError) as err:
        await notifier.post_report(bad, "weekly report")
    assert not err.value.retryable and err.value.error == "invalid_blocks"
    assert "150" in str(err.value)


async def test_webhook_mode_posts_one_message_per_notification(slack):
    url = slack.webhook_url("C0ALERTS")
    n = SlackNotifier("oncall", 2, SlackConfig(webhook_url=url, mention_critical="<!subteam^S1>"))
    try:
        assert n.integration == "slack/2" and n.mode == "webhook"
        assert await n.notify(notification([alice()], group_labels=GROUP), {}) == {}
        assert await n.notify(notification([resolved(alice())], group_labels=GROUP, seq=2), {}) == {}
        first, second = slack.messages("C0ALERTS")
        assert first.via == second.via == "webhook"
        assert first.color == "#D92D20" and first.text.startswith("<!subteam^S1>")
        assert second.header.startswith(":white_check_mark: [RESOLVED]")
        assert not slack.calls("chat.postMessage") and not slack.calls("chat.update")

        slack.rate_limit(retry_after=3, method="webhook")
        with pytest.raises(SlackNotifyError) as err:
            await n.notify(notification([alice()]), {})
        assert (err.value.retryable, err.value.retry_after, err.value.status) == (True, 3.0, 429)

        await slack.outage(503)
        with pytest.raises(SlackNotifyError) as err:
            await n.notify(notification([alice()]), {})
        assert err.value.retryable and err.value.status == 503 and err.value.error is None
        await slack.restore()

        await slack.outage()
        with pytest.raises(SlackNotifyError) as err:
            await n.notify(notification([alice()]), {})
        assert err.value.retryable and url not in str(err.value)
        await slack.restore()
    finally:
        await n.close()


async def test_webhook_permanent_errors(slack):
    url = slack.webhook_url("C0ALERTS")
    revoked = SlackNotifier("oncall", 0, SlackConfig(webhook_url=url + "x"))
    try:
        with pytest.raises(SlackNotifyError) as err:
            await revoked.notify(notification([alice()]), {})
        assert not err.value.retryable and err.value.error == "no_service" and err.value.status == 404
        assert url not in str(err.value)
    finally:
        await revoked.close()
    n = SlackNotifier("oncall", 0, SlackConfig(webhook_url=url))
    try:
        with pytest.raises(SlackNotifyError) as err:
            await n.post_report([{"type": "bogus"}], "report")
        assert not err.value.retryable and err.value.error == "invalid_blocks"
    finally:
        await n.close()


REPORT_BLOCKS = [
    {"type": "header", "text": {"type": "plain_text", "text": "Weekly Claude Code usage"}},
    {"type": "section", "text": {"type": "mrkdwn", "text": "*$1,234.56* across 12 users"}},
]


async def test_report_with_file_upload_v2(slack, notifier):
    png = bytes(range(256)) * 40
    state = await notifier.post_report(REPORT_BLOCKS, "Weekly usage", png, "usage.png", "Spend by day")
    [msg, share] = slack.messages("C0ALERTS")
    assert msg.ts == state["ts"] and msg.header == "Weekly Claude Code usage" and msg.text == "Weekly usage"
    f = slack.files()[state["file_id"]]
    assert f.data == png and f.length == len(png) and f.filename == "usage.png" and f.title == "Spend by day"
    assert f.shared == ["C0ALERTS"] and f.initial_comment == "Spend by day"
    assert share.files == [state["file_id"]] and share.via == "file_share"
    assert [r.method for r in slack.requests] == [
        "chat.postMessage",
        "files.getUploadURLExternal",
        "upload",
        "files.completeUploadExternal",
    ]


async def test_report_retry_skips_the_posted_message(slack, notifier):
    state: dict = {}
    slack.fail(503, method="upload")
    with pytest.raises(SlackNotifyError) as err:
        await notifier.post_report(REPORT_BLOCKS, "Weekly usage", b"csv,data\n1,2\n", "usage.csv", "Usage", state=state)
    assert err.value.retryable and err.value.status == 503
    assert set(state) == {"channel", "ts"}
    await notifier.post_report(REPORT_BLOCKS, "Weekly usage", b"csv,data\n1,2\n", "usage.csv", "Usage", state=state)
    assert len([m for m in slack.messages("C0ALERTS") if m.via == "api"]) == 1
    assert slack.files()[state["file_id"]].data == b"csv,data\n1,2\n"


async def test_report_in_webhook_mode_says_the_file_is_missing(slack):
    n = SlackNotifier("oncall", 0, SlackConfig(webhook_url=slack.webhook_url("C0ALERTS")))
    try:
        assert await n.post_report(REPORT_BLOCKS, "Weekly usage", b"png", "usage.png") == {"sent": True}
        [msg] = slack.messages("C0ALERTS")
        assert msg.header == "Weekly Claude Code usage"
        assert "cannot upload files" in msg.content() and "usage.png" in msg.content()
        assert not slack.files()
    finally:
        await n.close()


async def test_test_send(slack, notifier):
    result = await notifier.test_send()
    assert result["channel"] == "C0ALERTS" and result["team"] == "Fake Workspace"
    [msg] = slack.messages("C0ALERTS")
    assert "relay test notification" in msg.text and msg.ts == result["ts"]
    assert [r.method for r in slack.requests] == ["auth.test", "chat.postMessage"]
    hook = SlackNotifier("oncall", 1, SlackConfig(webhook_url=slack.webhook_url("C0ALERTS")))
    try:
        assert await hook.test_send() == {}
        assert len(slack.messages("C0ALERTS")) == 2
    finally:
        await hook.close()


async def test_error_rate_group_for_a_second_receiver(slack):
    """Two integrations are independent: each keeps its own state for the same group."""
    a, b = bot(slack), SlackNotifier("oncall", 1, SlackConfig(webhook_url=slack.webhook_url("C0ALERTS")))
    try:
        n = notification([error_rate_alert()], group_labels={"model": "claude-sonnet-4"})
        sa = await a.notify(n, {})
        assert await b.notify(n, {}) == {}
        assert len(slack.messages("C0ALERTS")) == 2 and sa["ts"] == slack.messages("C0ALERTS")[0].ts
        await a.close()
        sa2 = await a.notify(
            notification([error_rate_alert()], group_labels={"model": "claude-sonnet-4"}, seq=2, repeat=True), sa
        )  # reopens its session after close()
        assert sa2 == sa
    finally:
        await a.close()
        await b.close()


def test_config_requires_exactly_one_mode():
    with pytest.raises(ValueError):
        SlackConfig(bot_token="x", webhook_url="https://hooks.slack.com/services/T/B/x", channel="#a")
    with pytest.raises(ValueError):
        SlackConfig(bot_token="x")
    with pytest.raises(ValueError):
        SlackConfig(webhook_url="ftp://x")
    assert SlackConfig(bot_token="x", channel="#a", api_url="http://h/api").api_url == "http://h/api/"


async def test_a_refused_channel_lookup_falls_back_to_posting(slack, notifier):
    """Without ``channels:read`` the channel's ID cannot be found by name: relay posts again (at-least-once)
    rather than fail the notification."""
    kept = Kept()
    slack.reset_connection(method="chat.postMessage", after=True)
    with pytest.raises(SlackNotifyError):
        await notifier.deliver(notification([alice()]), kept.state, kept.checkpoint)
    slack.error("missing_scope", method="conversations.list")
    state = await notifier.deliver(notification([alice()]), kept.state, kept.checkpoint)
    assert len(slack.messages("C0ALERTS")) == 2 and state["ts"] == slack.messages("C0ALERTS")[1].ts
