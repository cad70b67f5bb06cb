"""The Slack notifier: one ``slack_configs`` entry of a receiver, through slack-sdk's async clients.

**Bot mode** (``bot_token`` + ``channel``; scopes ``chat:write``, and ``files:write`` for reports) — one message per
alert group (https://docs.slack.dev/reference/methods/chat.postMessage), kept current in place
(https://docs.slack.dev/reference/methods/chat.update), follow-ups in its thread (``thread_ts``):

=====================================  ==========================================================================
notification                           Slack calls
=====================================  ==========================================================================
first of the group (``state == {}``)   ``chat.postMessage`` of the group message → state ``{channel, ts, …}``
still firing (new / repeat / resolved  ``chat.update`` of the parent to the current state, then a thread reply
  alerts)                              saying what changed (new alerts, resolved ones, reminder with figures)
all resolved (``status == resolved``)  ``chat.update`` of the parent to the green RESOLVED look, then a short
                                       resolved note in the thread (once)
firing again after a resolve           a new parent message (a new incident; the old thread stays as it was)
parent deleted (``message_not_found``  a fresh parent message; its ``ts`` replaces the old one in the state
  / ``thread_not_found``)
=====================================  ==========================================================================

**Webhook mode** (``webhook_url``) — one POST per notification (no ``ts`` comes back, so no thread and no edit;
https://docs.slack.dev/messaging/sending-messages-using-incoming-webhooks); the reply is plain ``ok``.

State kept by the outbox per (integration, group key) — bot mode::

    {"channel": "C0123ABCD",          # channel ID from chat.postMessage (chat.update needs the ID, not a name)
     "ts": "1719756000.000100",       # the parent message
     "firing": ["<fingerprint>", …],  # sorted fingerprints firing at the last notification ("new" is relative to it)
     "resolved": False}               # True once the parent shows RESOLVED

plus, in the state checkpointed just before a post, ``"pending_post": {"ref", "channel", "thread_ts", "at"}`` (see
below). Webhook mode keeps ``{}``.

**Retries and duplicates.** slack-sdk's own retry handlers are disabled: the durable outbox retries. Errors are
raised as :class:`SlackNotifyError` (a :class:`~relay.notify.base.NotifyError`): HTTP 429 / ``ratelimited``
(with ``retry_after`` from ``Retry-After``, https://docs.slack.dev/apis/web-api/rate-limits), 5xx, connection
errors, timeouts and Slack's transient codes (``internal_error``, ``fatal_error``, ``service_unavailable``,
``request_timeout``) are retryable; other ``ok: false`` codes (``invalid_auth``, ``not_authed``,
``channel_not_found``, ``not_in_channel``, ``invalid_blocks``, ``msg_too_long``…) and other 4xx are permanent,
with the code in the message. An update edits the parent *before* posting the thread reply, so a retry after a
failed reply re-applies an idempotent ``chat.update`` and then posts the reply once.

Slack has no idempotency key for ``chat.postMessage``, so a post whose answer was lost (timeout, reset, a delivery
cancelled by the outbox, or relay killed mid-call) is found again before it is re-posted. Every message relay
posts carries message metadata (https://docs.slack.dev/messaging/message-metadata) naming the notification that
posted it: parents ``event_type`` ``relay_alert_group``, thread replies ``relay_alert_update``, both with
``event_payload`` ``{receiver, integration, group_key, status, ref}`` (``ref``: a hash of the integration, group
key, notification ``seq``, time and status). Before each post the notifier records ``pending_post: {ref,
channel, thread_ts, at}`` in the group's state through the outbox's durable checkpoint; an attempt that finds
its own ``pending_post`` first looks for the message with ``conversations.history`` (a parent) or
``conversations.replies`` (a thread reply), ``include_all_metadata=true`` from 10 minutes before ``at``
(https://docs.slack.dev/reference/methods/conversations.history), and uses it instead of posting again. That
needs the bot scopes ``channels:history`` (``groups:history`` for private channels); the history is read by
channel ID, so for a channel configured by name (``#alerts``) the ID comes from the group's state, an earlier
answer, or ``conversations.list`` (scopes ``channels:read`` / ``groups:read``). When the lookup is refused
(``missing_scope``…, logged) delivery stays at-least-once for that post rather than blocking the alert. Webhook
mode cannot look anything up (at-least-once).

Secrets (bot token, webhook URL) are never logged nor put into error messages.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError, SlackRequestError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from relay.alert import Notification
from relay.notify.base import Checkpoint, CheckpointingNotifier, NotifyError
from relay.notify.http import LazySession
from relay.notify.slack.blocks import (
    group_message,
    normalize_mention,
    ping_message,
    resolved_note,
    thread_update,
)
from relay.notify.slack.config import SlackConfig

__all__ = ["SlackNotifier", "SlackNotifyError", "METADATA_EVENT_TYPE", "REPLY_EVENT_TYPE"]

log = logging.getLogger(__name__)

#: slack-sdk's loggers print request URLs (a webhook URL is a secret) at DEBUG: give it a logger that never does.
_SDK_LOG = logging.getLogger("relay.notify.slack.notifier.sdk")
_SDK_LOG.setLevel(logging.INFO)

#: ``metadata.event_type`` of every parent message (https://docs.slack.dev/messaging/message-metadata).
METADATA_EVENT_TYPE = "relay_alert_group"
#: ``metadata.event_type`` of every thread reply relay posts.
REPLY_EVENT_TYPE = "relay_alert_update"
#: How far before the recorded ``pending_post.at`` the lookup starts (seconds; covers clock skew with Slack).
_LOOKUP_MARGIN = 600.0
#: Pages of ``conversations.history`` / ``conversations.replies`` read at most in a lookup.
_LOOKUP_PAGES = 5
#: Pages of ``conversations.list`` read at most to find a channel's ID by name.
_LIST_PAGES = 20
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{2,}$")

#: ``ok: false`` codes worth retrying (Slack's documented transient errors).
_TRANSIENT = {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
#: chat.update codes meaning "the parent is gone": post a fresh one.
_PARENT_GONE = {"message_not_found", "thread_not_found"}
#: chat.update codes meaning "this message cannot be edited": keep it and just reply in the thread.
_NOT_EDITABLE = {"cant_update_message", "edit_window_closed"}
_ERROR_CODE = re.compile(r"[a-z][a-z0-9_]{1,80}")


class SlackNotifyError(NotifyError):
    """A failed Slack call. ``error`` is Slack's error code (``channel_not_found``, ``ratelimited``, the webhook's
    ``invalid_payload``…) or None for transport errors; ``method`` the Web API method (``webhook`` for incoming
    webhooks)."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        status: int | None = None,
        error: str | None = None,
        method: str = "",
    ):
        super().__init__(message, retryable=retryable, retry_after=retry_after, status=status)
        self.error = error
        self.method = method


