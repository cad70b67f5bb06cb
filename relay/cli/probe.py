"""``relay check --probe``: ask every configured upstream whether relay's settings work, before traffic does.

- **Langfuse**, per export-enabled tenant: ``GET {base_url}/api/public/health`` (no auth; is this a Langfuse
  server, which version), then ``GET {base_url}/api/public/projects`` with the project's keys as Basic auth (are
  the keys accepted; which project do they reach) — https://api.reference.langfuse.com (``health``,
  ``projects.get``). Over the exporter's outbound TLS (``exporters.langfuse.tls``), as the exporter connects.
- **Slack**, per bot-token integration: ``auth.test`` (is the token valid; which workspace and bot) and
  ``conversations.info`` for a channel ID (does it exist; is the bot a member) —
  https://docs.slack.dev/reference/methods/auth.test, https://docs.slack.dev/reference/methods/conversations.info.
  Incoming webhooks are not probed: the only way to test one is to post a message.
- **Jira**, per integration: ``JiraNotifier.check`` (auth, project, issue type, fields, transitions).

Each function returns ``(ok lines, problem lines)``; nothing is ever written upstream, and no secret is printed.
"""

from __future__ import annotations

import re
import ssl
from typing import Any

import aiohttp

from relay.cli.common import langfuse_session, tls_hint
from relay.config_load import RelayConfig
from relay.config_security import TLSClientConfig

__all__ = ["probe_all", "probe_langfuse", "probe_slack"]

_TIMEOUT = 10.0  # seconds


async def probe_langfuse(tenant: Any, tls: TLSClientConfig) -> tuple[list[str], list[str]]:
    """Probe one resolved tenant's Langfuse project (``tenant.langfuse`` with base URL and keys) over ``tls``
    (``exporters.langfuse.tls``)."""
    lf = tenant.langfuse
    where = f"tenant {tenant.name}: Langfuse"
    health_url = f"{lf.base_url}/api/public/health"
    projects_url = f"{lf.base_url}/api/public/projects"
    auth = {"Authorization": lf.authorization()}
    try:
        http = langfuse_session(tls, _TIMEOUT)
    except (OSError, ssl.SSLError) as e:
        return [], [f"{where}: cannot load exporters.langfuse.tls ({type(e).__name__}: {e})"]
    async with http:
        try:
            async with http.get(health_url, allow_redirects=False) as r:
                body = await _json(r)
                if r.status != 200:
                    return [], [
                        f"{where}: GET {health_url} answered HTTP {r.status}"
                        + (
                            " (not found: is base_url the Langfuse host, e.g. https://cloud.langfuse.com?)"
                            if r.status == 404
                            else ""
                        )
                    ]
                version = body.get("version") if isinstance(body, dict) else None
            async with http.get(projects_url, headers=auth, allow_redirects=False) as r:
                body = await _json(r)
                if r.status in (401, 403):
                    return [], [
                        f"{where}: the keys were refused (HTTP {r.status} from GET {projects_url}): check "
                        "the public and secret key (LANGFUSE_PUBLIC_KEY, LANGFUSE_SECRET_KEY) — they must "
                        "be a project's API keys from the same Langfuse region/host"
                    ]
                if r.status != 200:
                    return [], [f"{where}: GET {projects_url} answered HTTP {r.status}"]
        except (aiohttp.ClientError, TimeoutError) as e:
            return [], [f"{where}: cannot reach {lf.base_url} ({type(e).__name__}: {e}){tls_hint(e)}"]
    data = body.get("data") if isinstance(body, dict) else None
    if not data:
        return [], [f"{where}: the keys are valid but reach no project (organisation keys?); use a project's keys"]
    p = data[0]
    return [
        f"{where}: OK — project {p.get('name')!r} ({p.get('id')}) at {lf.base_url}"
        + (f", Langfuse {version}" if version else "")
    ], []


async def probe_slack(receiver: str, index: int, sc: Any) -> tuple[list[str], list[str]]:
    """Probe one Slack integration (``SlackConfig``) of ``receiver``."""
    where = f"receiver {receiver} slack/{index}"
    if sc.bot_token is None:
        return [f"{where}: incoming webhook, not probed (testing it would post a message)"], []
    from slack_sdk.errors import SlackApiError
    from slack_sdk.web.async_client import AsyncWebClient

    web = AsyncWebClient(token=sc.bot_token.get_secret_value(), base_url=sc.api_url, timeout=int(sc.timeout) or 10)
    try:
        try:
            who = await web.auth_test()
        except SlackApiError as e:
            return [], [f"{where}: auth.test failed: {e.response.get('error')} — check bot_token"]
        team, user = who.get("team"), who.get("user")
        channel = sc.channel or ""
        if not re.fullmatch(r"[CGD][A-Z0-9]{6,}", channel):
            return [
                f"{where}: OK — bot {user!r} in workspace {team!r}; channel {channel!r} is a name, so access is "
                "not checked (give the channel ID, e.g. C0123ABCD, to have it checked)"
            ], []
        try:
            info = await web.conversations_info(channel=channel)
        except SlackApiError as e:
            err = e.response.get("error")
            if err == "missing_scope":
                return [
                    f"{where}: OK — bot {user!r} in workspace {team!r}; channel access not checked (the token "
                    "lacks channels:read)"
                ], []
            return [], [f"{where}: channel {channel}: {err} — the bot cannot post there"]
        ch = info.get("channel") or {}
        if ch.get("is_member") is False:
            return [], [
                f"{where}: the bot is not a member of #{ch.get('name', channel)} ({channel}): invite it "
                "(/invite @bot) or add the chat:write.public scope"
            ]
        return [f"{where}: OK — bot {user!r} in workspace {team!r}, member of #{ch.get('name', channel)}"], []
    except Exception as e:
        return [], [f"{where}: cannot reach {sc.api_url} ({type(e).__name__}: {e})"]
    finally:
        session = getattr(web, "session", None)
        if session is not None:
            await session.close()


async def _probe_jira(receiver: str, index: int, jc: Any) -> tuple[list[str], list[str]]:
    from relay.notify.jira.notifier import JiraNotifier

    n = JiraNotifier(receiver, index, jc)
    try:
        problems = await n.check()
    finally:
        await n.close()
    where = f"receiver {receiver} jira/{index}"
    return ([f"{where}: OK ({jc.project})"] if not problems else []), [f"{where}: {p}" for p in problems]


async def probe_all(cfg: RelayConfig) -> tuple[list[str], list[str]]:
    """Every probe of ``cfg``: Langfuse per export-enabled tenant, then Slack and Jira per integration."""
    oks: list[str] = []
    problems: list[str] = []
    tls = cfg.exporters.langfuse.tls
    jobs = [probe_langfuse(t, tls) for t in cfg.resolved_tenants() if t.langfuse.enabled]
    for r in cfg.alerting.receivers:
        jobs += [probe_slack(r.name, i, sc) for i, sc in enumerate(r.slack_configs)]
        jobs += [_probe_jira(r.name, i, jc) for i, jc in enumerate(r.jira_configs)]
    for job in jobs:
        ok, bad = await job
        oks += ok
        problems += bad
    return oks, problems


async def _json(r: aiohttp.ClientResponse) -> Any:
    try:
        return await r.json(content_type=None)
    except ValueError:
        return None
