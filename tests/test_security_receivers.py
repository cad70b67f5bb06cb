"""Receivers closed by default, through the real wire: the config refuses open receivers, unauthenticated and forged
requests are refused on every path (OTLP/HTTP, OTLP/gRPC, the Langfuse-SDK path) and nothing is stored, the
tenant header is honoured only from trusted proxies, per-tenant rate limits answer 429 / RESOURCE_EXHAUSTED with
RetryInfo, and one tenant whose Langfuse is down cannot starve another (noisy neighbour)."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from relay.config_load import ConfigError, RelayConfig, load_config
from tests.fakes.langfuse import FakeLangfuse
from tests.support.inproc import running_relay, settle
from tests.support.otlp_helpers import spans_request

ROOT = Path(__file__).resolve().parent.parent
PROTOBUF = {"Content-Type": "application/x-protobuf"}
TRACE_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
TOKENS = {"acme": "acme-token-0123456789", "beta": "beta-token-0123456789"}
PROJECTS = {"pk-lf-acme": ("sk-lf-acme", "project-acme"), "pk-lf-beta": ("sk-lf-beta", "project-beta")}


def _tenants(lf_url: str | None = None, **extra) -> list[dict]:
    out = []
    for name, token in TOKENS.items():
        t: dict = {"name": name, "tokens": [token], **extra.get(name, {})}
        if lf_url:
            t["langfuse"] = {"base_url": lf_url, "public_key": f"pk-lf-{name}", "secret_key": f"sk-lf-{name}"}
        out.append(t)
    return out


def _body(n: int = 1, seed: int = 0) -> bytes:
    ids = [bytes([seed % 251 + 1, 0, 0, 0, 0, 0, i // 256, i % 256 + 1]) for i in range(n)]
    return spans_request(*ids, trace_id=bytes([seed % 251 + 1] * 16)).SerializeToString()


# ---------------------------------------------------------------- configuration


def test_bundled_config_listens_on_loopback_only():
    cfg = load_config(ROOT / "config.yaml", env={})
    assert cfg.receivers.otlp.protocols.http.endpoint == "localhost:4318"
    assert cfg.receivers.otlp.protocols.grpc.endpoint == "localhost:4317"
    assert cfg.service.admin.endpoint.startswith("127.0.0.1:")
    assert cfg.security_problems() == []


@pytest.mark.parametrize("endpoint", ["0.0.0.0:4318", ":4318", "[::]:4318", "10.1.2.3:4318", "relay.internal:4318"])
def test_open_receiver_without_tokens_is_a_config_error(tmp_path, endpoint):
    path = tmp_path / "relay.yaml"
    path.write_text(f"receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: '{endpoint}'\n")
    with pytest.raises(ConfigError) as e:
        load_config(path, env={})
    text = str(e.value)
    assert f"{path}:5: receivers.otlp.protocols.http.endpoint: " in text  # file, line and key
    assert "tenants[].tokens" in text and "allow_unauthenticated" in text
    # the fixes named in the message work
    RelayConfig.model_validate(
        {
            "receivers": {"otlp": {"protocols": {"http": {"endpoint": endpoint}}}},
            "auth": {"allow_unauthenticated": True},
        }
    )
    RelayConfig.model_validate(
        {
            "receivers": {"otlp": {"protocols": {"http": {"endpoint": endpoint}}}},
            "tenants": [{"name": "a", "tokens": ["t-0123456789"]}],
        }
    )


def test_relay_run_refuses_to_start_open_and_says_how_to_fix_it(tmp_path):
    path = tmp_path / "relay.yaml"
    path.write_text(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 0.0.0.0:0\n"
        f"storage:\n  directory: {tmp_path / 'data'}\n"
    )
    r = subprocess.run(
        [sys.executable, "-m", "relay", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert r.returncode != 0
    assert "receivers.otlp.protocols.grpc.endpoint" in r.stderr and "tenants[].tokens" in r.stderr
    assert not (tmp_path / "data").exists()  # refused before opening anything


def test_admin_beyond_loopback_needs_a_token():
    with pytest.raises(ValueError, match="service.admin.auth.token"):
        RelayConfig.model_validate({"service": {"admin": {"endpoint": "0.0.0.0:8888"}}})
    RelayConfig.model_validate({"service": {"admin": {"endpoint": "0.0.0.0:8888", "auth": {"token": "x" * 32}}}})


def _deploy_configs() -> dict[str, str]:
    """relay's configurations in deploy/: compose's file and the Kubernetes ConfigMap's ``relay.yaml``."""
    import yaml

    kube = next(
        d
        for d in yaml.safe_load_all((ROOT / "deploy" / "kubernetes" / "relay.yaml").read_text())
        if d and d.get("kind") == "ConfigMap" and "relay.yaml" in d.get("data", {})
    )
    return {
        "compose": (ROOT / "deploy" / "compose" / "relay.yaml").read_text(),
        "kubernetes": kube["data"]["relay.yaml"],
    }


