"""TLS and mTLS on the OTLP/HTTP and OTLP/gRPC receivers and the admin endpoint, with the OpenTelemetry SDK's own
exporters configured as users do (a CA file, a client certificate and key), and certificates rotated on disk
without a restart. Certificates are made per test with the ``cryptography`` package (tests/support/certs.py)."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl

import aiohttp
import pytest
from cryptography import x509

from tests.fakes.langfuse import FakeLangfuse
from tests.support.certs import CA
from tests.support.inproc import running_relay
from tests.support.otlp_helpers import sdk_telemetry

GRPC_ENV = (
    "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
    "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_CLIENT_KEY",
    "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
)


@pytest.fixture(autouse=True)
def _clean_otel_env(monkeypatch):
    for k in GRPC_ENV:
        monkeypatch.delenv(k, raising=False)
    # requests lets these override the exporter's certificate_file (set on its session): the CA file under test
    # must be the only trust anchor
    for k in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(k, raising=False)


def _tls(server, ca: CA | None = None, reload_interval: str = "0s") -> dict:
    cfg = {"cert_file": str(server.cert_file), "key_file": str(server.key_file), "reload_interval": reload_interval}
    if ca is not None:
        cfg["client_ca_file"] = str(ca.ca_file)
    return cfg


def _overrides(tls: dict, admin_tls: dict | None = None) -> dict:
    out: dict = {"receivers": {"otlp": {"protocols": {"http": {"tls": tls}, "grpc": {"tls": tls}}}}}
    if admin_tls:
        out["service"] = {"admin": {"tls": admin_tls}}
    return out


def http_export(port: int, ca_file, client=None) -> str:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    spans, _, _ = sdk_telemetry()
    exporter = OTLPSpanExporter(
        endpoint=f"https://localhost:{port}/v1/traces",
        certificate_file=str(ca_file),
        client_certificate_file=str(client.cert_file) if client else None,
        client_key_file=str(client.key_file) if client else None,
        timeout=2,
    )
    return exporter.export(spans).name


def grpc_export(port: int, ca_file, client=None) -> str:
    """The SDK's gRPC exporter configured through its standard variables (as Claude Code users do)."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    os.environ["OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE"] = str(ca_file)
    if client:
        os.environ["OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY"] = str(client.key_file)
        os.environ["OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE"] = str(client.cert_file)
    spans, _, _ = sdk_telemetry()
    # a local subchannel pool: gRPC would otherwise reuse an earlier exporter's TLS connection to the same address
    exporter = OTLPSpanExporter(
        endpoint=f"https://localhost:{port}",
        insecure=False,
        timeout=2,
        channel_options=(("grpc.use_local_subchannel_pool", 1),),
    )
    try:
        return exporter.export(spans).name
    finally:
        exporter.shutdown()
        for k in GRPC_ENV:  # the HTTP exporter reads the same variables
            os.environ.pop(k, None)


def served_serial(port: int, ca_file) -> int:
    """Serial number of the certificate a new TLS connection to ``port`` is served."""
    ctx = ssl.create_default_context(cafile=str(ca_file))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number


async def test_tls_with_sdk_exporters_and_a_ca_file(tmp_path):
    ca = CA(tmp_path / "pki")
    server = ca.issue("relay")
    async with running_relay(tmp_path / "data", overrides=_overrides(_tls(server), _tls(server))) as relay:
        assert await asyncio.to_thread(http_export, relay.http.port, ca.ca_file) == "SUCCESS"
        assert await asyncio.to_thread(grpc_export, relay.grpc.port, ca.ca_file) == "SUCCESS"
        # plaintext is not served on a TLS port
        async with aiohttp.ClientSession() as s:
            with pytest.raises(aiohttp.ClientError):
                async with s.post(
                    f"http://127.0.0.1:{relay.http.port}/v1/traces",
                    data=b"",
                    headers={"Content-Type": "application/x-protobuf"},
                ) as r:
                    await r.read()
            # the admin endpoint over TLS
            ctx = ssl.create_default_context(cafile=str(ca.ca_file))
            async with s.get(f"https://localhost:{relay.admin_port}/healthz", ssl=ctx) as r:
                assert r.status == 200
        # a client that does not trust the CA refuses the connection
        other = CA(tmp_path / "other", name="other CA")
        assert await asyncio.to_thread(http_export, relay.http.port, other.ca_file) == "FAILURE"
        assert relay.telemetry.sample("otelcol_receiver_accepted_spans_total", {}) == 4


