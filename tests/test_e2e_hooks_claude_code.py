"""Budgets that stop spend, with the real Claude Code CLI (``claude -p``) against the Anthropic Messages stand-in
(``tests/fakes/anthropic.py``) and relay on loopback.

Claude Code exports its own telemetry to relay (OTLP/HTTP), so the spend that crosses the budget is the spend of
its own first call, as in production; then its hooks — the command form (``relay hook claude-code``) and the HTTP
form (``"type": "http"`` pointed at relay) — ask relay before the next prompt or tool call. Over budget: the prompt
is blocked and the stand-in sees no request; the tool does not run. Under budget: the call happens.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from pathlib import Path

import aiohttp
import pytest
import yaml

from tests.fakes.anthropic import AnthropicFake
from tests.support.claude_cli import claude_binary, claude_env
from tests.support.inproc import running_relay
from tests.support.relay_proc import ROOT, parse_metric

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

TOKEN = "tenant-token-e2e"
LIMIT_USD = 1.0
#: Usage the stand-in reports per call: 400k input tokens cost Claude Code's own estimate well over $1 on any
#: current Claude model, so one call crosses the budget.
USAGE = {
    "input_tokens": 400_000,
    "output_tokens": 2_000,
    "cache_read_input_tokens": 0,
    "cache_creation_input_tokens": 0,
}
#: A few cents per call.
CHEAP = {"input_tokens": 1_000, "output_tokens": 50, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}


@pytest.fixture(scope="module")
def claude() -> str:
    return claude_binary()


def relay_overrides(tmp_path: Path) -> dict:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        yaml.safe_dump(
            {
                "groups": [
                    {
                        "name": "budgets",
                        "rules": [
                            {
                                "alert": "UserDailyBudget",
                                "kind": "budget",
                                "matchers": ['user!=""'],
                                "group_by": ["user"],
                                "limit_usd": LIMIT_USD,
                                "window": {"calendar": "day", "timezone": "UTC"},
                                "enforce": "block",
                            },
                        ],
                    }
                ]
            }
        )
    )
    return {
        "rules": {"files": [str(rules)], "evaluation_interval": "200ms", "watch": False},
        "pipeline": {"idle_timeout": "1s", "root_grace": "500ms"},
        "tenants": [{"name": "e2e", "tokens": [TOKEN]}],
    }


def command_hooks(*events: str) -> dict:
    hook = {"type": "command", "command": f"{sys.executable} -m relay hook claude-code", "timeout": 10}
    return {"hooks": {e: [{"hooks": [hook]}] for e in events}}


def http_hooks(relay_url: str, *events: str) -> dict:
    hook = {
        "type": "http",
        "url": f"{relay_url}/hooks/claude-code",
        "timeout": 5,
        "headers": {
            "Authorization": "Bearer $RELAY_HOOK_TOKEN",
            "X-Relay-Resource-Attributes": "$RELAY_HOOK_RESOURCE_ATTRIBUTES",
        },
        "allowedEnvVars": ["RELAY_HOOK_TOKEN", "RELAY_HOOK_RESOURCE_ATTRIBUTES"],
    }
    return {"hooks": {e: [{"hooks": [hook]}] for e in events}}


class Run:
    """``claude -p`` runs of one user in a scratch workspace, exporting telemetry to relay."""

    def __init__(self, claude: str, tmp_path: Path, relay_url: str, anthropic_url: str, user: str):
        self.claude, self.relay_url, self.user = claude, relay_url, user
        self.home = tmp_path / f"home-{user}"
        self.work = tmp_path / f"work-{user}"
        self.home.mkdir(exist_ok=True)
        self.work.mkdir(exist_ok=True)
        self.env = claude_env(
            self.home,
            anthropic_url,
            PYTHONPATH=str(ROOT),
            CLAUDE_CODE_ENABLE_TELEMETRY="1",
            OTEL_LOGS_EXPORTER="otlp",
            OTEL_METRICS_EXPORTER="otlp",
            OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
            OTEL_EXPORTER_OTLP_ENDPOINT=relay_url,
            OTEL_EXPORTER_OTLP_HEADERS=f"Authorization=Bearer {TOKEN}",
            OTEL_LOGS_EXPORT_INTERVAL="500",
            OTEL_METRIC_EXPORT_INTERVAL="1000",
            OTEL_RESOURCE_ATTRIBUTES=f"enduser.id={user},team.id=platform",
            # Claude Code gives its hooks no OTEL_* variable: the hook's own (settings.json "env" in the README)
            RELAY_HOOK_URL=f"{relay_url}/hooks/claude-code",
            RELAY_HOOK_TOKEN=TOKEN,
            RELAY_HOOK_RESOURCE_ATTRIBUTES=f"enduser.id={user},team.id=platform",
        )

    async def __call__(self, prompt: str, settings: dict, *args: str, **env: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            self.claude,
            "-p",
            "--settings",
            json.dumps(settings),
            *args,
            prompt,
            cwd=str(self.work),
            env={**self.env, **env},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        return proc.returncode, out.decode(), err.decode()


async def blocked_for(relay_url: str, user: str | None, timeout: float = 30.0, session: str | None = None) -> str:
    """Wait until relay's ledger holds the user's spend (Claude Code exports its events after the call) and the hook
    endpoint blocks them (``user`` None: a caller known only by its ``session``); returns the reason."""
    body = {"session_id": session or str(uuid.uuid4()), "hook_event_name": "UserPromptSubmit", "prompt": "x"}
    headers = {"Authorization": f"Bearer {TOKEN}"}
    if user is not None:
        headers["X-Relay-Resource-Attributes"] = f"enduser.id={user}"
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            async with s.post(f"{relay_url}/hooks/claude-code", json=body, headers=headers) as r:
                out = await r.json()
            if out.get("decision") == "block":
                return out["reason"]
            await asyncio.sleep(0.2)
    raise AssertionError(f"relay never saw {user} over budget: last answer {out}")


async def test_over_budget_the_prompt_is_blocked_before_any_api_call(claude, tmp_path):
    async with (
        AnthropicFake(usage=USAGE) as api,
        running_relay(tmp_path / "data", overrides=relay_overrides(tmp_path)) as relay,
    ):
        relay_url = f"http://127.0.0.1:{relay.http.port}"
        jdoe = Run(claude, tmp_path, relay_url, api.base_url, "jdoe")
        settings = command_hooks("UserPromptSubmit", "PreToolUse")

        # under budget: the hook lets the prompt through and the model is called
        code, out, err = await jdoe("Say hello", settings)
        assert code == 0, err
        assert "Hello from the stand-in." in out
        assert len(api.requests) == 1

        reason = await blocked_for(relay_url, "jdoe")  # Claude Code's own telemetry put jdoe over budget
        assert "UserDailyBudget (user=jdoe)" in reason and "of $1.00" in reason

        def blocks() -> float:
            return parse_metric(
                relay.telemetry.render().decode(),
                "relay_hook_decisions_total",
                event="UserPromptSubmit",
                decision="block",
            )

        before = blocks()

        # over budget, command hook: blocked, the user sees why, no API call
        code, out, err = await jdoe("Say hello again", settings)
        assert len(api.requests) == 1, f"the blocked prompt reached the model: {code} {out} {err}"
        assert "UserDailyBudget (user=jdoe)" in out + err and "resets" in out + err

        # over budget, HTTP hook pointed at relay: blocked the same way
        code, out, err = await jdoe("And once more", http_hooks(relay_url, "UserPromptSubmit"))
        assert len(api.requests) == 1, "the blocked prompt reached the model (HTTP hook)"
        assert "UserDailyBudget (user=jdoe)" in out + err

        # another user, under budget, HTTP hook: the call happens
        alice = Run(claude, tmp_path, relay_url, api.base_url, "alice")
        code, out, err = await alice("Say hello", http_hooks(relay_url, "UserPromptSubmit"))
        assert code == 0 and "Hello from the stand-in." in out, err
        assert len(api.requests) == 2

        assert blocks() == before + 2  # one per blocked run: each asked relay once

        # a hook that says nothing of who it is: relay knows the session from its telemetry once it has some
        gina = Run(claude, tmp_path, relay_url, api.base_url, "gina")
        del gina.env["RELAY_HOOK_RESOURCE_ATTRIBUTES"]
        session = str(uuid.uuid4())
        code, out, err = await gina("Say hello", settings, "--session-id", session)
        assert code == 0 and "Hello from the stand-in." in out, err
        seen = len(api.requests)
        assert "UserDailyBudget (user=gina)" in await blocked_for(relay_url, None, session=session)
        code, out, err = await gina("Say hello again", settings, "--resume", session)
        assert len(api.requests) == seen, f"the blocked prompt reached the model: {code} {out} {err}"
        assert "UserDailyBudget (user=gina)" in out + err


def tool_script(marker: Path):
    """First answer: run ``touch <marker>`` with Bash; after the tool result: a text answer."""

    def script(body: dict) -> list[dict]:
        last = body["messages"][-1]
        content = last.get("content")
        if isinstance(content, list) and any(c.get("type") == "tool_result" for c in content):
            return [{"type": "text", "text": "Done."}]
        if not body.get("tools"):
            return [{"type": "text", "text": "Title"}]
        return [
            {
                "type": "tool_use",
                "id": f"toolu_{uuid.uuid4().hex[:20]}",
                "name": "Bash",
                "input": {"command": f"touch {marker}", "description": "Create the marker file"},
            }
        ]

    return script


def tool_results(requests: list[dict]) -> list[str]:
    out = []
    for body in requests:
        for msg in body["messages"]:
            if isinstance(msg.get("content"), list):
                for c in msg["content"]:
                    if c.get("type") == "tool_result":
                        inner = c.get("content")
                        out.append(inner if isinstance(inner, str) else json.dumps(inner))
    return out


async def test_over_budget_the_tool_does_not_run_and_relay_down_fails_open(claude, tmp_path):
    async with (
        AnthropicFake(usage=CHEAP) as api,
        running_relay(tmp_path / "data", overrides=relay_overrides(tmp_path)) as relay,
    ):
        relay_url = f"http://127.0.0.1:{relay.http.port}"
        jdoe = Run(claude, tmp_path, relay_url, api.base_url, "jdoe")
        only_tools = command_hooks("PreToolUse")

        # under budget (cheap calls: the run itself stays far below the limit): the tool runs
        first = tmp_path / "marker-1"
        api.script = tool_script(first)
        code, out, err = await jdoe("Create the marker", only_tools, "--allowedTools=Bash")
        assert code == 0, err
        assert first.exists(), f"the allowed tool did not run: {out} {err} {tool_results(api.requests)}"

        # an expensive answer puts jdoe over budget
        api.usage = USAGE
        api.script = lambda body: [{"type": "text", "text": "Hello from the stand-in."}]
        code, out, err = await jdoe("Say hello", only_tools)
        assert code == 0, err
        await blocked_for(relay_url, "jdoe")

        # over budget: PreToolUse denies, the command never runs, Claude is told why
        second = tmp_path / "marker-2"
        api.script = tool_script(second)
        seen = len(api.requests)
        code, out, err = await jdoe("Create the marker", only_tools, "--allowedTools=Bash")
        assert not second.exists(), "the tool ran although the budget is spent"
        assert any("UserDailyBudget (user=jdoe)" in r for r in tool_results(api.requests[seen:])), tool_results(
            api.requests[seen:]
        )

        # relay unreachable: the hook fails open (the prompt goes through), visibly, and is counted later
        api.script = lambda body: [{"type": "text", "text": "Hello from the stand-in."}]
        seen = len(api.requests)
        code, out, err = await jdoe(
            "Say hello", command_hooks("UserPromptSubmit"), RELAY_HOOK_URL="http://127.0.0.1:9/hooks/claude-code"
        )
        assert code == 0 and "Hello from the stand-in." in out, err
        assert len(api.requests) > seen
        failures = jdoe.home / ".local" / "state" / "relay" / "hook-failures"
        assert failures.stat().st_size == 1
        # relay reachable again: the next hook call reports the failure (and is blocked: jdoe is over budget)
        code, out, err = await jdoe("Say hello", command_hooks("UserPromptSubmit"))
        assert parse_metric(relay.telemetry.render().decode(), "relay_hook_fail_open_total", tenant="e2e") == 1
        assert not failures.exists()
