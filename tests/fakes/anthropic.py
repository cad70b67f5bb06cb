"""A stand-in for Anthropic's Messages API on loopback, for running the real Claude Code CLI
(``ANTHROPIC_BASE_URL=http://127.0.0.1:PORT``, any ``ANTHROPIC_API_KEY``).

It answers ``POST /v1/messages`` as the API does (https://docs.anthropic.com/en/api/messages and, for
``"stream": true``, the server-sent events of https://docs.anthropic.com/en/api/messages-streaming:
``message_start``, ``content_block_start``/``_delta``/``_stop``, ``message_delta``, ``message_stop``), and
``POST /v1/messages/count_tokens``. Every other path is 404. It checks what the real API checks first (an
``x-api-key`` or bearer credential, ``anthropic-version``, a JSON body with ``model`` and ``messages``) and
answers 400/401 like it otherwise.

Scripts: the reply to a request is chosen by :attr:`AnthropicFake.script`, a callable from the request body
to a list of content blocks (``{"type": "text", "text": …}`` or ``{"type": "tool_use", "id", "name",
"input"}``); the default answers one text block. ``usage`` is the token usage reported with every answer
(Claude Code computes its ``cost_usd`` from it). :attr:`requests` keeps every accepted ``/v1/messages`` body.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import web

from tests.fakes.loopback import LoopbackServer

__all__ = ["AnthropicFake", "text_reply"]

Script = Callable[[dict[str, Any]], list[dict[str, Any]]]


def text_reply(text: str = "Hello from the stand-in.") -> Script:
    """A script answering every request with one text block."""
    return lambda body: [{"type": "text", "text": text}]


class AnthropicFake(LoopbackServer):
    """The Messages API stand-in (see the module docstring)."""

    def __init__(self, script: Script | None = None, *, usage: dict[str, int] | None = None):
        self.script: Script = script or text_reply()
        self.usage = usage or {
            "input_tokens": 1000,
            "output_tokens": 50,
            "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": 0,
        }
        self._lock = threading.Lock()
        self._requests: list[dict[str, Any]] = []

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Bodies of the ``/v1/messages`` requests answered so far (thread-safe copy)."""
        with self._lock:
            return list(self._requests)

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/v1/messages/count_tokens", self._count_tokens)
        return app

    async def _parse(self, request: web.Request) -> dict[str, Any] | web.Response:
        key = request.headers.get("x-api-key") or request.headers.get("Authorization", "").removeprefix("Bearer ")
        if not key:
            return _error(401, "authentication_error", "x-api-key header is required")
        if not request.headers.get("anthropic-version"):
            return _error(400, "invalid_request_error", "anthropic-version header is required")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "invalid_request_error", "body is not JSON")
        if not isinstance(body, dict) or "messages" not in body or "model" not in body:
            return _error(400, "invalid_request_error", "model and messages are required")
        return body

    async def _count_tokens(self, request: web.Request) -> web.Response:
        body = await self._parse(request)
        if isinstance(body, web.Response):
            return body
        return web.json_response({"input_tokens": self.usage["input_tokens"]})

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = await self._parse(request)
        if isinstance(body, web.Response):
            return body
        with self._lock:
            self._requests.append(body)
        blocks = self.script(body)
        stop = "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"
        msg_id = f"msg_{uuid.uuid4().hex[:24]}"
        model = body["model"]
        if not body.get("stream"):
            return web.json_response(
                {
                    "id": msg_id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": blocks,
                    "stop_reason": stop,
                    "stop_sequence": None,
                    "usage": self.usage,
                },
                headers={"request-id": f"req_{msg_id[4:]}"},
            )
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "request-id": f"req_{msg_id[4:]}",
            }
        )
        await resp.prepare(request)

        async def send(event: str, data: dict[str, Any]) -> None:
            await resp.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())

        start_usage = dict(self.usage, output_tokens=1)
        await send(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": msg_id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": start_usage,
                },
            },
        )
        for i, block in enumerate(blocks):
            if block["type"] == "text":
                await send(
                    "content_block_start",
                    {"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}},
                )
                await send(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": block["text"]}},
                )
            else:
                await send(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": i,
                        "content_block": {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}},
                    },
                )
                await send(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": i,
                        "delta": {"type": "input_json_delta", "partial_json": json.dumps(block["input"])},
                    },
                )
            await send("content_block_stop", {"type": "content_block_stop", "index": i})
        await send(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": self.usage["output_tokens"]},
            },
        )
        await send("message_stop", {"type": "message_stop"})
        await resp.write_eof()
        return resp


def _error(status: int, kind: str, message: str) -> web.Response:
    return web.json_response({"type": "error", "error": {"type": kind, "message": message}}, status=status)
