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
    return subprocess.run(
        [sys.executable, "-m", "relay", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        timeout=60,
    )


def test_bundled_config_is_valid_and_export_follows_the_environment():
    off = load_config(ROOT / "config.yaml", env={})
    assert not off.resolved_tenants()[0].langfuse.enabled
    on = load_config(
        ROOT / "config.yaml",
        env={
            "LANGFUSE_BASE_URL": "https://cloud.langfuse.com/",
            "LANGFUSE_PUBLIC_KEY": "pk-lf-1",
            "LANGFUSE_SECRET_KEY": "sk-lf-1",
        },
    )
    lf = on.resolved_tenants()[0].langfuse
    assert lf.enabled and lf.base_url == "https://cloud.langfuse.com"
    assert "sk-lf-1" not in repr(on)  # secrets never printed


def test_embedded_defaults_read_langfuse_env_even_without_those_keys_in_the_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("storage: {directory: /tmp/x}\n")
    cfg = load_config(
        p, env={"LANGFUSE_BASE_URL": "http://lf", "LANGFUSE_PUBLIC_KEY": "pk", "LANGFUSE_SECRET_KEY": "sk"}
    )
    assert cfg.resolved_tenants()[0].langfuse.enabled
    assert load_config(None, env={}).storage.directory == "./data"


def test_env_default_and_file_references(tmp_path):
    secret = tmp_path / "sk"
    secret.write_text("sk-lf-from-file\n")
    p = tmp_path / "c.yaml"
    p.write_text(
        "storage: {directory: '${env:DATA:-/var/lib/relay}'}\n"
        "tenants:\n  - name: platform\n    tokens: ['${env:TOKEN}', '${env:UNSET}']\n"
        "    langfuse: {base_url: 'http://lf', public_key: pk, secret_key: '${file:sk}'}\n"
    )
    cfg = load_config(p, env={"TOKEN": "tok-123"})
    assert cfg.storage.directory == "/var/lib/relay"
    [t] = cfg.resolved_tenants()
    assert [x.get_secret_value() for x in t.tokens] == ["tok-123"]
    assert t.langfuse.secret_key.get_secret_value() == "sk-lf-from-file"


def test_errors_name_file_line_and_key(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(
        "receivers:\n  otlp:\n    protocols:\n      http:\n        endpont: x\npipeline:\n  idle_timeout: soon\n"
    )
    with pytest.raises(ConfigError) as e:
        load_config(p, env={})
    text = "\n".join(e.value.problems)
    assert f"{p}:5: receivers.otlp.protocols.http.endpont: unknown key" in text
    assert f"{p}:7: pipeline.idle_timeout" in text and "invalid duration 'soon'" in text
    p.write_text("tenants:\n  - name: a\n  - name: a\n")
    with pytest.raises(ConfigError) as e:
        load_config(p, env={})
    assert e.value.problems[0] == f"{p}:3: tenants[1].name: tenant names must be unique; repeated: a"


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
    p.write_text(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 0.0.0.0:4317\n"
        "        tls: {cert_file: a.crt, key_file: a.key, client_ca_file: ca.pem}\n"
        "tenants:\n  - name: acme\n    tokens: ['${env:TOKEN}']\n    rate_limit: {spans_per_second: 100}\n"
        "pipeline:\n  redaction: {catalogue: false, patterns: ['ACME-\\d+']}\n"
    )
    r = relay_cli("check", "--config", str(p), env={"TOKEN": "t0ken-t0ken-t0ken"})
    assert r.returncode == 0, r.stderr
    assert (
        "OTLP/gRPC 0.0.0.0:4317: BEYOND LOOPBACK, TLS 1.2+, mTLS (client_ca_file), auth bearer tokens required"
        in r.stdout
    )
    assert "redaction: 1 rule(s) (catalogue OFF, 1 custom" in r.stdout
    assert "tenant acme: spool share 2147483648 bytes, 100 items/s" in r.stdout
    assert "t0ken" not in r.stdout


# ---------------------------------------------------------------------------------------------- issue 16: check
def check(cfg: Path, *extra: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "relay", "check", "--config", str(cfg), *extra],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **(env or {})},
    )