async def test_mtls_requires_a_client_certificate_from_the_client_ca(tmp_path):
    ca = CA(tmp_path / "pki")
    clients = CA(tmp_path / "clients", name="client CA")
    server = ca.issue("relay")
    agent = clients.issue("agent-1", client=True)
    stranger = CA(tmp_path / "strangers", name="stranger CA").issue("mallory", client=True)
    async with running_relay(tmp_path / "data", overrides=_overrides(_tls(server, clients))) as relay:
        assert await asyncio.to_thread(http_export, relay.http.port, ca.ca_file, agent) == "SUCCESS"
        assert await asyncio.to_thread(grpc_export, relay.grpc.port, ca.ca_file, agent) == "SUCCESS"
        assert await asyncio.to_thread(http_export, relay.http.port, ca.ca_file) == "FAILURE"
        assert await asyncio.to_thread(http_export, relay.http.port, ca.ca_file, stranger) == "FAILURE"
        assert await asyncio.to_thread(grpc_export, relay.grpc.port, ca.ca_file) == "FAILURE"
        assert await asyncio.to_thread(grpc_export, relay.grpc.port, ca.ca_file, stranger) == "FAILURE"
        assert relay.telemetry.sample("otelcol_receiver_accepted_spans_total", {}) == 4


async def test_certificates_are_reloaded_without_a_restart(tmp_path):
    old_ca = CA(tmp_path / "old", name="old CA")
    new_ca = CA(tmp_path / "new", name="new CA")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    first = old_ca.issue("relay", cert_file=cert, key_file=key)
    tls = _tls(first, reload_interval="100ms")
    async with running_relay(tmp_path / "data", overrides=_overrides(tls)) as relay:
        assert await asyncio.to_thread(served_serial, relay.http.port, old_ca.ca_file) == first.serial
        assert await asyncio.to_thread(grpc_export, relay.grpc.port, new_ca.ca_file) == "FAILURE"
        second = new_ca.issue("relay", cert_file=cert, key_file=key)  # rotated on disk (e.g. by cert-manager)
        await asyncio.sleep(0.3)
        assert await asyncio.to_thread(served_serial, relay.http.port, new_ca.ca_file) == second.serial
        assert await asyncio.to_thread(http_export, relay.http.port, new_ca.ca_file) == "SUCCESS"
        assert await asyncio.to_thread(grpc_export, relay.grpc.port, new_ca.ca_file) == "SUCCESS"
        # a broken file keeps the current certificate
        cert.write_text("not a certificate")
        await asyncio.sleep(0.3)
        assert await asyncio.to_thread(served_serial, relay.http.port, new_ca.ca_file) == second.serial
        assert await asyncio.to_thread(grpc_export, relay.grpc.port, new_ca.ca_file) == "SUCCESS"


def private_ca_langfuse(tmp_path, *args, **kwargs) -> tuple[CA, FakeLangfuse]:
    """A CA of its own and a (not yet started) fake Langfuse serving HTTPS with a certificate it issued."""
    ca = CA(tmp_path / "pki", name="private CA")
    lf = FakeLangfuse(*args, **kwargs)
    lf.ssl_context = ca.server_context("langfuse")
    return ca, lf