@pytest.mark.parametrize("name", ["compose", "kubernetes"])
def test_deploy_configs_bind_beyond_loopback_only_with_tokens_from_secrets(tmp_path, name):
    """Every deploy/ configuration that listens on all interfaces takes its tenant tokens and admin token from
    secrets (files or variables), and without them relay refuses to start."""
    import re

    text = _deploy_configs()[name]
    assert "0.0.0.0:4318" in text and "RELAY_ADMIN_TOKEN" in text
    files = sorted(set(re.findall(r"\$\{file:([^}]+)\}", text)))
    assert any("token" in f for f in files), "tenant tokens come from secret files"
    with_secrets = text
    secrets = []
    for i, path in enumerate(files):
        secret = tmp_path / f"secret-{i}"
        secret.write_text(f"s3cret-{i}-0123456789")
        secrets.append(secret)
        with_secrets = with_secrets.replace("${file:" + path + "}", "${file:" + str(secret) + "}")
    cfg_path = tmp_path / "relay.yaml"
    cfg_path.write_text(with_secrets.replace("rules/*.yaml", str(tmp_path / "none-*.yaml")))
    cfg = load_config(cfg_path, env={"RELAY_ADMIN_TOKEN": "a" * 32, "LANGFUSE_BASE_URL": "https://lf.example"})
    assert all(t.tokens for t in cfg.tenants) and cfg.service.admin.auth.token is not None
    assert cfg.security_problems() == []
    for secret in secrets:  # the secrets are missing (empty files, unset variables)
        secret.write_text("")
    with pytest.raises(ConfigError, match="tokens|auth.token"):  # without the secrets relay refuses to start
        load_config(cfg_path, env={})


# ---------------------------------------------------------------- authentication on every path


async def test_unauthenticated_and_forged_requests_are_refused_on_every_path(tmp_path):
    async with FakeLangfuse(projects=PROJECTS) as lf:
        async with running_relay(tmp_path / "data", overrides={"tenants": _tenants(lf.base_url)}) as relay:
            base = f"http://127.0.0.1:{relay.http.port}"
            forged = [
                {},
                {"Authorization": "Bearer whatever"},
                {"Authorization": "Bearer "},
                {"Authorization": "Basic " + base64.b64encode(b"pk-lf-acme:whatever").decode()},
                {"Authorization": "Basic " + base64.b64encode(b"pk-lf-acme:sk-lf-beta").decode()},
                {"Authorization": "Token " + TOKENS["acme"]},
            ]
            async with aiohttp.ClientSession() as s:
                for path in ("/v1/traces", "/api/public/otel/v1/traces"):
                    for headers in forged:
                        async with s.post(base + path, data=_body(), headers={**PROTOBUF, **headers}) as r:
                            assert r.status == 401, (path, headers)
                            assert r.headers["WWW-Authenticate"].startswith("Bearer")
                            st = status_pb2.Status.FromString(await r.read())
                            assert "acme-token" not in st.message and "sk-lf" not in st.message
            async with grpc.aio.insecure_channel(f"127.0.0.1:{relay.grpc.port}") as ch:
                call = ch.unary_unary(TRACE_METHOD)
                for md in ((), (("authorization", "Bearer whatever"),)):
                    with pytest.raises(grpc.aio.AioRpcError) as e:
                        await call(_body(), metadata=md, timeout=5)
                    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
                await call(_body(1, 7), metadata=(("authorization", f"Bearer {TOKENS['beta']}"),), timeout=5)
            assert relay.telemetry.sample("otelcol_receiver_accepted_spans_total", {}) == 1
            # the genuine credentials work on each path
            async with aiohttp.ClientSession() as s:
                good = {"Authorization": f"Bearer {TOKENS['acme']}"}
                async with s.post(base + "/v1/traces", data=_body(1, 1), headers={**PROTOBUF, **good}) as r:
                    assert r.status == 200
                basic = {"Authorization": "Basic " + base64.b64encode(b"pk-lf-acme:sk-lf-acme").decode()}
                async with s.post(
                    base + "/api/public/otel/v1/traces", data=_body(1, 2), headers={**PROTOBUF, **basic}
                ) as r:
                    assert r.status == 200
            await settle(relay)
        assert len(lf.spans("pk-lf-acme")) == 2 and len(lf.spans("pk-lf-beta")) == 1