def test_check_refuses_duplicate_keys_with_both_lines(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("storage:\n  directory: /tmp/a\n  fsync: true\n  directory: /tmp/b\n")
    r = check(p)
    assert r.returncode == 2 and "OK" not in r.stdout
    assert f"{p}:4: storage.directory: repeated key (first at line 2)" in r.stderr


@pytest.mark.parametrize(
    "yaml_text, line, words",
    [
        (
            "receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: http://0.0.0.0:4318\n",
            5,
            "without a scheme",
        ),
        (
            "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 0.0.0.0:70000\n",
            5,
            "port from 0 to 65535",
        ),
        ("service:\n  admin:\n    endpoint: ':8o8o'\n", 3, "expected host:port"),
        (
            "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:4318\n",
            5,
            "port 4318 is already used by receivers.otlp.protocols.http.endpoint",
        ),
    ],
)
def test_check_catches_impossible_endpoints_that_run_would_die_on(tmp_path, yaml_text, line, words):
    p = tmp_path / "c.yaml"
    p.write_text(yaml_text)
    r = check(p)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"{p}:{line}:" in r.stderr and words in r.stderr


def test_check_reports_rule_file_problems_and_no_ok_line(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("rules:\n  files: [rules/*.yml, missing.yaml]\n")
    r = check(p)
    assert r.returncode == 2
    assert "OK" not in r.stdout
    assert "'" + str(tmp_path / "rules/*.yml") + "' matches no file" in r.stderr
    assert f"{tmp_path / 'missing.yaml'}: no such rule file" in r.stderr


def test_cross_reference_errors_point_at_their_line(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(
        "alerting:\n  receivers:\n    - name: hook\n      webhook_configs: [{url: 'http://127.0.0.1:9/'}]\n"
        "  route:\n    receiver: hook\n    routes:\n      - matchers: ['a=\"b\"']\n        receiver: nope\n"
        "reports:\n  schedules:\n    - name: weekly\n      period: weekly\n      cron: '0 9 * * 1'\n"
        "      receiver: gone\n"
    )
    r = check(p)
    assert r.returncode == 2
    assert f"{p}:9: alerting: route.routes[0].receiver: unknown receiver 'nope'" in r.stderr
    p.write_text(p.read_text().replace("receiver: nope", "receiver: hook"))
    r = check(p)
    assert f"{p}:15: reports.schedules[0].receiver (weekly): 'gone' is not defined" in r.stderr


SLACK_CONFIG = (
    "alerting:\n  route: {receiver: team}\n  receivers:\n    - name: team\n      slack_configs:\n"
    "        - bot_token: ${env:SLACK_BOT_TOKEN}\n          channel: C0ALERTS\n"
)


def test_an_unset_slack_token_is_named_and_commands_without_secrets_still_run(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(SLACK_CONFIG)
    r = check(p)
    assert r.returncode == 2
    assert f"{p}:6:" in r.stderr and "bot_token is ${env:SLACK_BOT_TOKEN}, which is unset" in r.stderr
    # the commands that never notify do not need the Slack token
    listed = relay_cli("dead-letters", "--config", str(p))
    assert listed.returncode == 0 and "no dead letters" in listed.stdout, listed.stderr
    assert relay_cli("replay", "--config", str(p)).returncode == 0
    rep = relay_cli("report", "daily", "--config", str(p))
    assert "invalid configuration" not in rep.stderr
    # a secret file that is not mounted here either
    p.write_text(SLACK_CONFIG.replace("${env:SLACK_BOT_TOKEN}", "${file:/run/secrets/slack}"))
    assert "cannot read ${file:/run/secrets/slack}" in check(p).stderr
    listed = relay_cli("dead-letters", "--config", str(p))
    assert listed.returncode == 0 and "no dead letters" in listed.stdout, listed.stderr


def test_two_of_three_langfuse_variables_name_the_missing_one(tmp_path):
    env = {"LANGFUSE_BASE_URL": "https://cloud.langfuse.com", "LANGFUSE_PUBLIC_KEY": "pk-lf-1"}
    r = check(ROOT / "config.yaml", env=env)
    assert r.returncode == 0
    assert "Langfuse export OFF: LANGFUSE_SECRET_KEY is not set" in r.stdout
    assert "exporters.langfuse.secret_key: ${env:LANGFUSE_SECRET_KEY} is unset" in r.stdout


@pytest.mark.parametrize("suffix", ["/api/public/otel", "/api/public/otel/v1/traces", "/api/public/otel/"])
def test_a_base_url_with_the_otlp_path_is_refused_with_the_fix(suffix):
    env = {
        "LANGFUSE_BASE_URL": "https://cloud.langfuse.com" + suffix,
        "LANGFUSE_PUBLIC_KEY": "pk",
        "LANGFUSE_SECRET_KEY": "sk",
    }
    r = check(ROOT / "config.yaml", env=env)
    assert r.returncode == 2
    assert "exporters.langfuse.base_url" in r.stderr
    assert "use 'https://cloud.langfuse.com'" in r.stderr and "appends /api/public/otel/v1/traces" in r.stderr


def test_storage_directory_is_relative_to_the_config_file(tmp_path):
    (tmp_path / "etc").mkdir()
    p = tmp_path / "etc" / "relay.yaml"
    p.write_text("storage: {directory: ./state}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = check(p, cwd=elsewhere)
    assert f"storage:   {tmp_path / 'etc' / 'state'} " in r.stdout
    assert load_config(p, env={}).storage.directory == str(tmp_path / "etc" / "state")
    p.write_text("service: {log: {level: info}}\n")  # unset: data/ next to the config file
    assert load_config(p, env={}).storage.directory == str(tmp_path / "etc" / "data")


def test_template_errors_are_in_plain_words(tmp_path):
    rules = tmp_path / "r.yaml"
    rules.write_text(
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        kind: budget\n        limit_usd: 1\n"
        "        window: 1d\n        group_by: [team.id]\n"
        "        thresholds: [{percent: 100, severity: warning}]\n"
        "        annotations: {summary: '{{ labels.user }} spent {{ values.spend | usd }}'}\n"
    )
    r = relay_cli("rules", "check", str(rules))
    assert r.returncode == 1
    assert "'dict object'" not in r.stderr
    assert "no label or value named 'user'" in r.stderr and "team.id" in r.stderr


def test_rules_check_into_head_ends_without_a_traceback(tmp_path):
    rules = tmp_path / "r.yaml"
    one = (
        "      - alert: A{i}\n        kind: budget\n        limit_usd: 1\n        window: 1d\n"
        "        thresholds: [{{percent: 100, severity: warning}}]\n"
    )
    rules.write_text("groups:\n  - name: g\n    rules:\n" + "".join(one.format(i=i) for i in range(3000)))
    r = subprocess.run(
        f"{sys.executable} -m relay rules check {rules} | head -1",
        shell=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert r.stdout.startswith(f"{rules}: OK")
    assert "Traceback" not in r.stderr and "BrokenPipeError" not in r.stderr


def test_probe_asks_langfuse_and_slack_whether_the_settings_work(tmp_path):
    from tests.fakes.langfuse import FakeLangfuse
    from tests.fakes.slack import FakeSlack

    with (
        FakeLangfuse.run_in_thread({"pk-lf-1": ("sk-lf-1", "proj-1", "Claude Code usage")}) as lf,
        FakeSlack.run_in_thread(channels={"C0ALERTS": "alerts", "C0OTHER": "other"}, not_member={"C0OTHER"}) as slack,
    ):
        p = tmp_path / "c.yaml"

        def write(secret: str, channel: str) -> None:
            p.write_text(
                f"exporters:\n  langfuse:\n    base_url: {lf.base_url}\n    public_key: pk-lf-1\n"
                f"    secret_key: {secret}\nalerting:\n  route: {{receiver: team}}\n  receivers:\n"
                f"    - name: team\n      slack_configs:\n        - bot_token: xoxb-test-token\n"
                f"          channel: {channel}\n          api_url: {slack.api_url}\n"
            )

        write("sk-lf-1", "C0ALERTS")
        r = check(p, "--probe")
        assert r.returncode == 0, r.stderr
        assert "tenant default: Langfuse: OK — project 'Claude Code usage' (proj-1)" in r.stdout
        assert "receiver team slack/0: OK — bot 'relay' in workspace 'Fake Workspace', member of #alerts" in r.stdout
        write("sk-lf-wrong", "C0OTHER")
        r = check(p, "--probe")
        assert r.returncode == 1
        assert "the keys were refused (HTTP 401 from GET " + lf.base_url + "/api/public/projects)" in r.stderr
        assert "the bot is not a member of #other" in r.stderr
        assert "sk-lf-wrong" not in r.stdout + r.stderr
        paths = [rq.path for rq in lf.requests]
        assert "/api/public/health" in paths and "/api/public/projects" in paths
