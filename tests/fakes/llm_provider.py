"""An OpenAI / Anthropic stand-in on loopback (aiohttp) that answers every call with cached-token usage.

Routes (the request shapes the real SDKs send):

- ``POST /v1/chat/completions`` — OpenAI Chat Completions (https://platform.openai.com/docs/api-reference/chat):
  JSON answer, or server-sent events ending in a usage chunk when ``stream`` is set (the SDK asks for it with
  ``stream_options.include_usage``); a tool call when the prompt says ``SCENARIO:tool``.
- ``POST /v1/messages`` — Anthropic Messages (https://docs.anthropic.com/en/api/messages): JSON answer, or the
  ``message_start`` … ``message_stop`` event stream when ``stream`` is set; a ``tool_use`` block for
  ``SCENARIO:tool``.

- ``POST /v1beta/models/{model}:generateContent`` and ``:streamGenerateContent?alt=sse`` — Gemini API
  (https://ai.google.dev/api/generate-content): ``usageMetadata`` with ``promptTokenCount`` INCLUDING
  ``cachedContentTokenCount``; a ``functionCall`` part for ``SCENARIO:tool``.

``SCENARIO:error`` anywhere in the request gives HTTP 500 with the provider's error body. Usage is fixed
(:data:`OPENAI_USAGE`, :data:`ANTHROPIC_USAGE`) so each call's truth is known; ``calls`` records every request.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from tests.fakes.loopback import LoopbackServer, ThreadedServer

__all__ = [
    "FakeLLMProvider",
    "OPENAI_USAGE",
    "ANTHROPIC_USAGE",
    "GEMINI_USAGE",
    "OPENAI_MODEL",
    "ANTHROPIC_MODEL",
    "GEMINI_MODEL",
    "SCENARIOS",
]

#: OpenAI's usage object: ``prompt_tokens`` INCLUDES the 1000 cached ones; reasoning is part of the completion.
OPENAI_USAGE = {
    "prompt_tokens": 1200,
    "completion_tokens": 300,
    "total_tokens": 1500,
    "prompt_tokens_details": {"cached_tokens": 1000, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 64, "audio_tokens": 0},
}
#: Anthropic's usage object: ``input_tokens`` EXCLUDES cache reads and writes.
ANTHROPIC_USAGE = {
    "input_tokens": 12,
    "output_tokens": 30,
    "cache_read_input_tokens": 1000,
    "cache_creation_input_tokens": 200,
    "cache_creation": {"ephemeral_5m_input_tokens": 200, "ephemeral_1h_input_tokens": 0},
    "service_tier": "standard",
}
#: Gemini's usage metadata: ``promptTokenCount`` INCLUDES the 1000 cached tokens.
GEMINI_USAGE = {
    "promptTokenCount": 1200,
    "candidatesTokenCount": 300,
    "totalTokenCount": 1500,
    "cachedContentTokenCount": 1000,
}
OPENAI_MODEL, ANTHROPIC_MODEL, GEMINI_MODEL = "gpt-4o-mini-2024-07-18", "claude-sonnet-4-5-20250929", "gemini-2.5-flash"
SCENARIOS = ("plain", "stream", "tool", "error")


def _sse(events: list[tuple[str | None, Any]]) -> bytes:
    out = []
    for name, data in events:
        payload = data if isinstance(data, str) else json.dumps(data)
        out.append((f"event: {name}\n" if name else "") + f"data: {payload}\n\n")
    return "".join(out).encode()


class FakeLLMProvider(LoopbackServer):
    """The stand-in. ``calls`` lists ``(path, scenario, stream)`` per request, in arrival order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, bool]] = []
        self._n = 0

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._openai)
        app.router.add_post("/v1/messages", self._anthropic)
        app.router.add_post("/v1beta/models/{model_action}", self._gemini)
        return app

    @classmethod
    def run_in_thread(cls) -> ThreadedServer:
        """The stand-in served from its own thread (for callers without an event loop)."""
        return ThreadedServer(cls(), "fake-llm-provider")

    async def _begin(self, request: web.Request) -> tuple[dict, str, int]:
        body = await request.json()
        text = json.dumps(body.get("messages", body.get("contents", [])))
        scenario = next((s for s in SCENARIOS if f"SCENARIO:{s}" in text), "plain")
        self._n += 1
        self.calls.append((request.path, scenario, bool(body.get("stream")) or "streamGenerate" in request.path))
        return body, scenario, self._n

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        body, scenario, n = await self._begin(request)
        if scenario == "error":
            return web.json_response({"error": {"type": "server_error", "message": "stand-in failure"}}, status=500)
        rid = f"chatcmpl-{n:04d}"
        msg: dict[str, Any] = {"role": "assistant", "content": "hello"}
        finish = "stop"
        if scenario == "tool":
            msg = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": f"call_{n}",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            }
            finish = "tool_calls"
        if body.get("stream"):
            head = {"id": rid, "object": "chat.completion.chunk", "created": 1, "model": OPENAI_MODEL}
            chunks = [
                {
                    **head,
                    "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hel"}, "finish_reason": None}],
                },
                {**head, "choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": finish}]},
                {**head, "choices": [], "usage": OPENAI_USAGE},
            ]
            data = _sse([(None, c) for c in chunks] + [(None, "[DONE]")])
            return web.Response(body=data, content_type="text/event-stream")
        return web.json_response(
            {
                "id": rid,
                "object": "chat.completion",
                "created": 1,
                "model": OPENAI_MODEL,
                "choices": [{"index": 0, "message": msg, "finish_reason": finish}],
                "usage": OPENAI_USAGE,
            }
        )

    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        body, scenario, n = await self._begin(request)
        if scenario == "error":
            return web.json_response(
                {"type": "error", "error": {"type": "api_error", "message": "stand-in failure"}}, status=500
            )
        rid = f"msg_{n:04d}"
        content: list[dict[str, Any]] = [{"type": "text", "text": "hello"}]
        stop = "end_turn"
        if scenario == "tool":
            content = [{"type": "tool_use", "id": f"toolu_{n}", "name": "get_weather", "input": {"city": "Paris"}}]
            stop = "tool_use"
        if body.get("stream"):
            events = [
                (
                    "message_start",
                    {
                        "type": "message_start",
                        "message": {
                            "id": rid,
                            "type": "message",
                            "role": "assistant",
                            "model": ANTHROPIC_MODEL,
                            "content": [],
                            "stop_reason": None,
                            "stop_sequence": None,
                            "usage": {**ANTHROPIC_USAGE, "output_tokens": 1},
                        },
                    },
                ),
                (
                    "content_block_start",
                    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                ),
                (
                    "content_block_delta",
                    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hello"}},
                ),
                ("content_block_stop", {"type": "content_block_stop", "index": 0}),
                (
                    "message_delta",
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": stop, "stop_sequence": None},
                        "usage": {"output_tokens": ANTHROPIC_USAGE["output_tokens"]},
                    },
                ),
                ("message_stop", {"type": "message_stop"}),
            ]
            return web.Response(body=_sse(events), content_type="text/event-stream")
        return web.json_response(
            {
                "id": rid,
                "type": "message",
                "role": "assistant",
                "model": ANTHROPIC_MODEL,
                "content": content,
                "stop_reason": stop,
                "stop_sequence": None,
                "usage": ANTHROPIC_USAGE,
            }
        )

    async def _gemini(self, request: web.Request) -> web.StreamResponse:
        body, scenario, n = await self._begin(request)
        model, _, action = request.match_info["model_action"].partition(":")
        if scenario == "error":
            return web.json_response(
                {"error": {"code": 500, "message": "stand-in failure", "status": "INTERNAL"}}, status=500
            )
        part: dict[str, Any] = {"text": "hello"}
        if scenario == "tool":
            part = {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}
        answer = {
            "candidates": [{"content": {"role": "model", "parts": [part]}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": GEMINI_USAGE,
            "modelVersion": model,
            "responseId": f"gemini-{n:04d}",
        }
        if action == "streamGenerateContent":
            first = {
                "candidates": [{"content": {"role": "model", "parts": [{"text": "hel"}]}, "index": 0}],
                "modelVersion": model,
                "responseId": f"gemini-{n:04d}",
            }
            return web.Response(
                body=_sse(
                    [
                        (None, first),
                        (
                            None,
                            {
                                **answer,
                                "candidates": [
                                    {
                                        "content": {"role": "model", "parts": [{"text": "lo"}]},
                                        "finishReason": "STOP",
                                        "index": 0,
                                    }
                                ],
                            },
                        ),
                    ]
                ),
                content_type="text/event-stream",
            )
        return web.json_response(answer)