@pytest.mark.parametrize("proxies,status", [(["10.0.0.0/8"], 401), (["127.0.0.0/8"], 200)])
async def test_tenant_header_only_from_trusted_proxies(tmp_path, proxies, status):
    overrides = {
        "auth": {"tenant_header": "X-Relay-Tenant", "trust_tenant_header": True, "trusted_proxies": proxies},
        "tenants": [{"name": "default"}, {"name": "acme"}],
    }
    async with running_relay(tmp_path / "data", overrides=overrides) as relay:
        async with aiohttp.ClientSession() as s:
            async with s.post(
                f"http://127.0.0.1:{relay.http.port}/v1/traces",
                data=_body(),
                headers={**PROTOBUF, "X-Relay-Tenant": "acme"},
            ) as r:
                assert r.status == status
        async with grpc.aio.insecure_channel(f"127.0.0.1:{relay.grpc.port}") as ch:
            call = ch.unary_unary(TRACE_METHOD)
            if status == 200:
                await call(_body(1, 3), metadata=(("x-relay-tenant", "acme"),), timeout=5)
            else:
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await call(_body(1, 3), metadata=(("x-relay-tenant", "acme"),), timeout=5)
                assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        accepted = relay.telemetry.sample("otelcol_receiver_accepted_spans_total", {"tenant": "acme"})
        assert accepted == (2 if status == 200 else 0)


# ---------------------------------------------------------------- fair tenants


async def test_rate_limit_answers_429_and_resource_exhausted_with_retry_info(tmp_path):
    overrides = {"tenants": _tenants(None, acme={"rate_limit": {"spans_per_second": 5, "burst": 10}})}
    async with running_relay(tmp_path / "data", overrides=overrides) as relay:
        base = f"http://127.0.0.1:{relay.http.port}/v1/traces"
        acme = {**PROTOBUF, "Authorization": f"Bearer {TOKENS['acme']}"}
        beta = {**PROTOBUF, "Authorization": f"Bearer {TOKENS['beta']}"}
        async with aiohttp.ClientSession() as s:
            async with s.post(base, data=_body(10, 1), headers=acme) as r:
                assert r.status == 200
            async with s.post(base, data=_body(10, 2), headers=acme) as r:
                assert r.status == 429
                assert int(r.headers["Retry-After"]) >= 1
                st = status_pb2.Status.FromString(await r.read())
                info = error_details_pb2.RetryInfo()
                assert st.details[0].Unpack(info) and info.retry_delay.seconds >= 1
            for i in range(3):  # the other tenant is not limited
                async with s.post(base, data=_body(10, 10 + i), headers=beta) as r:
                    assert r.status == 200
        async with grpc.aio.insecure_channel(f"127.0.0.1:{relay.grpc.port}") as ch:
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await ch.unary_unary(TRACE_METHOD)(
                    _body(10, 3), metadata=(("authorization", f"Bearer {TOKENS['acme']}"),), timeout=5
                )
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            details = dict(e.value.trailing_metadata())["grpc-status-details-bin"]
            info = error_details_pb2.RetryInfo()
            assert status_pb2.Status.FromString(details).details[0].Unpack(info)
            assert info.retry_delay.seconds + info.retry_delay.nanos > 0
        assert relay.telemetry.sample("otelcol_receiver_refused_spans_total", {"tenant": "acme"}) == 20
        assert relay.telemetry.sample("otelcol_receiver_accepted_spans_total", {"tenant": "beta"}) == 30


