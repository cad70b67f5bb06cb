"""State and Web API method semantics of the fake Slack workspace (:mod:`tests.fakes.slack` serves them over
HTTP): channels, messages with threads, file uploads, and the records a test inspects.

Method semantics follow https://docs.slack.dev/reference/methods/chat.postMessage , ``chat.update``,
``conversations.list``, ``conversations.history`` and ``conversations.replies`` (cursor paging,
``oldest``/``latest``, message ``metadata`` only with ``include_all_metadata``), ``files.getUploadURLExternal``
and ``files.completeUploadExternal``: errors are ``ok: false`` codes (``channel_not_found``, ``not_in_channel``,
``thread_not_found``, ``message_not_found``, ``file_not_found``…), message payloads are checked by
:mod:`tests.fakes.slack_payload`. Times are unix seconds from ``clock``.
"""

from __future__ import annotations

import base64
import itertools
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.slack_payload import check_message, decode_json_arg

__all__ = ["SlackWorkspace", "SlackMessage", "SlackFile", "SlackRequest", "SlackFault", "BOT_USER", "BOT_ID"]

Result = tuple[int, dict[str, Any], "dict[str, str] | None"]

BOT_USER, BOT_ID = "U0RELAYBOT", "B0RELAYBOT"


@dataclass
class SlackMessage:
    """A stored message. ``thread_ts`` is set on replies; ``replies`` holds a parent's thread in order;
    ``history`` the earlier versions (dicts of ``text``/``blocks``/``attachments``) replaced by ``chat.update``;
    ``via`` is ``api``, ``webhook`` or ``file_share``."""

    channel: str
    ts: str
    text: str | None
    blocks: list[dict[str, Any]] | None = None
    attachments: list[dict[str, Any]] | None = None
    metadata: dict[str, Any] | None = None
    thread_ts: str | None = None
    via: str = "api"
    files: list[str] = field(default_factory=list)
    replies: list[SlackMessage] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def edits(self) -> int:
        """How many times ``chat.update`` changed this message."""
        return len(self.history)

    def all_blocks(self) -> list[dict[str, Any]]:
        """Top-level blocks followed by every attachment's blocks."""
        out = list(self.blocks or [])
        for att in self.attachments or []:
            out += att.get("blocks") or []
        return out

    @property
    def header(self) -> str | None:
        """Text of the first header block (top level or in an attachment), None without one."""
        return next((b["text"]["text"] for b in self.all_blocks() if b.get("type") == "header"), None)

    @property
    def color(self) -> str | None:
        """``color`` of the first attachment."""
        return next((a.get("color") for a in self.attachments or [] if a.get("color")), None)

    def content(self) -> str:
        """``text`` plus every text string inside the blocks, newline-joined (for substring assertions)."""
        parts = [self.text or ""]

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                if isinstance(node.get("text"), str):
                    parts.append(node["text"])
                for v in node.values():
                    if isinstance(v, (dict, list)):
                        walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)

        walk(self.all_blocks())
        return "\n".join(parts)


@dataclass
class SlackFile:
    """An upload: ``data`` holds the bytes POSTed to its upload URL; ``shared`` the channels it was shared to."""

    id: str
    filename: str
    length: int
    data: bytes | None = None
    title: str | None = None
    completed: bool = False
    shared: list[str] = field(default_factory=list)
    initial_comment: str | None = None


@dataclass
class SlackRequest:
    """One request that reached the fake. ``method`` is the API method (``chat.postMessage``…), ``upload`` or
    ``webhook``; ``args`` the decoded arguments (without ``token``); ``status``/``response`` what was answered
    (None when the connection was reset); ``applied`` whether the call took effect."""

    index: int
    method: str
    path: str
    headers: dict[str, str]
    args: dict[str, Any]
    token: str | None = None
    status: int | None = None
    response: Any = None
    applied: bool = False
    fault: str | None = None


@dataclass
class SlackFault:
    """A programmed misbehaviour for requests to ``method`` (None: any). ``kind``: ``status`` (answer ``status`` with
    ``body``/``headers``), ``error`` (HTTP 200 ``ok: false`` with ``error``), ``reset`` (close the connection; with
    ``after`` the call is applied first), ``delay`` (sleep ``delay`` s before handling), ``hold`` (apply the call,
    then sleep ``delay`` s before answering). ``times`` left (None:
    unlimited); ``hits`` counts uses."""

    kind: str
    method: str | None = None
    status: int = 500
    error: str | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    after: bool = False
    times: int | None = 1
    hits: int = 0


