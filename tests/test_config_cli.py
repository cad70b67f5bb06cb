"""Config loading (env/file expansion, embedded LANGFUSE_* defaults, precise errors) and the CLI commands."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import pytest

from relay.config import parse_duration, parse_size
from relay.config_load import ConfigError, load_config
from relay.spool import Spool, TraceCommit

ROOT = Path(__file__).resolve().parents[1]


def relay_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "relay", *args], capture_output=True, text=True, cwd=ROOT,
                          env={"PATH": "/usr/bin:/bin", **(env or {})}, timeout=60)


def test_bundled_config_is_valid_and_export_follows_the_environment():
    off = load_config(ROOT / "config.yaml", env={})
    assert not off.resolved_tenants()[0].langfuse.enabled
    on = load_config(ROOT / "config.yaml", env={
        "LANGFUSE_BASE_URL": "https://cloud.langfuse.com/", "LANGFUSE_PUBLIC_KEY": "pk-lf-1", "LANGFUSE_SECRET_KEY": "sk-lf-1"})
    lf = on.resolved_tenants()[0].langfuse
    assert lf.enabled and lf.base_url == "https://cloud.langfuse.com"
    assert "sk-lf-1" not in repr(on)  # secrets never printed


def test_embedded_defaults_read_langfuse_env_even_without_those_keys_in_the_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("storage: {directory: /tmp/x}\n")
    cfg = load_config(p, env={"LANGFUSE_BASE_URL": "http://lf", "LANGFUSE_PUBLIC_KEY": "pk", "LANGFUSE_SECRET_KEY": "sk"})
    assert cfg.resolved_tenants()[0].langfuse.enabled
    assert load_config(None, env={}).storage.directory == "./data"


def test_env_default_and_file_references(tmp_path):
    secret = tmp_path / "sk"
    secret.write_text("sk-lf-from-file\n")
    p = tmp_path / "c.yaml"
    p.write_text(
        "storage: {directory: '${env:DATA:-/var/lib/relay}'}\n"
        "tenants:\n  - name: platform\n    tokens: ['${env:TOKEN}', '${env:UNSET}']\n"
        "    langfuse: {base_url: 'http://lf', public_key: pk, secret_key: '${file:sk}'}\n")
    cfg = load_config(p, env={"TOKEN": "tok-123"})
    assert cfg.storage.directory == "/var/lib/relay"
    [t] = cfg.resolved_tenants()
    assert [x.get_secret_value() for x in t.tokens] == ["tok-123"]
    assert t.langfuse.secret_key.get_secret_value() == "sk-lf-from-file"


def test_errors_name_file_line_and_key(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("receivers:\n  otlp:\n    protocols:\n      http:\n        endpont: x\n"
                 "pipeline:\n  idle_timeout: soon\n")
    with pytest.raises(ConfigError) as e:
        load_config(p, env={})
    text = "\n".join(e.value.problems)
    assert f"{p}:5: receivers.otlp.protocols.http.endpont: unknown key" in text
    assert f"{p}:7: pipeline.idle_timeout" in text and "invalid duration 'soon'" in text
    p.write_text("tenants:\n  - name: a\n  - name: a\n")
    with pytest.raises(ConfigError) as e:
        load_config(p, env={})
    assert "tenant names must be unique; repeated: a" in e.value.problems[0]


def test_invalid_yaml_is_reported_with_its_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("storage:\n  directory: [unclosed\n")
    with pytest.raises(ConfigError) as e:
        load_config(p, env={})
    assert e.value.problems[0].startswith(f"{p}:") and "invalid YAML" in e.value.problems[0]


def test_durations_and_sizes():
    assert parse_duration("250ms") == 0.25 and parse_duration("5m") == 300 and parse_duration(2) == 2.0
    assert parse_size("64MiB") == 64 * 2**20 and parse_size("1GB") == 10**9 and parse_size(10) == 10
    for bad in ("fast", "-1s", True):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_relay_check_reports_ok_and_export_state():
    r = relay_cli("check", "--config", "config.yaml")
    assert r.returncode == 0, r.stderr
    assert "config.yaml: OK" in r.stdout and "Langfuse export off" in r.stdout


def test_relay_check_fails_with_exit_2_and_precise_problems(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("exporters:\n  langfuse:\n    base_url: cloud.langfuse.com\n")
    r = relay_cli("check", "--config", str(p))
    assert r.returncode == 2
    assert f"{p}:3: exporters.langfuse.base_url" in r.stderr and "http://" in r.stderr


def test_dead_letters_and_replay_commands(tmp_path):
    data = tmp_path / "data"
    spool = Spool.open(data)

    async def fill():
        await spool.commit_traces([TraceCommit("default", "t", b"payload", 3, ["o"], {}, [])])
        [b] = await spool.read_outbound("default", 10, 10_000)
        await spool.dead_letter([b], 400, "Invalid span id")

    asyncio.run(fill())
    spool.close()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"storage: {{directory: {data}}}\n")
    listed = relay_cli("dead-letters", "--config", str(cfg))
    assert "3 spans\tstatus 400\tInvalid span id" in listed.stdout
    r = relay_cli("replay", "--config", str(cfg))
    assert r.returncode == 0 and "requeued 1 dead-lettered batch " in r.stdout
    spool = Spool.open(data)
    try:
        assert [b.payload for b in asyncio.run(spool.read_outbound("default", 10, 10_000))] == [b"payload"]
    finally:
        spool.close()


def test_relay_check_prints_the_security_posture(tmp_path):
    r = relay_cli("check", "--config", "config.yaml")
    assert r.returncode == 0, r.stderr
    assert "OTLP/HTTP localhost:4318: loopback only, TLS off, auth off" in r.stdout
    assert "admin 127.0.0.1:8888: loopback only, TLS off, no token" in r.stdout
    assert re.search(r"redaction: \d{3} rule\(s\) \(catalogue on", r.stdout)
    p = tmp_path / "open.yaml"
    p.write_text("receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 0.0.0.0:4317\n"
                 "        tls: {cert_file: a.crt, key_file: a.key, client_ca_file: ca.pem}\n"
                 "tenants:\n  - name: acme\n    tokens: ['${env:TOKEN}']\n    rate_limit: {spans_per_second: 100}\n"
                 "pipeline:\n  redaction: {catalogue: false, patterns: ['ACME-\\d+']}\n")
    r = relay_cli("check", "--config", str(p), env={"TOKEN": "t0ken-t0ken-t0ken"})
    assert r.returncode == 0, r.stderr
    assert "OTLP/gRPC 0.0.0.0:4317: BEYOND LOOPBACK, TLS 1.2+, mTLS (client_ca_file), auth bearer tokens required" \
        in r.stdout
    assert "redaction: 1 rule(s) (catalogue OFF, 1 custom" in r.stdout
    assert "tenant acme: spool share 2147483648 bytes, 100 items/s" in r.stdout
    assert "t0ken" not in r.stdout