@pytest.mark.parametrize("trusted", [True, False])
async def test_langfuse_exporter_with_a_private_ca(tmp_path, trusted):
    """A self-hosted Langfuse behind a certificate of a private CA: exported with ``exporters.langfuse.tls.ca_file``,
    refused (and kept queued) without it."""
    ca, lf = private_ca_langfuse(tmp_path)
    async with lf:
        overrides = {"exporters": {"langfuse": {"tls": {"ca_file": str(ca.ca_file)} if trusted else {}}}}
        async with running_relay(tmp_path / "data", lf.base_url, overrides=overrides) as relay:
            assert await asyncio.to_thread(plain_http_export, relay.http.port) == "SUCCESS"
            if trusted:
                await lf.wait_for_spans(2, timeout=10)
                for _ in range(100):  # the project lookup for Langfuse links uses the same TLS settings
                    if relay.links.session_url("default", "s1"):
                        break
                    await asyncio.sleep(0.05)
                assert relay.links.session_url("default", "s1")
            else:
                await asyncio.sleep(1.0)
                assert lf.spans() == [] and sum(relay.spool.outbound_spans.values()) == 2
                assert relay.links.session_url("default", "s1") is None


@pytest.mark.parametrize("trusted", [True, False])
async def test_langfuse_api_proxy_and_scores_behind_a_private_ca(tmp_path, trusted):
    """relay's Langfuse public API (on the OTLP/HTTP port) reaches a private-CA Langfuse with the exporter's TLS
    settings: proxied requests (``GET /api/public/projects``) and stored scores forwarded by the score sender. Without
    ``ca_file`` the proxy answers 502 and the score stays queued."""
    ca, lf = private_ca_langfuse(tmp_path)
    async with lf:
        overrides = {"exporters": {"langfuse": {"tls": {"ca_file": str(ca.ca_file)} if trusted else {}}}}
        async with running_relay(tmp_path / "data", lf.base_url, overrides=overrides) as relay:
            assert relay.scores is not None
            api = f"http://127.0.0.1:{relay.http.port}/api/public"
            auth = {"Authorization": aiohttp.encode_basic_auth("pk-lf-test", "sk-lf-test")}
            score = {"id": "s-tls", "name": "helpfulness", "value": 0.5, "traceId": "ab" * 16}
            async with aiohttp.ClientSession(headers=auth) as http:
                async with http.get(f"{api}/projects") as r:
                    status, body = r.status, await r.json()
                async with http.post(f"{api}/scores", json=score) as r:
                    assert r.status == 200, await r.text()
            if trusted:
                assert status == 200 and body["data"][0]["id"] == "project-test"
                for _ in range(200):
                    if any(s["id"] == "s-tls" for s in lf.scores()):
                        break
                    await asyncio.sleep(0.05)
                assert [s["value"] for s in lf.scores() if s["id"] == "s-tls"] == [0.5]
            else:
                assert status == 502 and body["error"] == "BadGateway"
                await asyncio.sleep(1.0)
                assert lf.scores() == [] and await relay.scores.sender.pending() == 1


@pytest.mark.parametrize("trusted", [True, False])
def test_relay_check_probe_behind_a_private_ca(tmp_path, capsys, trusted):
    """``relay check --probe`` asks a private-CA Langfuse as the exporter would: OK with
    ``exporters.langfuse.tls.ca_file``; without it a problem line that names the untrusted certificate and the key
    to set (exit 1)."""
    from relay.cli.main import main
    from tests.fakes.langfuse import ThreadedFakeLangfuse

    ca, lf = private_ca_langfuse(tmp_path, {"pk-lf-1": ("sk-lf-1", "proj-1", "Claude Code usage")})
    with ThreadedFakeLangfuse(lf):
        tls = f"    tls: {{ca_file: {ca.ca_file}}}\n" if trusted else ""
        cfg = tmp_path / "c.yaml"
        cfg.write_text(
            f"exporters:\n  langfuse:\n    base_url: {lf.base_url}\n    public_key: pk-lf-1\n"
            f"    secret_key: sk-lf-1\n{tls}"
        )
        code = main(["check", "--probe", "--config", str(cfg)])
        out = capsys.readouterr()
        paths = [r.path for r in lf.requests]
    if trusted:
        assert code == 0, out.err
        assert f"tenant default: Langfuse: OK — project 'Claude Code usage' (proj-1) at {lf.base_url}" in out.out
        assert paths == ["/api/public/health", "/api/public/projects"]
    else:
        assert code == 1
        assert f"tenant default: Langfuse: cannot reach {lf.base_url}" in out.err
        assert "the server's certificate is not trusted" in out.err and "exporters.langfuse.tls.ca_file" in out.err
        assert paths == []  # the handshake failed: nothing was asked