class SlackWorkspace:
    """One fake workspace: ``bot_tokens`` accepted, ``channels`` (ID → name), ``not_member`` (IDs the bot is not in),
    optional per-channel post limit ``channel_rate = (messages, per_seconds)``, ``clock`` (unix seconds) and
    ``team_id``. Accessors are thread-safe. Subclasses provide ``base_url`` (for upload URLs)."""

    base_url: str

    def __init__(
        self,
        bot_tokens: tuple[str, ...] | list[str],
        channels: dict[str, str] | None,
        not_member: set[str] | None,
        channel_rate: tuple[int, float] | None,
        clock: Callable[[], float],
        team_id: str,
    ) -> None:
        self.bot_tokens = set(bot_tokens)
        self.channels = dict(channels or {"C0ALERTS": "alerts", "C0REPORTS": "reports"})
        self.not_member = set(not_member or ())
        self.channel_rate, self.clock, self.team_id = channel_rate, clock, team_id
        self._lock = threading.RLock()
        self._messages: dict[str, list[SlackMessage]] = {}
        self._by_ts: dict[tuple[str, str], SlackMessage] = {}
        self._files: dict[str, SlackFile] = {}
        self._uploads: dict[str, str] = {}  # upload id → file id
        self._posts: dict[str, list[float]] = {}
        self._seq = itertools.count(1)

    # ------------------------------------------------------------------------------------------------ data
    def messages(self, channel: str = "C0ALERTS") -> list[SlackMessage]:
        """Top-level messages of ``channel`` (ID or name), oldest first."""
        with self._lock:
            return list(self._messages.get(self._channel_id(channel) or channel, []))

    def message(self, channel: str, ts: str) -> SlackMessage | None:
        """The message (top-level or reply) with ``ts`` in ``channel``."""
        with self._lock:
            return self._by_ts.get((self._channel_id(channel) or channel, ts))

    def thread(self, channel: str, ts: str) -> list[SlackMessage]:
        """Replies in the thread of ``ts`` (empty if none or unknown)."""
        msg = self.message(channel, ts)
        with self._lock:
            return list(msg.replies) if msg else []

    def files(self) -> dict[str, SlackFile]:
        """Uploads by file ID."""
        with self._lock:
            return dict(self._files)

    def delete_message(self, channel: str, ts: str) -> None:
        """Delete a message as a user would (a parent takes its thread with it)."""
        cid = self._channel_id(channel) or channel
        with self._lock:
            msg = self._by_ts.pop((cid, ts), None)
            if msg is None:
                return
            if msg.thread_ts is None:
                self._messages[cid].remove(msg)
                for r in msg.replies:
                    self._by_ts.pop((cid, r.ts), None)
            else:
                parent = self._by_ts.get((cid, msg.thread_ts))
                if parent:
                    parent.replies.remove(msg)

    # ------------------------------------------------------------------------------------------------ helpers
    def _channel_id(self, channel: Any) -> str | None:
        if not isinstance(channel, str) or not channel:
            return None
        if channel in self.channels:
            return channel
        name = channel.lstrip("#")
        return next((cid for cid, n in self.channels.items() if n == name), None)

    def _next_ts(self) -> str:
        return f"{int(self.clock())}.{next(self._seq):06d}"

    def _rate_limited(self, cid: str) -> bool:
        if self.channel_rate is None:
            return False
        limit, per = self.channel_rate
        now = self.clock()
        with self._lock:
            recent = [t for t in self._posts.get(cid, []) if now - t < per]
            if len(recent) >= limit:
                self._posts[cid] = recent
                return True
            self._posts[cid] = recent + [now]
        return False

    def _store(
        self,
        cid: str,
        fields: dict[str, Any],
        thread_ts: str | None = None,
        via: str = "api",
        files: list[str] | None = None,
    ) -> SlackMessage:
        with self._lock:
            msg = SlackMessage(
                cid,
                self._next_ts(),
                fields.get("text"),
                fields.get("blocks"),
                fields.get("attachments"),
                fields.get("metadata"),
                thread_ts,
                via,
                files or [],
            )
            self._by_ts[(cid, msg.ts)] = msg
            if thread_ts is None:
                self._messages.setdefault(cid, []).append(msg)
            else:
                self._by_ts[(cid, thread_ts)].replies.append(msg)
        return msg

    @staticmethod
    def _wire(msg: SlackMessage, metadata: bool = False) -> dict[str, Any]:
        """A message as the Web API shows it; ``metadata`` only when asked (``include_all_metadata``)."""
        out = {"type": "message", "user": BOT_USER, "bot_id": BOT_ID, "ts": msg.ts, "text": msg.text or ""}
        for k in ("blocks", "attachments", "thread_ts"):
            if getattr(msg, k):
                out[k] = getattr(msg, k)
        if msg.replies:
            out["thread_ts"], out["reply_count"] = msg.ts, len(msg.replies)
        if metadata and msg.metadata is not None:
            out["metadata"] = msg.metadata
        return out

    def _page(
        self, args: dict[str, Any], messages: list[SlackMessage], default_limit: int, key: str = "messages"
    ) -> Result:
        """One page of ``messages`` (already ordered) filtered by ``oldest``/``latest``/``inclusive``, with
        ``limit`` and an opaque ``cursor`` (``response_metadata.next_cursor``)."""
        try:
            oldest = float(args.get("oldest") or 0)
            latest = float(args["latest"]) if args.get("latest") else float("inf")
            limit = int(args.get("limit") or default_limit)
            start = int(base64.b64decode(args["cursor"]).decode()) if args.get("cursor") else 0
        except (ValueError, TypeError):
            return 200, {"ok": False, "error": "invalid_arguments"}, None
        if not 1 <= limit <= 999:
            limit = default_limit
        inclusive = _truthy(args.get("inclusive"))
        with_meta = _truthy(args.get("include_all_metadata"))
        picked = [
            m
            for m in messages
            if (oldest <= float(m.ts) if inclusive else oldest < float(m.ts))
            and (float(m.ts) <= latest if inclusive else float(m.ts) < latest)
        ]
        page = picked[start : start + limit]
        more = start + limit < len(picked)
        cursor = base64.b64encode(str(start + limit).encode()).decode() if more else ""
        return (
            200,
            {
                "ok": True,
                key: [self._wire(m, with_meta) for m in page],
                "has_more": more,
                "pin_count": 0,
                "response_metadata": {"next_cursor": cursor},
            },
            None,
        )

    # ------------------------------------------------------------------------------------------------ methods
    def _auth_test(self, args: dict[str, Any]) -> Result:
        return (
            200,
            {
                "ok": True,
                "url": "https://fake-workspace.slack.com/",
                "team": "Fake Workspace",
                "user": "relay",
                "team_id": self.team_id,
                "user_id": BOT_USER,
                "bot_id": BOT_ID,
                "is_enterprise_install": False,
            },
            None,
        )

    def _conversations_info(self, args: dict[str, Any]) -> Result:
        """``conversations.info``: a channel by ID (names are not accepted: ``channel_not_found``), with
        ``is_member`` for the bot (https://docs.slack.dev/reference/methods/conversations.info)."""
        cid = args.get("channel")
        if cid not in self.channels:
            return 200, {"ok": False, "error": "channel_not_found"}, None
        return (
            200,
            {
                "ok": True,
                "channel": {
                    "id": cid,
                    "name": self.channels[cid],
                    "is_channel": True,
                    "is_member": cid not in self.not_member,
                },
            },
            None,
        )

    def _post_message(self, args: dict[str, Any]) -> Result:
        cid = self._channel_id(args.get("channel"))
        if cid is None:
            return 200, {"ok": False, "error": "channel_not_found"}, None
        if cid in self.not_member:
            return 200, {"ok": False, "error": "not_in_channel"}, None
        fields = check_message(args)
        thread_ts = args.get("thread_ts") or None
        if thread_ts is not None:
            parent = self.message(cid, str(thread_ts))
            if parent is None:
                return 200, {"ok": False, "error": "thread_not_found"}, None
            thread_ts = parent.thread_ts or parent.ts  # replying to a reply lands in the same thread
        if self._rate_limited(cid):
            return 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "1"}
        msg = self._store(cid, fields, thread_ts)
        return 200, {"ok": True, "channel": cid, "ts": msg.ts, "message": self._wire(msg)}, None

    def _update(self, args: dict[str, Any]) -> Result:
        cid = args.get("channel")
        if cid not in self.channels:  # chat.update takes channel IDs only
            return 200, {"ok": False, "error": "channel_not_found"}, None
        if not args.get("ts"):
            return 200, {"ok": False, "error": "message_not_found"}, None
        fields = check_message(args)
        with self._lock:
            msg = self._by_ts.get((cid, str(args["ts"])))
            if msg is None:
                return 200, {"ok": False, "error": "message_not_found"}, None
            msg.history.append({"text": msg.text, "blocks": msg.blocks, "attachments": msg.attachments})
            msg.text, msg.blocks, msg.attachments = fields["text"], fields["blocks"], fields["attachments"]
            if fields["metadata"] is not None:
                msg.metadata = fields["metadata"]
            wire = self._wire(msg)
        return 200, {"ok": True, "channel": cid, "ts": msg.ts, "text": msg.text or "", "message": wire}, None

    def _list(self, args: dict[str, Any]) -> Result:
        """``conversations.list`` (https://docs.slack.dev/reference/methods/conversations.list): the workspace's
        channels (``types``/``exclude_archived`` accepted; every fake channel is a public, unarchived one), with
        ``limit`` and ``cursor`` paging."""
        try:
            limit = int(args.get("limit") or 100)
            start = int(base64.b64decode(args["cursor"]).decode()) if args.get("cursor") else 0
        except (ValueError, TypeError):
            return 200, {"ok": False, "error": "invalid_cursor"}, None
        limit = limit if 1 <= limit <= 1000 else 100
        items = sorted(self.channels.items())
        page = items[start : start + limit]
        more = start + limit < len(items)
        return (
            200,
            {
                "ok": True,
                "channels": [
                    {
                        "id": cid,
                        "name": name,
                        "is_channel": True,
                        "is_private": False,
                        "is_archived": False,
                        "is_member": cid not in self.not_member,
                    }
                    for cid, name in page
                ],
                "response_metadata": {
                    "next_cursor": base64.b64encode(str(start + limit).encode()).decode() if more else ""
                },
            },
            None,
        )

    def _history(self, args: dict[str, Any]) -> Result:
        """``conversations.history`` (https://docs.slack.dev/reference/methods/conversations.history): the
        channel's top-level messages, newest first; ``channel`` must be an ID; metadata only with
        ``include_all_metadata``."""
        cid = args.get("channel")
        if cid not in self.channels:
            return 200, {"ok": False, "error": "channel_not_found"}, None
        if cid in self.not_member:
            return 200, {"ok": False, "error": "not_in_channel"}, None
        with self._lock:
            messages = list(reversed(self._messages.get(cid, [])))
        return self._page(args, messages, 100)

    def _replies(self, args: dict[str, Any]) -> Result:
        """``conversations.replies`` (https://docs.slack.dev/reference/methods/conversations.replies): the thread of
        ``ts`` — its parent first, then the replies oldest first; ``thread_not_found`` for an unknown ``ts``."""
        cid = args.get("channel")
        if cid not in self.channels:
            return 200, {"ok": False, "error": "channel_not_found"}, None
        if cid in self.not_member:
            return 200, {"ok": False, "error": "not_in_channel"}, None
        with self._lock:
            msg = self._by_ts.get((cid, str(args.get("ts") or "")))
            if msg is not None and msg.thread_ts is not None:
                msg = self._by_ts.get((cid, msg.thread_ts))
            if msg is None:
                return 200, {"ok": False, "error": "thread_not_found"}, None
            messages = [msg, *msg.replies]
        return self._page(args, messages, 1000)

    def _get_upload_url(self, args: dict[str, Any]) -> Result:
        try:
            length = int(args.get("length", ""))
        except ValueError:
            return 200, {"ok": False, "error": "invalid_arguments"}, None
        if not args.get("filename") or length < 0:
            return 200, {"ok": False, "error": "invalid_arguments"}, None
        file_id, upload_id = f"F{secrets.token_hex(5).upper()}", secrets.token_urlsafe(12)
        with self._lock:
            self._files[file_id] = SlackFile(file_id, str(args["filename"]), length)
            self._uploads[upload_id] = file_id
        return 200, {"ok": True, "upload_url": f"{self.base_url}/upload/v1/{upload_id}", "file_id": file_id}, None

    def _complete_upload(self, args: dict[str, Any]) -> Result:
        try:
            files = decode_json_arg(args.get("files"))
        except ValueError:
            files = None
        if not isinstance(files, list) or not files:
            return 200, {"ok": False, "error": "invalid_arguments"}, None
        cid = None
        if args.get("channel_id"):
            cid = self._channel_id(args["channel_id"])
            if cid is None:
                return 200, {"ok": False, "error": "channel_not_found"}, None
            if cid in self.not_member:
                return 200, {"ok": False, "error": "not_in_channel"}, None
        with self._lock:
            found = [self._files.get(str(f.get("id"))) if isinstance(f, dict) else None for f in files]
            if any(f is None or f.data is None for f in found):
                return 200, {"ok": False, "error": "file_not_found"}, None
            out = []
            for spec, f in zip(files, found, strict=False):
                f.completed, f.title = True, spec.get("title") or f.filename
                if cid:
                    f.shared.append(cid)
                    f.initial_comment = args.get("initial_comment")
                out.append({"id": f.id, "name": f.filename, "title": f.title, "size": len(f.data or b"")})
        if cid:
            thread_ts = args.get("thread_ts") or None
            if thread_ts and self.message(cid, thread_ts) is None:
                return 200, {"ok": False, "error": "thread_not_found"}, None
            self._store(
                cid,
                {"text": args.get("initial_comment") or ""},
                thread_ts,
                via="file_share",
                files=[f["id"] for f in out],
            )
        return 200, {"ok": True, "files": out}, None


def _truthy(value: Any) -> bool:
    """A Web API boolean argument (``true``/``1`` as slack-sdk sends them, or a JSON bool)."""
    return value is True or str(value).lower() in ("1", "true")