def _retry_after(headers: Any) -> float | None:
    """Seconds from a ``Retry-After`` header (integer seconds at Slack); None when absent or unreadable."""
    try:
        value = headers.get("Retry-After") if headers is not None else None
        return max(0.0, float(value)) if value is not None else None
    except (TypeError, ValueError):
        return None


def _classify(
    method: str, status: int | None, error: str | None, retry_after: float | None, detail: str = ""
) -> SlackNotifyError:
    """The :class:`SlackNotifyError` for an HTTP status and/or Slack error code."""
    if status == 429 or error == "ratelimited":
        retryable = True
    elif status is not None and (status >= 500 or status == 408):
        retryable = True
    else:
        retryable = error in _TRANSIENT
    what = error or (f"HTTP {status}" if status is not None else "error")
    if status is not None and status != 200 and error:
        what += f" (HTTP {status})"
    message = f"slack {method}: {what}" + (f" — {detail}" if detail else "")
    return SlackNotifyError(
        message, retryable=retryable, retry_after=retry_after, status=status, error=error, method=method
    )


def _from_api_error(method: str, e: SlackApiError) -> SlackNotifyError:
    resp = e.response
    status = getattr(resp, "status_code", None) or getattr(resp, "status", None)
    data = getattr(resp, "data", None)
    error = data.get("error") if isinstance(data, dict) else None
    api_url = getattr(resp, "api_url", "") or ""
    if api_url:
        method = api_url.rstrip("/").rsplit("/", 1)[-1]
    detail = ""
    if isinstance(data, dict):
        msgs = (data.get("response_metadata") or {}).get("messages") or data.get("errors") or []
        if msgs:
            detail = "; ".join(str(m) for m in msgs)[:500]
    return _classify(method, status, error, _retry_after(getattr(resp, "headers", None)), detail)


