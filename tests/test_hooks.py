"""Budget enforcement over the wire: relay on loopback, spend sent as Claude Code's own events (OTLP/HTTP), and the
hook endpoint ``POST /hooks/claude-code`` asked as Claude Code's HTTP hook asks it (the hook input JSON as the body,
https://code.claude.com/docs/en/hooks); the command form ``relay hook claude-code`` run as a subprocess, its exit
codes and stdout/stderr checked as Claude Code reads them (2 blocks with stderr, 0 passes stdout's JSON, any other
code lets the call through)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp import web

from relay.hooks.claude_code import parse_resource_attributes
from tests.support.cc_traffic import CCTraffic
from tests.support.inproc import running_relay
from tests.support.relay_proc import ROOT, parse_metric

TOKEN = "tenant-token-acme"
RULES = {
    "groups": [
        {
            "name": "budgets",
            "rules": [
                {
                    "alert": "UserDailyBudget",
                    "kind": "budget",
                    "matchers": ['user!=""'],
                    "group_by": ["user"],
                    "limit_usd": 1.0,
                    "window": {"calendar": "day", "timezone": "UTC"},
                    "enforce": "block",
                },
                {
                    "alert": "TeamWarnBudget",
                    "kind": "budget",
                    "matchers": ['team.id!=""'],
                    "group_by": ["team.id"],
                    "limit_usd": 0.5,
                    "window": {"calendar": "month"},
                    "enforce": "warn",
                },
                {
                    "alert": "SessionHourBudget",
                    "kind": "budget",
                    "group_by": ["session"],
                    "limit_usd": 2.0,
                    "window": "1h",
                    "enforce": "block",
                },
                # matchers on what only a finished call has (model) cannot be decided before it: ignored by the hook
                {
                    "alert": "ProjectOpusBudget",
                    "kind": "budget",
                    "matchers": ['model=~"claude-opus.*"', 'project="web"'],
                    "limit_usd": 3.0,
                    "window": "7d",
                    "enforce": "block",
                },
                # not enforced: alerts only, never blocks
                {"alert": "AlertOnlyBudget", "kind": "budget", "limit_usd": 0.01, "window": "7d"},
            ],
        }
    ]
}


def overrides(tmp_path: Path) -> dict:
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(RULES))
    return {
        "rules": {"files": [str(rules)], "evaluation_interval": "200ms", "watch": False},
        "pipeline": {"idle_timeout": "30s", "root_grace": "30s"},
        "tenants": [{"name": "acme", "tokens": [TOKEN], "labels": {"project": "web"}}],
    }


def hook_input(event: str = "UserPromptSubmit", session: str | None = None, **extra) -> dict:
    """A hook input as Claude Code sends it (fields of a real 2.1 capture)."""
    body = {
        "session_id": session or str(uuid.uuid4()),
        "transcript_path": "/tmp/t.jsonl",
        "cwd": "/tmp",
        "prompt_id": str(uuid.uuid4()),
        "permission_mode": "default",
        "hook_event_name": event,
    }
    if event == "UserPromptSubmit":
        body["prompt"] = "Say hello"
    elif event == "PreToolUse":
        body.update(tool_name="Bash", tool_input={"command": "echo hi"}, tool_use_id="toolu_01")
    body.update(extra)
    return body


async def ask(
    relay,
    body,
    *,
    attributes: str | None = "enduser.id=jdoe,team.id=platform",
    token: str | None = TOKEN,
    headers: dict | None = None,
) -> tuple[int, dict]:
    h = dict(headers or {})
    if token:
        h["Authorization"] = f"Bearer {token}"
    if attributes is not None:
        h["X-Relay-Resource-Attributes"] = attributes
    async with aiohttp.ClientSession() as s:
        async with s.post(f"http://127.0.0.1:{relay.http.port}/hooks/claude-code", json=body, headers=h) as r:
            return r.status, await r.json()


async def spend(relay, traffic: CCTraffic, usd: float) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.post(
            f"http://127.0.0.1:{relay.http.port}/v1/logs",
            data=traffic.request(traffic.api_request(usd)),
            headers={"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {TOKEN}"},
        ) as r:
            assert r.status == 200, await r.text()


async def until(relay, body, predicate, timeout: float = 10.0, **kw) -> dict:
    """Ask until the answer satisfies ``predicate`` (the ledger hears of a call a fraction of a second after its ack)."""
    deadline = time.monotonic() + timeout
    while True:
        status, out = await ask(relay, body, **kw)
        assert status == 200, out
        if predicate(out) or time.monotonic() > deadline:
            return out
        await asyncio.sleep(0.05)


def metrics(relay) -> str:
    return relay.telemetry.render().decode()


def test_resource_attributes_are_parsed_like_the_sdks():
    assert parse_resource_attributes("enduser.id=jdoe, team.id=plat%2Cform,bad,=x,department=eng%20ops") == {
        "enduser.id": "jdoe",
        "team.id": "plat,form",
        "department": "eng ops",
    }
    assert parse_resource_attributes(None) == {} == parse_resource_attributes("")


@pytest.mark.timeout(60)
async def test_budgets_allow_warn_and_block_over_the_wire(tmp_path):
    async with running_relay(tmp_path / "data", overrides=overrides(tmp_path)) as relay:
        session = str(uuid.uuid4())
        status, out = await ask(relay, hook_input(session=session))
        assert (status, out) == (200, {})  # nothing spent: let through, no message

        jdoe = CCTraffic(session=session, resource={"enduser.id": "jdoe", "team.id": "platform"})
        await spend(relay, jdoe, 0.6)  # over the team's warn budget only
        out = await until(relay, hook_input(session=session), lambda o: o != {})
        assert set(out) == {"systemMessage"}, out  # a warning shown to the user; the prompt goes through
        assert "TeamWarnBudget (team.id=platform): $0.60 spent of $0.50" in out["systemMessage"]

        await spend(relay, jdoe, 0.5)  # jdoe: $1.10 today, over the user's block budget
        out = await until(relay, hook_input(session=session), lambda o: "decision" in o)
        assert out["decision"] == "block"
        reason = out["reason"]
        tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%d 00:00 UTC")
        assert f"UserDailyBudget (user=jdoe): $1.10 spent of $1.00 (day (UTC)); resets {tomorrow}" in reason
        assert "SessionHourBudget" not in reason and "AlertOnlyBudget" not in reason

        # the same budget stops a tool call: PreToolUse's own decision shape
        status, out = await ask(relay, hook_input("PreToolUse", session=session))
        spec = out["hookSpecificOutput"]
        assert spec["hookEventName"] == "PreToolUse" and spec["permissionDecision"] == "deny"
        assert "UserDailyBudget" in spec["permissionDecisionReason"]

        # events a budget cannot stop are never blocked (decision "block" on Stop means "keep going")
        status, out = await ask(relay, hook_input("Stop", session=session))
        assert set(out) == {"systemMessage"} and "UserDailyBudget" in out["systemMessage"]

        # another user of the same team: warned (team), not blocked (user budget is per user)
        status, out = await ask(relay, hook_input(), attributes="enduser.id=alice,team.id=platform")
        assert set(out) == {"systemMessage"} and "UserDailyBudget" not in out["systemMessage"]
        # no identity at all: only budgets that need none apply
        status, out = await ask(relay, hook_input(), attributes=None)
        assert out == {}

        text = metrics(relay)
        # the usage behind the decisions is on /metrics too (dashboards): $0.60 + $0.50, counted once
        assert parse_metric(text, "relay_usage_cost_usd_total", tenant="acme") == pytest.approx(1.1)
        assert parse_metric(text, "relay_usage_tokens_total", tenant="acme", type="output") > 0
        assert (
            parse_metric(text, "relay_hook_decisions_total", tenant="acme", event="UserPromptSubmit", decision="block")
            == 1
        )
        assert (
            parse_metric(text, "relay_hook_decisions_total", tenant="acme", event="UserPromptSubmit", decision="warn")
            >= 2
        )
        assert (
            parse_metric(text, "relay_hook_decisions_total", tenant="acme", event="PreToolUse", decision="block") == 1
        )
        assert parse_metric(text, "relay_hook_decisions_total", event="other", decision="warn") == 1


@pytest.mark.timeout(60)
async def test_session_and_rolling_budgets_name_when_they_reset(tmp_path):
    async with running_relay(tmp_path / "data", overrides=overrides(tmp_path)) as relay:
        session = str(uuid.uuid4())
        await spend(
            relay, CCTraffic(session=session, resource={"enduser.id": "u1"}), 2.5
        )  # one session, $2.50 in the last hour: over SessionHourBudget
        out = await until(relay, hook_input(session=session), lambda o: "decision" in o, attributes="enduser.id=bob")
        reason = out["reason"]
        assert f"SessionHourBudget (session={session}): $2.50 spent of $2.00 (last 1h)" in reason
        # the spend leaves the rolling hour within its 30 s bucket: the reset is ~1h from now
        at = datetime.strptime(reason.split("resets ")[1][:20], "%Y-%m-%d %H:%M UTC").replace(tzinfo=UTC)
        assert timedelta(minutes=58) < at - datetime.now(UTC) <= timedelta(hours=1, minutes=1)
        # a fresh session of the same user is not stopped by the session budget
        status, out = await ask(relay, hook_input(), attributes="enduser.id=bob")
        assert out == {}

        # tenant label (project=web) + a model matcher the hook cannot know: $3 in 7 days blocks every caller
        await spend(relay, CCTraffic(resource={"enduser.id": "carol"}), 1.0)
        out = await until(relay, hook_input(), lambda o: "decision" in o, attributes="enduser.id=dave")
        assert "ProjectOpusBudget (tenant=acme): $3.50 spent of $3.00 (last 7d)" in out["reason"]


@pytest.mark.timeout(60)
async def test_bad_requests_get_a_clear_4xx_and_failures_are_counted(tmp_path):
    async with running_relay(tmp_path / "data", overrides=overrides(tmp_path)) as relay:
        status, out = await ask(relay, hook_input(), token=None)
        assert status == 401 and "credentials" in out["error"]
        status, out = await ask(relay, hook_input(), token="wrong")
        assert status == 401
        status, out = await ask(relay, ["not", "an", "object"])
        assert status == 400 and "hook input" in out["error"]
        status, out = await ask(relay, {"session_id": "s"})
        assert status == 400 and "hook_event_name" in out["error"]
        status, out = await ask(relay, hook_input(session_id=7))
        assert status == 400 and "session_id" in out["error"]
        status, out = await ask(relay, hook_input(), headers={"X-Relay-Hook-Failures": "-3"})
        assert status == 400
        assert parse_metric(metrics(relay), "relay_hook_fail_open_total", tenant="acme") == 0
        status, out = await ask(relay, hook_input(), headers={"X-Relay-Hook-Failures": "3"})
        assert (status, out) == (200, {})
        assert parse_metric(metrics(relay), "relay_hook_fail_open_total", tenant="acme") == 3
        async with aiohttp.ClientSession() as s:  # not valid JSON at all
            async with s.post(
                f"http://127.0.0.1:{relay.http.port}/hooks/claude-code",
                data=b"{",
                headers={"Authorization": f"Bearer {TOKEN}"},
            ) as r:
                assert r.status == 400


# ---------------------------------------------------------------------------------------------- the command form


async def run_command(stdin: bytes, env: dict, *args: str, timeout: float = 20.0) -> tuple[int, str, str, float]:
    """``relay hook claude-code`` as Claude Code runs it: a subprocess with the hook input on stdin."""
    full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT), **env}
    t0 = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "relay",
        "hook",
        "claude-code",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=full,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    return proc.returncode, out.decode(), err.decode(), time.monotonic() - t0


def command_env(relay_url: str, home: Path, **extra: str) -> dict:
    """What Claude Code's environment has when it exports to relay: the OTLP endpoint and headers."""
    return {
        "HOME": str(home),
        "OTEL_EXPORTER_OTLP_ENDPOINT": relay_url,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_HEADERS": f"Authorization=Bearer%20{TOKEN}",
        "OTEL_RESOURCE_ATTRIBUTES": "enduser.id=jdoe,team.id=platform",
        **extra,
    }


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_command_exit_codes_block_allow_and_fail_open(tmp_path):
    home = tmp_path / "home"
    failures = home / ".local" / "state" / "relay" / "hook-failures"
    async with running_relay(tmp_path / "data", overrides=overrides(tmp_path)) as relay:
        url = f"http://127.0.0.1:{relay.http.port}"
        env = command_env(url, home)
        body = json.dumps(hook_input()).encode()

        code, out, err, _ = await run_command(body, env)
        assert (code, json.loads(out), err) == (0, {}, "")  # allowed: exit 0, the JSON decision on stdout

        jdoe = CCTraffic(resource={"enduser.id": "jdoe", "team.id": "platform"})
        await spend(relay, jdoe, 0.6)
        await until(relay, hook_input(), lambda o: o != {})
        code, out, err, _ = await run_command(body, env)
        assert code == 0 and "TeamWarnBudget" in json.loads(out)["systemMessage"] and err == ""

        await spend(relay, jdoe, 0.5)
        await until(relay, hook_input(), lambda o: "decision" in o)
        code, out, err, _ = await run_command(body, env)
        assert code == 2 and out == ""  # blocked: exit 2, the reason on stderr
        assert "UserDailyBudget (user=jdoe): $1.10 spent of $1.00" in err
        code, out, err, _ = await run_command(json.dumps(hook_input("PreToolUse")).encode(), env)
        assert code == 2 and "UserDailyBudget" in err

        # wrong token: relay answers 401 → fail open (exit 1: Claude Code lets the call through), counted
        bad = dict(env, OTEL_EXPORTER_OTLP_HEADERS="Authorization=Bearer nope")
        code, out, err, _ = await run_command(body, bad)
        assert code == 1 and out == "" and "failed open" in err and "401" in err
        assert failures.stat().st_size == 1

        # unreachable: a closed port
        code, out, err, _ = await run_command(body, dict(env, RELAY_HOOK_URL="http://127.0.0.1:9/hooks/claude-code"))
        assert code == 1 and "failed open" in err and "unreachable" in err
        assert failures.stat().st_size == 2

        # not JSON on stdin
        code, out, err, _ = await run_command(b"garbage", env)
        assert code == 1 and "not a JSON object" in err

        # slow: a server that answers after 5 s; the hook gives up after --timeout
        async def slow(_request):
            await asyncio.sleep(5)
            return web.json_response({})

        app = web.Application()
        app.router.add_post("/hooks/claude-code", slow)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        slow_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        try:
            code, out, err, took = await run_command(
                body, dict(env, OTEL_EXPORTER_OTLP_ENDPOINT=slow_url), "--timeout", "0.3"
            )
        finally:
            await runner.cleanup()
        assert code == 1 and "timed out" in err and took < 4
        assert failures.stat().st_size == 3

        # relay is back: the next call reports the 3 failures, relay counts them, the count starts again
        before = parse_metric(metrics(relay), "relay_hook_fail_open_total", tenant="acme")
        code, out, err, _ = await run_command(body, env)
        assert code == 2
        assert parse_metric(metrics(relay), "relay_hook_fail_open_total", tenant="acme") == before + 3
        assert not failures.exists()

        # gRPC exporters: no OTLP/HTTP endpoint to derive the hook URL from → says so, fails open
        code, out, err, _ = await run_command(body, dict(env, OTEL_EXPORTER_OTLP_PROTOCOL="grpc"))
        assert code == 1 and "RELAY_HOOK_URL" in err


