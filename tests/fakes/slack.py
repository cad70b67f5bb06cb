"""A loopback fake of Slack's Web API, file upload URLs and incoming webhooks for the test suite
(https://docs.slack.dev/reference/methods/chat.postMessage, https://docs.slack.dev/reference/block-kit/blocks).

Web API (``POST {base_url}/api/<method>``, https://docs.slack.dev/reference/methods): ``auth.test``,
``conversations.info``, ``chat.postMessage``, ``chat.update``, ``conversations.list``, ``conversations.history``,
``conversations.replies``, ``files.getUploadURLExternal``, ``files.completeUploadExternal``; arguments
from the query string, a JSON body or a form body (JSON-valued fields as strings), as slack-sdk sends them. Slack's
conventions are kept: errors are HTTP 200 ``{"ok": false, "error": "<code>"}`` (``not_authed`` without a token,
``invalid_auth`` for an unknown one, ``channel_not_found``, ``not_in_channel``, ``invalid_blocks`` with
``response_metadata.messages``, ``no_text``, ``msg_too_long``, ``thread_not_found``, ``message_not_found``…);
rate limits are HTTP 429 with ``Retry-After`` (seconds) and ``{"ok": false, "error": "ratelimited"}``
(https://docs.slack.dev/apis/web-api/rate-limits). Blocks are validated with slack-sdk's models
(:mod:`tests.fakes.slack_payload`).

Upload URLs (``POST {base_url}/upload/v1/<id>``, no auth, raw bytes or multipart) answer ``text/plain``
``OK - <size>`` like ``files.slack.com``. Incoming webhooks (``POST {base_url}/services/T…/B…/<secret>``) answer
plain ``ok`` or a 4xx plain-text code (``invalid_payload``, ``no_text``, ``invalid_blocks``, ``no_service``).

Messages are stored per channel with their threads (:class:`SlackMessage`), so tests can assert "the parent now
says RESOLVED and its thread has 2 replies". Faults: :meth:`FakeSlack.rate_limit`, :meth:`FakeSlack.fail`,
:meth:`FakeSlack.error`, :meth:`FakeSlack.reset_connection` (optionally *after* applying the call — the answer is
lost), :meth:`FakeSlack.hold` (the call applied, the answer held back), :meth:`FakeSlack.slow`,
:meth:`FakeSlack.outage` (connection refused, or every request answered with a status) and an optional per-channel
message rate limit. Times are unix seconds from an injectable ``clock``.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from tests.fakes.loopback import LoopbackServer, ThreadedServer, hold_answer
from tests.fakes.slack_payload import PayloadError, check_message
from tests.fakes.slack_workspace import SlackFault, SlackFile, SlackMessage, SlackRequest, SlackWorkspace

__all__ = ["FakeSlack", "ThreadedFakeSlack", "SlackMessage", "SlackFile", "SlackRequest", "SlackFault"]


class FakeSlack(LoopbackServer, SlackWorkspace):
    """Loopback fake Slack (aiohttp, 127.0.0.1, port 0).

    ``bot_tokens``: accepted bearer tokens. ``channels``: channel ID → name; ``not_member``: IDs the bot is not in
    (``not_in_channel``). ``channel_rate``: optional ``(messages, per_seconds)`` per-channel limit on posts (429).
    ``clock``: unix seconds for ``ts`` values and the channel rate limit. Use ``async with FakeSlack() as slack``
    or ``start()``/``stop()``, or :meth:`run_in_thread`. Recording and fault methods are thread-safe.
    """

    def __init__(
        self,
        bot_tokens: tuple[str, ...] | list[str] = ("xoxb-test-token",),
        *,
        channels: dict[str, str] | None = None,
        not_member: set[str] | None = None,
        channel_rate: tuple[int, float] | None = None,
        clock: Callable[[], float] = time.time,
        team_id: str = "T0FAKE",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(bot_tokens, channels, not_member, channel_rate, clock, team_id)
        self.host, self.port = host, port
        self._webhooks: dict[str, str] = {}  # path → channel id
        self._requests: list[SlackRequest] = []
        self._faults: list[SlackFault] = []
        self._outage_status: int | None = None

    # ------------------------------------------------------------------------------------------------ lifecycle
    @property
    def api_url(self) -> str:
        """The Web API base for slack-sdk's ``base_url`` (``…/api/``)."""
        return self.base_url + "/api/"

    def make_app(self) -> web.Application:
        """Web API methods, file upload URLs and incoming webhooks."""
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_route("POST", "/upload/v1/{upload_id}", self._upload)
        app.router.add_route("POST", "/services/{team}/{bot}/{secret}", self._webhook)
        return app

    async def outage(self, status: int | None = None) -> None:
        """Start an outage: stop listening (connections refused) or, with ``status`` (e.g. 503), answer every request
        with that status and an HTML error page, as Slack's edge does. Ends with :meth:`restore`."""
        if status is None:
            await self.stop()
        else:
            self._outage_status = status

    async def restore(self) -> None:
        """End an :meth:`outage` (listen again on the same port)."""
        self._outage_status = None
        await super().restore()

    @classmethod
    def run_in_thread(cls, *args: Any, **kwargs: Any) -> ThreadedFakeSlack:
        """Start a fake on its own event loop in a daemon thread (for subprocess tests)."""
        return ThreadedFakeSlack(cls(*args, **kwargs))

    # ------------------------------------------------------------------------------------------------ data
    def webhook_url(self, channel: str = "C0ALERTS") -> str:
        """Create an incoming webhook posting to ``channel`` and return its (secret) URL."""
        path = f"/services/{self.team_id}/B{secrets.token_hex(4).upper()}/{secrets.token_urlsafe(18)}"
        with self._lock:
            self._webhooks[path] = self._channel_id(channel) or channel
        return self.base_url + path

    @property
    def requests(self) -> list[SlackRequest]:
        """Every request, in arrival order (incl. rejected and faulted ones)."""
        with self._lock:
            return list(self._requests)

    def calls(self, method: str) -> list[SlackRequest]:
        """Requests for ``method`` (``chat.postMessage``, ``upload``, ``webhook``…), any outcome."""
        return [r for r in self.requests if r.method == method]

    def clear(self) -> None:
        """Forget requests, messages and files (faults, webhooks and channels stay)."""
        with self._lock:
            self._requests.clear(), self._messages.clear(), self._by_ts.clear(), self._files.clear()
            self._uploads.clear(), self._posts.clear()

    # ------------------------------------------------------------------------------------------------ faults
    def add_fault(self, fault: SlackFault) -> SlackFault:
        """Install ``fault`` (matched in creation order) and return it."""
        with self._lock:
            self._faults.append(fault)
        return fault

    def rate_limit(self, retry_after: int = 1, times: int | None = 1, method: str | None = None) -> SlackFault:
        """HTTP 429, ``Retry-After: <retry_after>``, ``{"ok": false, "error": "ratelimited"}`` (webhooks: plain
        ``rate_limited``)."""
        return self.add_fault(
            SlackFault(
                "status", method, 429, error="ratelimited", headers={"Retry-After": str(retry_after)}, times=times
            )
        )

    def fail(
        self,
        status: int = 503,
        times: int | None = 1,
        method: str | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> SlackFault:
        """Answer with HTTP ``status`` (default body: an HTML error page)."""
        return self.add_fault(SlackFault("status", method, status, body=body, headers=dict(headers or {}), times=times))

    def error(self, code: str, times: int | None = 1, method: str | None = None) -> SlackFault:
        """Answer HTTP 200 ``{"ok": false, "error": code}`` (e.g. ``internal_error``, ``fatal_error``)."""
        return self.add_fault(SlackFault("error", method, 200, error=code, times=times))

    def reset_connection(self, times: int | None = 1, method: str | None = None, *, after: bool = False) -> SlackFault:
        """Close the connection without an answer; with ``after`` the call is applied first (the answer is lost)."""
        return self.add_fault(SlackFault("reset", method, after=after, times=times))

    def hold(self, delay: float, times: int | None = 1, method: str | None = None) -> SlackFault:
        """Apply the call at once, then wait ``delay`` seconds before answering (a client that dies meanwhile never
        learns the outcome). Web API methods only."""
        return self.add_fault(SlackFault("hold", method, delay=delay, times=times))

    def slow(self, delay: float, times: int | None = 1, method: str | None = None) -> SlackFault:
        """Wait ``delay`` seconds before handling the request."""
        return self.add_fault(SlackFault("delay", method, delay=delay, times=times))

    def clear_faults(self) -> None:
        """Remove every fault."""
        with self._lock:
            self._faults.clear()

    def _take_fault(self, method: str) -> SlackFault | None:
        with self._lock:
            self._faults = [f for f in self._faults if f.times != 0]
            for f in self._faults:
                if f.method in (None, method):
                    f.hits += 1
                    if f.times is not None:
                        f.times -= 1
                    return f
        return None

    # ------------------------------------------------------------------------------------------------ helpers
    def _record(self, rec: SlackRequest, status: int | None, response: Any) -> None:
        rec.status, rec.response = status, response
        with self._lock:
            rec.index = len(self._requests)
            self._requests.append(rec)

    def _json(
        self, rec: SlackRequest, body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
    ) -> web.Response:
        self._record(rec, status, body)
        return web.json_response(body, status=status, headers=headers)

    def _text(
        self,
        rec: SlackRequest,
        text: str,
        status: int = 200,
        headers: dict[str, str] | None = None,
        content_type: str = "text/plain",
    ) -> web.Response:
        self._record(rec, status, text)
        return web.Response(status=status, text=text, content_type=content_type, headers=headers)

    def _abort(self, request: web.Request, rec: SlackRequest) -> web.StreamResponse:
        self._record(rec, None, None)
        if request.transport is not None:
            request.transport.abort()
        raise asyncio.CancelledError  # aiohttp drops the handler quietly; nothing is written

    async def _pre(
        self, request: web.Request, rec: SlackRequest, plain: bool
    ) -> tuple[SlackFault | None, web.Response | None]:
        """Outage and fault pre-phase; returns (fault to apply after the call, early response)."""
        if self._outage_status is not None:
            rec.fault = f"outage {self._outage_status}"
            return None, self._text(
                rec,
                f"<html><body><h1>{self._outage_status} Service Unavailable</h1></body></html>",
                self._outage_status,
                content_type="text/html",
            )
        fault = self._take_fault(rec.method)
        if fault is None:
            return None, None
        rec.fault = fault.kind if fault.kind != "status" else str(fault.status)
        if fault.kind == "delay":
            await asyncio.sleep(fault.delay)
            return None, None
        if fault.kind == "reset":
            return (fault, None) if fault.after else (None, self._abort(request, rec))
        if fault.kind == "hold":
            return fault, None
        if fault.kind == "error":
            return None, self._json(rec, {"ok": False, "error": fault.error})
        if fault.body is not None:
            if isinstance(fault.body, str):
                return None, self._text(rec, fault.body, fault.status, fault.headers)
            return None, self._json(rec, fault.body, fault.status, fault.headers)
        if fault.error == "ratelimited":
            if plain:
                return None, self._text(rec, "rate_limited", 429, fault.headers)
            return None, self._json(rec, {"ok": False, "error": "ratelimited"}, 429, fault.headers)
        return None, self._text(
            rec,
            f"<html><body><h1>{fault.status}</h1></body></html>",
            fault.status,
            fault.headers,
            content_type="text/html",
        )

    # ------------------------------------------------------------------------------------------------ routes
    async def _api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        args: dict[str, Any] = dict(request.query)
        rec = SlackRequest(-1, method, request.path, {k.lower(): v for k, v in request.headers.items()}, args)
        after, early = await self._pre(request, rec, plain=False)
        if early is not None:
            return early
        if request.method == "POST" and request.can_read_body:
            if request.content_type == "application/json":
                try:
                    body = json.loads(await request.read())
                except ValueError:
                    return self._json(rec, {"ok": False, "error": "invalid_json"})
                if not isinstance(body, dict):
                    return self._json(rec, {"ok": False, "error": "invalid_json"})
                args.update(body)
            elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
                args.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
        auth = request.headers.get("Authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else args.get("token")
        args.pop("token", None)
        rec.token = token
        if not token:
            return self._json(rec, {"ok": False, "error": "not_authed"})
        if token not in self.bot_tokens:
            return self._json(rec, {"ok": False, "error": "invalid_auth"})
        handler = {
            "auth.test": self._auth_test,
            "conversations.info": self._conversations_info,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "files.getUploadURLExternal": self._get_upload_url,
            "conversations.history": self._history,
            "conversations.replies": self._replies,
            "conversations.list": self._list,
            "files.completeUploadExternal": self._complete_upload,
        }.get(method)
        if handler is None:
            return self._json(rec, {"ok": False, "error": "unknown_method"}, 404)
        try:
            status, body, headers = handler(args)
        except PayloadError as e:
            body = {"ok": False, "error": e.error}
            if e.messages:
                body["errors"] = e.messages
                body["response_metadata"] = {"messages": e.messages}
            return self._json(rec, body)
        rec.applied = bool(body.get("ok"))
        if after is not None and after.kind == "hold":
            await hold_answer(request, after.delay)
        elif after is not None:
            return self._abort(request, rec)
        return self._json(rec, body, status, headers)

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        upload_id = request.match_info["upload_id"]
        rec = SlackRequest(
            -1, "upload", request.path, {k.lower(): v for k, v in request.headers.items()}, {"upload_id": upload_id}
        )
        after, early = await self._pre(request, rec, plain=True)
        if early is not None:
            return early
        with self._lock:
            file_id = self._uploads.get(upload_id)
        if file_id is None:
            return self._text(rec, "not_found", 404)
        if request.content_type == "multipart/form-data":
            form = await request.post()
            part = next((v for v in form.values() if not isinstance(v, str)), None)
            data = part.file.read() if part is not None else b""
        else:
            data = await request.read()
        with self._lock:
            self._files[file_id].data = data
        rec.applied = True
        if after is not None:
            return self._abort(request, rec)
        return self._text(rec, f"OK - {len(data)}")

    async def _webhook(self, request: web.Request) -> web.StreamResponse:
        rec = SlackRequest(-1, "webhook", "/services/…", {k.lower(): v for k, v in request.headers.items()}, {})
        after, early = await self._pre(request, rec, plain=True)
        if early is not None:
            return early
        with self._lock:
            cid = self._webhooks.get(request.path)
        if cid is None:
            return self._text(rec, "no_service", 404)
        raw = await request.read()
        try:
            if request.content_type == "application/x-www-form-urlencoded":
                payload = json.loads((await request.post()).get("payload", ""))
            else:
                payload = json.loads(raw)
            if not isinstance(payload, dict):
                raise ValueError
        except ValueError:
            return self._text(rec, "invalid_payload", 400)
        rec.args = payload
        try:
            fields = check_message(payload)
        except PayloadError as e:
            return self._text(rec, e.error if e.error in ("no_text", "invalid_blocks") else "invalid_payload", 400)
        if self._rate_limited(cid):
            return self._text(rec, "rate_limited", 429, {"Retry-After": "1"})
        self._store(cid, fields, via="webhook")
        rec.applied = True
        if after is not None:
            return self._abort(request, rec)
        return self._text(rec, "ok")


class ThreadedFakeSlack(ThreadedServer):
    """A :class:`FakeSlack` serving from its own event loop in a daemon thread (see ``ThreadedServer``);
    ``outage(status=None)`` blocks."""

    def __init__(self, fake: FakeSlack) -> None:
        super().__init__(fake, "fake-slack")