@pytest.mark.timeout(90)
async def test_noisy_neighbour_fills_only_its_own_share(tmp_path):
    """Tenant acme's Langfuse is down: its batches pile up until its share of the spool is full and it gets 503;
    tenant beta keeps getting 200 and its spans arrive."""
    async with FakeLangfuse(projects=PROJECTS) as lf:
        overrides = {"tenants": _tenants(lf.base_url), "storage": {"max_spool_size": "256KiB"}}
        lf.fail(503, times=None, project="pk-lf-acme")
        async with running_relay(tmp_path / "data", overrides=overrides) as relay:
            assert relay.spool.tenant_limits == {"acme": 128 * 1024, "beta": 128 * 1024}
            base = f"http://127.0.0.1:{relay.http.port}/v1/traces"
            acme = {**PROTOBUF, "Authorization": f"Bearer {TOKENS['acme']}"}
            beta = {**PROTOBUF, "Authorization": f"Bearer {TOKENS['beta']}"}
            statuses: list[int] = []
            beta_sent = 0
            async with aiohttp.ClientSession() as s:
                for i in range(400):
                    async with s.post(base, data=_body(50, i), headers=acme) as r:
                        statuses.append(r.status)
                        if r.status == 503:
                            assert "Retry-After" in r.headers
                            break
                    if i % 20 == 0:
                        await asyncio.sleep(0.3)  # let the pipeline move acme's data to its (stuck) export queue
                assert statuses[-1] == 503 and statuses.count(200) == len(statuses) - 1
                assert relay.spool.tenant_bytes["acme"] > 100 * 1024
                assert relay.telemetry.sample("relay_spool_tenant_bytes", {"tenant": "acme"}) > 100 * 1024
                assert relay.telemetry.sample("relay_spool_tenant_capacity_bytes", {"tenant": "beta"}) == 128 * 1024
                for i in range(5):
                    async with s.post(base, data=_body(20, 1000 + i), headers=beta) as r:
                        assert r.status == 200
                        beta_sent += 20
                async with s.post(base, data=_body(50, 999), headers=acme) as r:
                    assert r.status == 503  # still full: acme's Langfuse is still down
            await lf.wait_for_spans(beta_sent, timeout=20, project="pk-lf-beta")
        assert len(lf.spans("pk-lf-beta")) == beta_sent
        assert lf.spans("pk-lf-acme") == []


async def test_allow_unauthenticated_warns_at_start_and_in_readyz(tmp_path, caplog):
    """Explicitly opened: the receiver listens on all interfaces without tokens (the test only talks over loopback);
    relay logs a warning at start and /readyz carries it, for anonymous callers too."""
    overrides = {
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": "0.0.0.0:0"}}}},
        "auth": {"allow_unauthenticated": True},
    }
    with caplog.at_level("WARNING", logger="relay"):
        async with running_relay(tmp_path / "data", overrides=overrides) as relay:
            async with aiohttp.ClientSession() as s:
                async with s.get(f"http://127.0.0.1:{relay.admin_port}/readyz") as r:
                    body = await r.json()
                async with s.post(f"http://127.0.0.1:{relay.http.port}/v1/traces", data=_body(), headers=PROTOBUF) as r:
                    assert r.status == 200
    assert body["status"] == "ready"
    assert any("allow_unauthenticated" in w for w in body["warnings"])
    assert any("WITHOUT authentication" in rec.getMessage() for rec in caplog.records)
