"""The admin API can't be hijacked, through the wire: token required (except /healthz, /readyz and, by default,
/metrics), CSRF (text/plain body, foreign Origin) and DNS rebinding (foreign Host) refused, anonymous /readyz
without tenant names or upstream errors, and ``relay silence`` working with ``RELAY_ADMIN_TOKEN``."""

from __future__ import annotations

import argparse
import asyncio
import json

import aiohttp
import pytest

from relay.cli import silence as silence_cli
from tests.fakes.langfuse import FakeLangfuse
from tests.support.inproc import replay, running_relay, settle

TOKEN = "admin-token-5f1c0b7e9a3d4c2b"
SILENCE = {
    "matchers": [{"name": "alertname", "value": ".+", "isRegex": True, "isEqual": True}],
    "startsAt": "2026-01-01T00:00:00Z",
    "endsAt": "2027-01-01T00:00:00Z",
    "createdBy": "mallory",
    "comment": "year-long",
}


def _admin(**extra) -> dict:
    return {"service": {"admin": {"auth": {"token": TOKEN}, **extra}}}


async def _call(url: str, method: str = "GET", *, headers: dict | None = None, data=None) -> tuple[int, str]:
    async with aiohttp.ClientSession(skip_auto_headers=("Content-Type",)) as s:
        async with s.request(method, url, headers=headers or {}, data=data) as r:
            return r.status, await r.text()


AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def test_token_required_except_probes_and_metrics(tmp_path):
    async with running_relay(tmp_path / "data", overrides=_admin()) as relay:
        base = f"http://127.0.0.1:{relay.admin_port}"
        for path in ("/healthz", "/readyz", "/metrics"):
            assert (await _call(base + path))[0] == 200, path
        for path in ("/api/v1/alerts", "/api/v2/alerts/groups", "/api/v2/silences", "/api/v2/silence/x"):
            status, body = await _call(base + path)
            assert status == 401 and "token" in body, path
            status, _ = await _call(base + path, headers={"Authorization": "Bearer whatever"})
            assert status == 401
        assert (await _call(base + "/-/reload", "POST"))[0] == 401
        assert (
            await _call(
                base + "/api/v2/silences",
                "POST",
                data=json.dumps(SILENCE),
                headers={"Content-Type": "application/json"},
            )
        )[0] == 401
        assert (await _call(base + "/api/v2/silences", headers=AUTH))[0] == 200
        status, body = await _call(
            base + "/api/v2/silences",
            "POST",
            data=json.dumps(SILENCE),
            headers={**AUTH, "Content-Type": "application/json"},
        )
        assert status == 200 and json.loads(body)["silenceID"]


async def test_metrics_auth(tmp_path):
    async with running_relay(tmp_path / "data", overrides=_admin(metrics_auth=True)) as relay:
        base = f"http://127.0.0.1:{relay.admin_port}"
        assert (await _call(base + "/metrics"))[0] == 401
        assert (await _call(base + "/metrics", headers=AUTH))[0] == 200


async def test_csrf_and_dns_rebinding_refused(tmp_path):
    async with running_relay(tmp_path / "data", overrides=_admin(allowed_hosts=["relay.internal"])) as relay:
        base = f"http://127.0.0.1:{relay.admin_port}"
        post = base + "/api/v2/silences"
        # a CORS "simple request": text/plain body, no preflight — even with the token it is refused
        status, _ = await _call(post, "POST", data=json.dumps(SILENCE), headers={**AUTH, "Content-Type": "text/plain"})
        assert status == 415
        status, _ = await _call(
            post,
            "POST",
            data=json.dumps(SILENCE),
            headers={**AUTH, "Content-Type": "application/x-www-form-urlencoded"},
        )
        assert status == 415
        # a page on another origin (the browser adds Origin)
        status, _ = await _call(
            post,
            "POST",
            data=json.dumps(SILENCE),
            headers={**AUTH, "Content-Type": "application/json", "Origin": "https://evil.example"},
        )
        assert status == 403
        # DNS rebinding: evil.example resolves to 127.0.0.1, the browser sends its own name as Host
        for host in ("evil.example", "evil.example:8888", "relay.internal.evil.example"):
            status, _ = await _call(base + "/api/v2/silences", headers={**AUTH, "Host": host})
            assert status == 421, host
        for host in ("localhost:1234", "127.0.0.1", "[::1]:8888", "relay.internal:8888", "10.1.2.3:8888"):
            status, _ = await _call(base + "/api/v2/silences", headers={**AUTH, "Host": host})
            assert status == 200, host
        status, _ = await _call(
            post,
            "POST",
            data=json.dumps(SILENCE),
            headers={**AUTH, "Content-Type": "application/json", "Origin": "http://localhost:3000"},
        )
        assert status == 200
        # probes are served whatever the Host (Kubernetes sends the pod IP)
        assert (await _call(base + "/healthz", headers={"Host": "10.1.2.3:8888"}))[0] == 200
        assert len(relay.alerting.silences.list()) == 1


async def test_anonymous_readyz_hides_tenants_and_upstream_errors(tmp_path):
    async with FakeLangfuse() as lf:
        lf.fail(401, times=None)  # revoked keys: the exporter fails permanently with Langfuse's error text
        async with running_relay(tmp_path / "data", lf.base_url, overrides=_admin()) as relay:
            await replay(relay, "protobuf-text")
            await settle(relay)
            url = f"http://127.0.0.1:{relay.admin_port}/readyz"
            status, body = await _call(url)
            anon = json.loads(body)  # still ready: data is spooled while Langfuse refuses the keys
            assert status == 200
            assert anon == {"status": "ready", "components": [], "degraded": ["exporter"], "warnings": []}
            status, body = await _call(url, headers=AUTH)
            full = json.loads(body)
            assert status == 200 and any("tenant default" in p for p in full["upstreams_failing"])
            assert full["exporters"]


async def test_relay_silence_cli_uses_the_admin_token(tmp_path, monkeypatch, capsys):
    async with running_relay(tmp_path / "data", overrides=_admin()) as relay:
        url = f"http://127.0.0.1:{relay.admin_port}"
        p = argparse.ArgumentParser(prog="relay")
        silence_cli.add_subparsers(p.add_subparsers(dest="command", required=True))
        args = p.parse_args(["silence", "--url", url, "add", "BudgetWarning", "team=a", "--comment", "deploy"])
        monkeypatch.delenv("RELAY_ADMIN_TOKEN", raising=False)
        assert await asyncio.to_thread(silence_cli.run, args) == 1
        assert "401" in capsys.readouterr().err
        monkeypatch.setenv("RELAY_ADMIN_TOKEN", TOKEN)
        assert await asyncio.to_thread(silence_cli.run, args) == 0
        sid = capsys.readouterr().out.strip()
        args = p.parse_args(["silence", "--url", url, "expire", sid])
        assert await asyncio.to_thread(silence_cli.run, args) == 0


@pytest.mark.parametrize("endpoint", ["0.0.0.0:8888", "[::]:8888", "192.0.2.10:8888"])
def test_admin_beyond_loopback_without_token_refused(endpoint):
    from relay.config_load import RelayConfig

    with pytest.raises(ValueError, match="service.admin.auth.token"):
        RelayConfig.model_validate({"service": {"admin": {"endpoint": endpoint}}})