def plain_http_export(port: int) -> str:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    spans, _, _ = sdk_telemetry()
    return OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces", timeout=5).export(spans).name


def test_tls_config_keys_are_the_collectors():
    from relay.config_load import RelayConfig

    cfg = RelayConfig.model_validate(
        {
            "receivers": {
                "otlp": {
                    "protocols": {
                        "http": {
                            "tls": {
                                "cert_file": "a.crt",
                                "key_file": "a.key",
                                "client_ca_file": "ca.pem",
                                "min_version": "1.3",
                                "reload_interval": "5m",
                            }
                        }
                    }
                }
            },
            "exporters": {"langfuse": {"tls": {"ca_file": "ca.pem", "insecure_skip_verify": False}}},
        }
    )
    assert cfg.receivers.otlp.protocols.http.tls.reload_interval == 300.0
    with pytest.raises(ValueError):
        RelayConfig.model_validate(
            {
                "receivers": {
                    "otlp": {
                        "protocols": {
                            "http": {"tls": {"cert_file": "a.crt", "key_file": "a.key", "min_version": "1.0"}}
                        }
                    }
                }
            }
        )


def test_a_tls_13_minimum_on_grpc_is_refused_not_ignored():
    """gRPC's Python server cannot enforce a TLS 1.3 minimum: the config says so instead of accepting it."""
    from pydantic import ValidationError

    from relay.config_load import RelayConfig

    def cfg(protocol: str, version: str):
        tls = {"cert_file": "a.crt", "key_file": "a.key", "min_version": version}
        return RelayConfig.model_validate({"receivers": {"otlp": {"protocols": {protocol: {"tls": tls}}}}})

    with pytest.raises(ValidationError, match="cannot be enforced on gRPC"):
        cfg("grpc", "1.3")
    assert cfg("grpc", "1.2").receivers.otlp.protocols.grpc.tls.min_version == "1.2"
    assert cfg("http", "1.3").receivers.otlp.protocols.http.tls.min_version == "1.3"


@pytest.mark.parametrize("trusted", [True, False])
async def test_webhook_receiver_behind_a_private_ca(tmp_path, trusted):
    """Outbound notifiers take the same client keys: a webhook consumer with a private-CA certificate is reached
    with ``tls.ca_file`` and refused (a retryable notify error) without it."""
    from aiohttp import web

    from relay.notify.base import NotifyError
    from relay.notify.webhook.config import WebhookConfig
    from relay.notify.webhook.notifier import WebhookNotifier
    from tests.fakes.jira_support import Clock, make_alert, make_notification

    ca = CA(tmp_path / "pki", name="hooks CA")
    ctx = ca.server_context("hooks")
    received = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx).start()
    port = runner.addresses[0][1]
    tls = {"ca_file": str(ca.ca_file)} if trusted else {}
    notifier = WebhookNotifier("ops", 1, WebhookConfig(url=f"https://localhost:{port}/hook", tls=tls), clock=Clock())
    try:
        n = make_notification(make_alert(150.0))
        if trusted:
            assert await notifier.notify(n, {}) == {"delivered": 1}
            assert received and received[0]["receiver"] == "ops"
        else:
            with pytest.raises(NotifyError) as e:
                await notifier.notify(n, {})
            assert e.value.retryable and received == []
    finally:
        await notifier.close()
        await runner.cleanup()
