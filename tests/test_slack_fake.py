"""The fake Slack itself enforces Slack's contract (so notifier tests against it mean something): bearer auth with
HTTP 200 ``ok: false`` errors, JSON and form bodies, block validation with slack-sdk's models and Slack's limits,
threads, ``chat.update`` by channel ID, 429 + Retry-After, per-channel rate limits, incoming webhooks, and the
threaded runner."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.slack import FakeSlack
from tests.support.clock import Clock

TOKEN = "xoxb-test-token"


@pytest.fixture
async def slack():
    async with FakeSlack((TOKEN,)) as fake:
        yield fake


def client(fake: FakeSlack, token: str | None = TOKEN) -> AsyncWebClient:
    """slack-sdk's async client against ``fake``, without retries."""
    return AsyncWebClient(token=token, base_url=fake.api_url, retry_handlers=[])


async def api_error(coro) -> dict:
    """The failed response of ``coro`` (a SlackApiError is expected): ``{"status", **body}``."""
    with pytest.raises(SlackApiError) as err:
        await coro
    return {"status": err.value.response.status_code, **err.value.response.data}


async def test_auth(slack):
    assert (await client(slack).auth_test())["team_id"] == "T0FAKE"
    assert (await api_error(client(slack, None).auth_test()))["error"] == "not_authed"
    e = await api_error(client(slack, "xoxb-other").chat_postMessage(channel="C0ALERTS", text="hi"))
    assert e == {"status": 200, "ok": False, "error": "invalid_auth"}
    assert slack.messages("C0ALERTS") == []