class SlackNotifier(CheckpointingNotifier):
    """One Slack integration (``receivers[].slack_configs[index]``) of receiver ``receiver_name``.

    ``integration`` is ``slack/<index>``; ``send_resolved`` comes from the config. ``clock`` (unix seconds) only
    dates the test message. Connections are opened lazily on first use and released by :meth:`close`.
    """

    def __init__(
        self, receiver_name: str, index: int, config: SlackConfig, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.receiver = receiver_name
        self.integration = f"slack/{index}"
        self.send_resolved = config.send_resolved
        self.config = config
        #: ``bot`` (token: threads and edits) or ``webhook``.
        self.mode = "bot" if config.bot_token is not None else "webhook"
        self._mention = normalize_mention(config.mention_critical)
        self._clock = clock
        self._http = LazySession(config.timeout, config.tls)
        self._web: AsyncWebClient | None = None
        self._hook: AsyncWebhookClient | None = None
        #: channel names of the config → IDs (from post answers or ``conversations.list``)
        self._channel_ids: dict[str, str] = {}

    # ----------------------------------------------------------------------------------------------- clients
    def _open(self) -> None:
        if self._http.is_open:
            return
        session = self._http.get()
        timeout = max(1, int(round(self.config.timeout)))
        if self.config.bot_token is not None:
            self._web = AsyncWebClient(
                token=self.config.bot_token.get_secret_value(),
                base_url=self.config.api_url,
                timeout=timeout,
                session=session,
                retry_handlers=[],
                logger=_SDK_LOG,
            )
        else:
            assert self.config.webhook_url is not None
            self._hook = AsyncWebhookClient(
                url=self.config.webhook_url.get_secret_value(),
                timeout=timeout,
                session=session,
                retry_handlers=[],
                logger=_SDK_LOG,
            )

    def _scrub(self, text: str) -> str:
        for secret in (self.config.webhook_url, self.config.bot_token):
            if secret is not None and secret.get_secret_value():
                text = text.replace(secret.get_secret_value(), "[redacted]")
        return text

    async def _call(self, method: str, make: Callable[[AsyncWebClient], Awaitable[Any]]) -> Any:
        """Run one Web API call (``make(client)``), mapping every failure to :class:`SlackNotifyError`."""
        self._open()
        assert self._web is not None
        try:
            return await make(self._web)
        except SlackApiError as e:
            raise _from_api_error(method, e) from None
        except SlackRequestError as e:  # files_upload_v2's upload step: "Failed to upload a file (status: 503, …)"
            m = re.search(r"status: (\d+)", str(e))
            status = int(m.group(1)) if m else None
            raise _classify(method, status, None, None, self._scrub(str(e))[:300]) from None
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise SlackNotifyError(
                f"slack {method}: {type(e).__name__}: {self._scrub(str(e))[:300]}", retryable=True, method=method
            ) from None
        except SlackClientError as e:
            raise SlackNotifyError(
                f"slack {method}: {self._scrub(str(e))[:300]}", retryable=False, method=method
            ) from None

    async def _webhook_send(self, body: dict[str, Any]) -> None:
        """POST ``body`` to the incoming webhook; raises :class:`SlackNotifyError` unless Slack answered ``ok``."""
        self._open()
        assert self._hook is not None
        try:
            resp = await self._hook.send_dict(body)
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise SlackNotifyError(
                f"slack webhook: {type(e).__name__}: {self._scrub(str(e))[:300]}", retryable=True, method="webhook"
            ) from None
        if resp.status_code == 200:
            return
        text = (resp.body or "").strip()
        code = text if _ERROR_CODE.fullmatch(text) else None  # webhooks answer e.g. "invalid_payload" as text
        raise _classify("webhook", resp.status_code, code, _retry_after(resp.headers))

    async def close(self) -> None:
        """Close the HTTP session (idempotent); the next call opens a new one."""
        self._web = self._hook = None
        await self._http.close()

    # ----------------------------------------------------------------------------------------------- messages
    def _ref(self, n: Notification) -> str:
        """A stable id of notification ``n`` for this integration (put in the metadata of what it posts)."""
        raw = f"{self.receiver}|{self.integration}|{n.group_key}|{n.seq}|{n.created_at!r}|{n.status}"
        return hashlib.sha256(raw.encode()).hexdigest()[:16]

    def _metadata(self, n: Notification, event_type: str = METADATA_EVENT_TYPE) -> dict[str, Any]:
        return {
            "event_type": event_type,
            "event_payload": {
                "receiver": self.receiver,
                "integration": self.integration,
                "group_key": n.group_key,
                "status": n.status,
                "ref": self._ref(n),
            },
        }

    def _group_message(self, n: Notification) -> dict[str, Any]:
        return group_message(n, mention=self._mention, silence_duration=self.config.silence_duration)

    async def _post_parent(
        self, n: Notification, state: dict[str, Any], checkpoint: Checkpoint | None
    ) -> dict[str, Any]:
        msg = self._group_message(n)
        channel = self.config.channel or ""
        known = channel if _CHANNEL_ID.match(channel) else state.get("channel")
        posted = await self._post_once(
            n,
            state,
            checkpoint,
            channel,
            None,
            known or self._channel_ids.get(channel),
            {"metadata": self._metadata(n), **msg},
        )
        self._channel_ids[channel] = posted["channel"]
        log.info(
            "slack %s/%s: posted group %s to %s (ts %s)",
            self.receiver,
            self.integration,
            n.group_key,
            posted["channel"],
            posted["ts"],
        )
        return {
            "channel": posted["channel"],
            "ts": posted["ts"],
            "firing": sorted(a.fingerprint for a in n.firing),
            "resolved": not n.firing,
        }

    async def _post_once(
        self,
        n: Notification,
        state: dict[str, Any],
        checkpoint: Checkpoint | None,
        channel: str,
        thread_ts: str | None,
        lookup_channel: str | None,
        fields: dict[str, Any],
    ) -> dict[str, str]:
        """``chat.postMessage`` of ``fields`` to ``channel`` (in the thread of ``thread_ts`` when set) at most once
        per notification: when ``state`` records this very post as pending (an earlier attempt died or lost its
        answer), look for it first (in ``lookup_channel``, a channel ID). Records the post as pending through
        ``checkpoint`` before sending. Returns ``{"channel", "ts"}``."""
        ref = self._ref(n)
        pending = state.get("pending_post")
        if isinstance(pending, dict) and pending.get("ref") == ref and pending.get("thread_ts") == thread_ts:
            found = await self._find_posted(pending, ref)
            if found is not None:
                log.info(
                    "slack %s/%s: message of notification %s (group %s) was already posted (ts %s); not "
                    "posting it again",
                    self.receiver,
                    self.integration,
                    ref,
                    n.group_key,
                    found["ts"],
                )
                return found
        if checkpoint is not None:
            await checkpoint(
                {
                    **state,
                    "pending_post": {
                        "ref": ref,
                        "channel": lookup_channel,
                        "thread_ts": thread_ts,
                        "at": self._clock(),
                    },
                }
            )
        resp = await self._call(
            "chat.postMessage",
            lambda c: c.chat_postMessage(channel=channel, thread_ts=thread_ts, unfurl_links=False, **fields),
        )
        return {"channel": resp["channel"], "ts": resp["ts"]}

    async def _find_posted(self, pending: dict[str, Any], ref: str) -> dict[str, str] | None:
        """The message posted by notification ``ref`` per the ``pending_post`` record, or None when it is not
        there (or cannot be looked up: channel not found, lookup refused — logged). Raises a retryable
        :class:`SlackNotifyError` when Slack could not answer (try again later)."""
        thread_ts = pending.get("thread_ts") if isinstance(pending.get("thread_ts"), str) else None
        try:
            oldest = f"{float(pending.get('at') or 0.0) - _LOOKUP_MARGIN:.6f}"
        except (TypeError, ValueError):
            oldest = "0"
        try:
            channel = pending.get("channel")
            if not isinstance(channel, str) or not channel:
                channel = await self._channel_id(self.config.channel or "")
            if channel is None:
                log.warning(
                    "slack %s/%s: a post may have happened without its answer, but channel %s was not "
                    "found by conversations.list; posting again",
                    self.receiver,
                    self.integration,
                    self.config.channel,
                )
                return None
            ts = await self._search_posted(channel, thread_ts, oldest, ref)
        except SlackNotifyError as e:
            if e.retryable:
                raise
            if e.error in _PARENT_GONE:
                return None
            log.warning(
                "slack %s/%s: cannot look up a post whose answer was lost (%s); posting again",
                self.receiver,
                self.integration,
                e,
            )
            return None
        return {"channel": channel, "ts": ts} if ts is not None else None

    async def _search_posted(self, channel: str, thread_ts: str | None, oldest: str, ref: str) -> str | None:
        """``ts`` of the message with metadata ``ref`` of this integration in ``channel`` since ``oldest``: a
        parent (``conversations.history``) or, with ``thread_ts``, a reply in that thread
        (``conversations.replies``); both with ``include_all_metadata``. Raises :class:`SlackNotifyError`."""
        kind = REPLY_EVENT_TYPE if thread_ts else METADATA_EVENT_TYPE

        def page_of(cursor: str | None) -> Callable[[AsyncWebClient], Awaitable[Any]]:
            if thread_ts:
                return lambda c: c.conversations_replies(
                    channel=channel, ts=thread_ts, oldest=oldest, include_all_metadata=True, limit=200, cursor=cursor
                )
            return lambda c: c.conversations_history(
                channel=channel, oldest=oldest, include_all_metadata=True, limit=200, cursor=cursor
            )

        cursor: str | None = None
        for _ in range(_LOOKUP_PAGES):
            page = await self._call("conversations.replies" if thread_ts else "conversations.history", page_of(cursor))
            for m in page.get("messages") or []:
                meta = m.get("metadata") or {}
                payload = meta.get("event_payload") or {}
                if (
                    meta.get("event_type") == kind
                    and payload.get("ref") == ref
                    and payload.get("integration") == self.integration
                    and m.get("ts") != thread_ts
                ):
                    return str(m["ts"])
            cursor = (page.get("response_metadata") or {}).get("next_cursor") or None
            if not page.get("has_more") or not cursor:
                break
        return None

    async def _channel_id(self, name: str) -> str | None:
        """The ID of the channel called ``name`` (``#`` optional): learnt from an earlier post, else found with
        ``conversations.list`` (https://docs.slack.dev/reference/methods/conversations.list; scopes
        ``channels:read``, ``groups:read`` for private channels). None when not found. Raises
        :class:`SlackNotifyError`."""
        if _CHANNEL_ID.match(name):
            return name
        if name in self._channel_ids:
            return self._channel_ids[name]
        wanted = name.lstrip("#")
        cursor: str | None = None

        def page_of(cursor: str | None) -> Callable[[AsyncWebClient], Awaitable[Any]]:
            return lambda c: c.conversations_list(
                types="public_channel,private_channel", exclude_archived=True, limit=200, cursor=cursor
            )

        for _ in range(_LIST_PAGES):
            page = await self._call("conversations.list", page_of(cursor))
            for ch in page.get("channels") or []:
                if ch.get("name") == wanted and ch.get("id"):
                    self._channel_ids[name] = str(ch["id"])
                    return self._channel_ids[name]
            cursor = (page.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor:
                break
        return None

    async def _update_parent(self, channel: str, ts: str, n: Notification) -> bool:
        """``chat.update`` the parent to ``n``'s current look. False when the parent is gone (post a new one)."""
        msg = self._group_message(n)
        try:
            await self._call(
                "chat.update", lambda c: c.chat_update(channel=channel, ts=ts, metadata=self._metadata(n), **msg)
            )
        except SlackNotifyError as e:
            if e.error in _PARENT_GONE:
                log.warning(
                    "slack %s/%s: parent %s of group %s is gone (%s); posting a new one",
                    self.receiver,
                    self.integration,
                    ts,
                    n.group_key,
                    e.error,
                )
                return False
            if e.error in _NOT_EDITABLE:
                log.warning(
                    "slack %s/%s: parent %s cannot be edited (%s); replying in the thread only",
                    self.receiver,
                    self.integration,
                    ts,
                    e.error,
                )
                return True
            raise
        return True

    # ----------------------------------------------------------------------------------------------- Notifier
    async def notify(
        self, notification: Notification, state: dict[str, Any], checkpoint: Checkpoint | None = None
    ) -> dict[str, Any]:
        """Deliver ``notification`` (see the module doc for the calls made and the state shape); ``checkpoint``
        (optional) stores a state durably before each post. Returns the new state; raises
        :class:`SlackNotifyError` (retryable or not)."""
        n = notification
        if self.mode == "webhook":
            await self._webhook_send(self._group_message(n))
            return {}
        channel, ts = state.get("channel"), state.get("ts")
        if not channel or not ts or (state.get("resolved") and n.firing):
            return await self._post_parent(n, state, checkpoint)
        if not await self._update_parent(channel, ts, n):
            return await self._post_parent(n, state, checkpoint)
        if not n.firing:
            if not state.get("resolved"):
                await self._reply_or_repost(n, state, checkpoint, resolved_note(n))
            return {"channel": channel, "ts": ts, "firing": [], "resolved": True}
        prev = state.get("firing")
        new = [a for a in n.firing if a.fingerprint not in set(prev)] if prev is not None else []
        reply = thread_update(n, new=new, resolved=n.resolved, repeat=n.repeat, mention=self._mention)
        if not await self._reply_or_repost(n, state, checkpoint, reply):
            return await self._post_parent(n, state, checkpoint)
        return {"channel": channel, "ts": ts, "firing": sorted(a.fingerprint for a in n.firing), "resolved": False}

    async def _reply_or_repost(
        self, n: Notification, state: dict[str, Any], checkpoint: Checkpoint | None, msg: dict[str, Any]
    ) -> bool:
        """Post ``msg`` in the thread of the group's parent (``state``); False when the thread vanished meanwhile."""
        channel, ts = state["channel"], state["ts"]
        try:
            await self._post_once(
                n, state, checkpoint, channel, ts, channel, {"metadata": self._metadata(n, REPLY_EVENT_TYPE), **msg}
            )
        except SlackNotifyError as e:
            if e.error in _PARENT_GONE:
                return False
            raise
        return True

    # ----------------------------------------------------------------------------------------------- extras
    async def test_send(self) -> dict[str, Any]:
        """Post a test message (``relay notify test``). Bot mode checks the token with ``auth.test`` first and
        returns ``{"channel", "ts", "team"}``; webhook mode returns ``{}``. Raises :class:`SlackNotifyError`."""
        msg = ping_message(self.receiver, self.integration, self._clock())
        if self.mode == "webhook":
            await self._webhook_send(msg)
            return {}
        auth = await self._call("auth.test", lambda c: c.auth_test())
        channel = self.config.channel
        assert channel is not None  # bot mode has a channel (config validation)
        resp = await self._call("chat.postMessage", lambda c: c.chat_postMessage(channel=channel, **msg))
        return {"channel": resp["channel"], "ts": resp["ts"], "team": auth.get("team")}

    async def post_report(
        self,
        blocks: list[dict[str, Any]],
        text: str,
        file: bytes | None = None,
        filename: str = "report.png",
        title: str = "Report",
        *,
        initial_comment: str | None = None,
        state: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Post a report (the weekly usage summary): ``blocks`` with fallback ``text``, then ``file`` (bytes, e.g.
        a PNG chart or a CSV) shared into the same channel with ``initial_comment`` (default ``title``).

        Bot mode: ``chat.postMessage`` then slack-sdk's ``files_upload_v2`` (``files.getUploadURLExternal`` → POST
        to the upload URL → ``files.completeUploadExternal`` with ``channel_id``; needs ``files:write``). Steps
        are recorded in ``state`` (a dict the caller may keep: ``{"channel", "ts"}`` after the message,
        ``"file_id"`` after the upload); calling again with the same dict after an error skips completed steps,
        so a retried upload does not re-post the message. Returns that dict.

        Webhook mode: the blocks only, plus a note that the file was not attached (incoming webhooks cannot
        upload files); returns ``{"sent": True}``. Raises :class:`SlackNotifyError`.
        """
        state = {} if state is None else state
        if self.mode == "webhook":
            body_blocks = list(blocks)
            if file is not None:
                body_blocks.append(
                    {
                        "type": "context",
                        "elements": [
                            {
                                "type": "mrkdwn",
                                "text": (
                                    f":paperclip: `{filename}` is not attached: Slack incoming webhooks cannot upload files "
                                    "(configure a bot token with files:write to get it)."
                                ),
                            }
                        ],
                    }
                )
            await self._webhook_send({"text": text, "blocks": body_blocks, "unfurl_links": False})
            state["sent"] = True
            return state
        if "ts" not in state:
            channel = self.config.channel
            assert channel is not None  # bot mode has a channel (config validation)
            resp = await self._call(
                "chat.postMessage",
                lambda c: c.chat_postMessage(channel=channel, text=text, blocks=blocks, unfurl_links=False),
            )
            state.update(channel=resp["channel"], ts=resp["ts"])
        if file is not None and "file_id" not in state:
            resp = await self._call(
                "files.upload_v2",
                lambda c: c.files_upload_v2(
                    content=file,
                    filename=filename,
                    title=title,
                    channel=state["channel"],
                    initial_comment=initial_comment if initial_comment is not None else title,
                ),
            )
            state["file_id"] = resp["file"]["id"]
        return state