def test_enforce_accepts_block_or_warn_only(tmp_path):
    from relay.alerting.rules.load import RulesError, RuleSet

    f = tmp_path / "r.yaml"
    rule = {"alert": "B", "kind": "budget", "limit_usd": 1, "window": "1d", "enforce": "stop"}
    f.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [rule]}]}))
    with pytest.raises(RulesError) as e:
        RuleSet.load([str(f)])
    assert "enforce" in str(e.value) and "block" in str(e.value)
    rule["enforce"] = "warn"
    f.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [rule]}]}))
    assert RuleSet.load([str(f)]).rules[0].model.enforce == "warn"


@pytest.mark.timeout(60)
async def test_a_caller_without_attributes_is_known_by_its_sessions_telemetry(tmp_path):
    async with running_relay(tmp_path / "data", overrides=overrides(tmp_path)) as relay:
        session = str(uuid.uuid4())
        status, out = await ask(relay, hook_input(session=session), attributes=None)
        assert out == {}  # nothing known of this session yet
        # the session's own telemetry says who it is (enduser.id erin, team platform): $1.20 today
        await spend(relay, CCTraffic(session=session, resource={"enduser.id": "erin", "team.id": "platform"}), 1.2)
        out = await until(relay, hook_input(session=session), lambda o: "decision" in o, attributes=None)
        assert "UserDailyBudget (user=erin): $1.20 spent of $1.00" in out["reason"]
        assert "TeamWarnBudget" not in out["reason"]  # a block names the blocking budgets only
        # another session of nobody known: let through; explicit attributes win over the session's telemetry
        status, out = await ask(relay, hook_input(), attributes=None)
        assert out == {}
        status, out = await ask(relay, hook_input(session=session), attributes="enduser.id=frank")
        assert out == {}


def test_session_identities_keep_the_most_recent_sessions():
    from relay.hooks.claude_code import SessionIdentities
    from relay.model import UsageRecord
    from relay.usage.store import LedgerChange

    ids = SessionIdentities(capacity=2)

    def seen(session: str, user: str) -> LedgerChange:
        return LedgerChange(
            None,
            UsageRecord(
                key=session + user,
                kind="llm",
                tenant="t",
                time_ns=1,
                user=user,
                session_id=session,
                labels={"team.id": "x"},
            ),
        )

    ids.observe([seen("s1", "a"), seen("s2", "b")])
    ids.observe([seen("s1", "a2"), seen("s3", "c")])  # s1 seen again (newest user wins), s2 is the oldest
    assert ids.get("t", "s1") == ("a2", {"team.id": "x"}) and ids.get("t", "s3") == ("c", {"team.id": "x"})
    assert ids.get("t", "s2") is None and ids.get("other", "s1") is None