async def test_form_encoded_post_with_token_in_body(slack):
    blocks = json.dumps([{"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}])
    async with aiohttp.ClientSession() as s:
        async with s.post(
            slack.api_url + "chat.postMessage",
            data={"token": TOKEN, "channel": "#alerts", "text": "hi", "blocks": blocks},
        ) as r:
            body = await r.json()
    assert body["ok"] and body["channel"] == "C0ALERTS"
    [msg] = slack.messages("alerts")
    assert msg.blocks[0]["text"]["text"] == "*hi*"
    assert "token" not in slack.calls("chat.postMessage")[0].args


@pytest.mark.parametrize(
    "blocks, fragment",
    [
        ([{"type": "bogus"}], "unknown block type"),
        ([{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}], "150"),
        ([{"type": "section", "text": {"type": "mrkdwn", "text": "s" * 3001}}], "3000"),
        ([{"type": "section", "text": {"type": "mrkdwn", "text": ""}}], "non-empty"),
        ([{"type": "section", "fields": [{"type": "mrkdwn", "text": "f" * 2001}]}], "2000"),
        ([{"type": "divider"}] * 51, "at most 50 blocks"),
    ],
)
async def test_invalid_blocks(slack, blocks, fragment):
    e = await api_error(client(slack).chat_postMessage(channel="C0ALERTS", text="t", blocks=blocks))
    assert e["error"] == "invalid_blocks" and fragment in " ".join(e["response_metadata"]["messages"])
    e = await api_error(
        client(slack).chat_postMessage(
            channel="C0ALERTS", text="t", attachments=[{"color": "#000000", "blocks": blocks}]
        )
    )
    assert e["error"] == "invalid_blocks" and "/attachments/0/blocks" in e["response_metadata"]["messages"][0]
    assert slack.messages("C0ALERTS") == []


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")
async def test_message_content_rules(slack):
    c = client(slack)
    assert (await api_error(c.chat_postMessage(channel="C0ALERTS")))["error"] == "no_text"
    assert (await api_error(c.chat_postMessage(channel="C0ALERTS", text="x" * 40_001)))["error"] == "msg_too_long"
    assert (await api_error(c.chat_postMessage(channel="C0NOPE", text="x")))["error"] == "channel_not_found"
    meta = {"event_type": "x"}
    assert (await api_error(c.chat_postMessage(channel="C0ALERTS", text="x", metadata=meta)))[
        "error"
    ] == "invalid_metadata_format"


async def test_threads_and_updates(slack):
    c = client(slack)
    parent = await c.chat_postMessage(channel="#alerts", text="parent")
    reply = await c.chat_postMessage(channel="C0ALERTS", text="r1", thread_ts=parent["ts"])
    await c.chat_postMessage(channel="C0ALERTS", text="r2", thread_ts=reply["ts"])  # lands in the same thread
    assert [r.text for r in slack.thread("C0ALERTS", parent["ts"])] == ["r1", "r2"]
    e = await api_error(c.chat_postMessage(channel="C0ALERTS", text="x", thread_ts="1.000001"))
    assert e["error"] == "thread_not_found"

    assert (await api_error(c.chat_update(channel="#alerts", ts=parent["ts"], text="new")))[
        "error"
    ] == "channel_not_found"  # chat.update wants the channel ID
    assert (await api_error(c.chat_update(channel="C0ALERTS", ts="1.000001", text="new")))[
        "error"
    ] == "message_not_found"
    upd = await c.chat_update(channel="C0ALERTS", ts=parent["ts"], text="edited")
    assert upd["ts"] == parent["ts"]
    msg = slack.message("C0ALERTS", parent["ts"])
    assert msg.text == "edited" and msg.history == [{"text": "parent", "blocks": None, "attachments": None}]

    slack.delete_message("C0ALERTS", parent["ts"])
    assert slack.messages("C0ALERTS") == [] and slack.message("C0ALERTS", reply["ts"]) is None


async def test_rate_limit_fault_and_outage(slack):
    c = client(slack)
    slack.rate_limit(retry_after=9, times=2, method="chat.postMessage")
    for _ in range(2):
        with pytest.raises(SlackApiError) as err:
            await c.chat_postMessage(channel="C0ALERTS", text="x")
        assert err.value.response.status_code == 429 and err.value.response.headers["Retry-After"] == "9"
        assert err.value.response["error"] == "ratelimited"
    assert (await c.auth_test())["ok"]  # other methods unaffected
    assert (await c.chat_postMessage(channel="C0ALERTS", text="x"))["ok"]
    await slack.outage()
    with pytest.raises(aiohttp.ClientConnectionError):
        await c.auth_test()
    await slack.restore()
    assert (await c.auth_test())["ok"]


async def test_per_channel_rate_limit_uses_the_clock():
    clock = Clock(1_750_000_000.0)
    async with FakeSlack((TOKEN,), channel_rate=(2, 1.0), clock=clock) as slack:
        c = client(slack)
        await c.chat_postMessage(channel="C0ALERTS", text="1")
        await c.chat_postMessage(channel="C0ALERTS", text="2")
        with pytest.raises(SlackApiError) as err:
            await c.chat_postMessage(channel="C0ALERTS", text="3")
        assert err.value.response.status_code == 429
        await c.chat_postMessage(channel="C0REPORTS", text="other channel")
        clock.t += 1.0
        await c.chat_postMessage(channel="C0ALERTS", text="3")
        assert [m.text for m in slack.messages("C0ALERTS")] == ["1", "2", "3"]
        assert slack.messages("C0ALERTS")[0].ts.startswith("1750000000.")


async def test_complete_upload_needs_the_bytes(slack):
    c = client(slack)
    url = await c.files_getUploadURLExternal(filename="a.txt", length=3)
    e = await api_error(c.files_completeUploadExternal(files=[{"id": url["file_id"]}], channel_id="C0ALERTS"))
    assert e["error"] == "file_not_found"


async def test_webhook_contract(slack):
    url = slack.webhook_url("alerts")
    async with aiohttp.ClientSession() as s:

        async def post(u, data, ctype="application/json"):
            async with s.post(u, data=data, headers={"Content-Type": ctype}) as r:
                return r.status, await r.text()

        assert await post(url, json.dumps({"text": "hello"})) == (200, "ok")
        assert await post(url, "payload=" + json.dumps({"text": "form"}), "application/x-www-form-urlencoded") == (
            200,
            "ok",
        )
        assert await post(url, "{not json") == (400, "invalid_payload")
        assert await post(url, json.dumps({"unfurl_links": False})) == (400, "no_text")
        assert await post(url, json.dumps({"text": "x", "blocks": [{"type": "nope"}]})) == (400, "invalid_blocks")
        assert await post(url + "x", json.dumps({"text": "x"})) == (404, "no_service")
    assert [m.text for m in slack.messages("C0ALERTS")] == ["hello", "form"]


def test_run_in_thread():
    with FakeSlack.run_in_thread((TOKEN,)) as slack:
        url = slack.webhook_url("C0ALERTS")
        req = urllib.request.Request(
            url, data=b'{"text": "from a thread"}', headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.read() == b"ok"
        assert [m.text for m in slack.messages("C0ALERTS")] == ["from a thread"]
        slack.outage(503)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=5)
        assert err.value.code == 503
        slack.restore()
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.read() == b"ok"


async def test_history_replies_and_list_read_messages_back(slack):
    """``conversations.history`` (newest first, channel IDs only, ``oldest``, cursor paging), ``conversations.replies``
    (parent then replies) and ``conversations.list``; message ``metadata`` only with ``include_all_metadata``."""
    c = client(slack)
    meta = {"event_type": "relay_alert_group", "event_payload": {"ref": "r1"}}
    first = await c.chat_postMessage(channel="#alerts", text="one", metadata=meta)
    second = await c.chat_postMessage(channel="C0ALERTS", text="two")
    reply = await c.chat_postMessage(
        channel="C0ALERTS",
        text="re",
        thread_ts=first["ts"],
        metadata={"event_type": "relay_alert_update", "event_payload": {"ref": "r2"}},
    )
    page = await c.conversations_history(channel="C0ALERTS")
    assert [m["text"] for m in page["messages"]] == ["two", "one"]  # no replies, newest first
    assert all("metadata" not in m for m in page["messages"])
    page = await c.conversations_history(channel="C0ALERTS", include_all_metadata=True, limit=1)
    assert page["messages"][0]["ts"] == second["ts"] and page["has_more"]
    page = await c.conversations_history(
        channel="C0ALERTS", include_all_metadata=True, limit=1, cursor=page["response_metadata"]["next_cursor"]
    )
    assert page["messages"][0]["metadata"] == meta and not page["has_more"]
    page = await c.conversations_history(channel="C0ALERTS", oldest=first["ts"])
    assert [m["text"] for m in page["messages"]] == ["two"]  # oldest is exclusive unless inclusive
    assert (await api_error(c.conversations_history(channel="#alerts")))["error"] == "channel_not_found"
    thread = await c.conversations_replies(channel="C0ALERTS", ts=first["ts"], include_all_metadata=True)
    assert [m["ts"] for m in thread["messages"]] == [first["ts"], reply["ts"]]
    assert thread["messages"][1]["metadata"]["event_payload"] == {"ref": "r2"}
    assert (await api_error(c.conversations_replies(channel="C0ALERTS", ts="1.000001")))["error"] == "thread_not_found"
    channels = (await c.conversations_list(types="public_channel,private_channel"))["channels"]
    assert {ch["name"]: ch["id"] for ch in channels} == {"alerts": "C0ALERTS", "reports": "C0REPORTS"}
